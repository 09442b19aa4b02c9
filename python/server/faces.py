"""A face in the v3 answers' shapes: face_field read into engine fields (facecore.pipeline.fields), a detected
face as detect answers it, a search match, a registered face's time.

Every face a request's image shows is remembered under its face_token in this shape (without the
token), so a detect on the token later answers the same keys.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from facecore.pipeline import fields
from facecore.pipeline.engine import Face
from facecore.store.library import Match, NewFace
from facecore_server import params as P


@dataclass
class Probe:
    """One face to use: detected in this request's image, or remembered under its token."""

    token: str
    embedding: np.ndarray
    attrs: dict[str, Any]  # the face as detect answers it, without face_token
    crop: bytes | None = None  # registration crop (only for images, only when asked)


def r(x: float, digits: int = 8) -> float:
    return round(float(x), digits)


def face_fields(value: str | None, liveness: bool = False) -> set[str]:
    """Engine fields for a face_field string; unknown names are BadFaceField. "liveness" is computed
    when the liveness models are installed (`liveness`), else left out like the unsupported."""
    out: set[str] = set()
    for name in (value or "").split(","):
        name = name.strip().lower()
        if not name:
            continue
        try:
            field = fields.engine_field(name, liveness)
        except KeyError:
            known = ", ".join(fields.known())
            raise P.FACE_FIELD.error(
                f"has unknown field {name[:32]!r}; known fields: {known}"
            ) from None
        if field is not None:
            out.add(field)
    return out


def face_attrs(f: Face) -> dict[str, Any]:
    """A detected face in detect's answer shape (without face_token): every computed field."""
    x1, y1, x2, y2 = (float(v) for v in f.box)
    (lx, ly), (rx, ry) = f.landmarks5[0], f.landmarks5[1]
    out: dict[str, Any] = {
        "location": {
            "left": r(x1, 2),
            "top": r(y1, 2),
            "width": r(x2 - x1, 2),
            "height": r(y2 - y1, 2),
            # clockwise angle of the eye line (image y points down): the box's rotation
            "rotation": round(math.degrees(math.atan2(ry - ly, rx - lx))),
        },
        "face_probability": r(f.probability),
    }
    if f.pose is not None:
        yaw, pitch, roll = f.pose
        out["angle"] = {"yaw": r(yaw), "pitch": r(pitch), "roll": r(roll)}
    if f.age is not None:
        out["age"] = r(f.age)
    if f.expression is not None:
        out["expression"] = {"type": f.expression[0], "probability": r(f.expression[1])}
    if f.gender is not None and f.gender_probability is not None:
        out["gender"] = {"type": f.gender, "probability": r(f.gender_probability)}
    if f.emotion is not None:
        top = max(f.emotion, key=lambda k: f.emotion[k] if f.emotion else 0.0)
        out["emotion"] = {"type": top, "probability": r(f.emotion[top])}
    if f.eye_status is not None:
        out["eye_status"] = {"left_eye": r(f.eye_status[0]), "right_eye": r(f.eye_status[1])}
    if f.landmark4 is not None and f.landmarks72 is not None:
        out["landmark"] = [{"x": r(x, 2), "y": r(y, 2)} for x, y in f.landmark4]
        out["landmark72"] = [{"x": r(x, 2), "y": r(y, 2)} for x, y in f.landmarks72]
    if f.liveness is not None:
        out["liveness"] = {"livemapscore": r(f.liveness)}
    if f.quality is not None:
        out["quality"] = {
            "blur": r(f.quality["blur"]),
            "illumination": r(f.quality["illumination"], 2),
            "completeness": int(f.quality["completeness"]),
        }
    return out


def detect_json(p: Probe, wanted: set[str]) -> dict[str, Any]:
    """detect's face entry: the keys every face has (face_token, location, probability, angle)
    plus those of the `wanted` engine fields that were computed."""
    out: dict[str, Any] = {"face_token": p.token}
    for key in fields.ALWAYS_KEYS[1:]:
        if key in p.attrs:
            out[key] = p.attrs[key]
    for name in sorted(wanted):
        for key in fields.FIELDS[name].keys:
            if key in p.attrs:
                out[key] = p.attrs[key]
    if "embedding" in wanted:  # the one field kept as an array, not in the answer's shape
        out["feature"] = base64.b64encode(p.embedding.astype("<f4").tobytes()).decode()
    return out


def user(m: Match) -> dict[str, Any]:
    """A search match, as identify and multi-search list it."""
    return {
        "group_id": m.group_id,
        "user_id": m.user_id,
        "user_info": m.user_info,
        "score": r(m.score),
    }


def new_face(p: Probe) -> NewFace:
    """The face to register, from its probe."""
    loc = p.attrs["location"]
    box = (loc["left"], loc["top"], loc["left"] + loc["width"], loc["top"] + loc["height"])
    return NewFace(p.token, p.embedding, box, p.crop)


def ctime(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
