"""The v3 operations in Baidu's shapes: parameters in, `result` out, errors as ApiError/FaceCoreError.

Synchronous and thread-safe; the app runs the model-bound ones (detect, match, identify, multi-search,
add, update) through its admission gate, the library-only ones on a plain worker thread.

Every face detected from an image is remembered under its face_token (embedding, location,
quality and whatever fields were computed), so the token works as image_type=FACE_TOKEN in every
route later. A detect on a token answers the fields stored with it; a field that was not computed
when the face was first seen is left out rather than guessed.
"""

from __future__ import annotations

import base64
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
from facecore.engine import UNSUPPORTED, Engine, Face
from facecore.image import decode_image, face_crop
from facecore.library import FaceLibrary, NewFace, check_token
from facecore.score import similarity_to_score
from facecore_server import params as P
from facecore_server.errors import ApiError
from facecore_server.fetch import fetch_image

# face_field values: what we compute, and Baidu's names we know but leave out (with the reason in
# /capabilities). Anything else is a 222017.
FIELDS = {
    "age": "age",
    "gender": "gender",
    "expression": "expression",
    "emotion": "emotion",
    "landmark": "landmark",
    "landmark72": "landmark",
    "eye_status": "eye_status",
    "quality": "quality",
    "feature": "embedding",
    "angle": "angle",
}
UNSUPPORTED_FIELDS = {
    "beauty": "beauty",
    "glasses": "glasses",
    "race": "race",
    "face_shape": "face_shape",
    "faceshape": "face_shape",
    "face_type": "face_type",
    "facetype": "face_type",
    "parsing": "parsing",
    "landmark150": "landmark150",
    "liveness": "liveness",
    "spoofing": "spoofing",
    "mask": "mask",
}
UNSUPPORTED_REASONS = {
    **UNSUPPORTED,
    "landmark150": "no 150-point layout is defined for our 468-point mesh; landmark72 is served",
    "liveness": "no liveness model is installed",
    "spoofing": "no liveness model is installed",
    "mask": "no mask classifier ships in a registry package under a usable licence",
}

# The spec's quality thresholds: illumination >= min, blur <= max, completeness >= min.
# Occlusion (223113, 223121-223127) is never checked: no occlusion model (see /capabilities).
QUALITY_LIMITS = {"LOW": (20.0, 0.8, 0), "NORMAL": (40.0, 0.6, 0), "HIGH": (100.0, 0.2, 1)}

ALWAYS = ("angle", "embedding", "quality")  # computed for every detected face
MATCH_FIELDS = ("embedding", "quality")  # faces that are searched, compared or stored


@dataclass
class Probe:
    """One face to use: detected in this request's image, or remembered under its token."""

    token: str
    embedding: np.ndarray
    attrs: dict[str, Any]  # the face as detect answers it, without face_token
    crop: bytes | None = None  # registration crop (only for images, only when asked)


def _r(x: float, digits: int = 8) -> float:
    return round(float(x), digits)


def face_fields(value: str | None) -> set[str]:
    """Engine fields for a face_field string; unknown names are a 222017."""
    out: set[str] = set()
    for name in (value or "").split(","):
        name = name.strip().lower()
        if not name or name in UNSUPPORTED_FIELDS:
            continue
        if name not in FIELDS:
            known = ", ".join(sorted({*FIELDS, *UNSUPPORTED_FIELDS}))
            raise P.FACE_FIELD.error(f"has unknown field {name[:32]!r}; known fields: {known}")
        out.add(FIELDS[name])
    return out


def face_attrs(f: Face) -> dict[str, Any]:
    """A detected face in detect's answer shape (without face_token): every computed field."""
    x1, y1, x2, y2 = (float(v) for v in f.box)
    (lx, ly), (rx, ry) = f.landmarks5[0], f.landmarks5[1]
    out: dict[str, Any] = {
        "location": {
            "left": _r(x1, 2),
            "top": _r(y1, 2),
            "width": _r(x2 - x1, 2),
            "height": _r(y2 - y1, 2),
            # clockwise angle of the eye line (image y points down): the box's rotation
            "rotation": round(math.degrees(math.atan2(ry - ly, rx - lx))),
        },
        "face_probability": _r(f.probability),
    }
    if f.pose is not None:
        yaw, pitch, roll = f.pose
        out["angle"] = {"yaw": _r(yaw), "pitch": _r(pitch), "roll": _r(roll)}
    if f.age is not None:
        out["age"] = _r(f.age)
    if f.expression is not None:
        out["expression"] = {"type": f.expression[0], "probability": _r(f.expression[1])}
    if f.gender is not None and f.gender_probability is not None:
        out["gender"] = {"type": f.gender, "probability": _r(f.gender_probability)}
    if f.emotion is not None:
        top = max(f.emotion, key=lambda k: f.emotion[k] if f.emotion else 0.0)
        out["emotion"] = {"type": top, "probability": _r(f.emotion[top])}
    if f.eye_status is not None:
        out["eye_status"] = {"left_eye": _r(f.eye_status[0]), "right_eye": _r(f.eye_status[1])}
    if f.landmark4 is not None and f.landmarks72 is not None:
        out["landmark"] = [{"x": _r(x, 2), "y": _r(y, 2)} for x, y in f.landmark4]
        out["landmark72"] = [{"x": _r(x, 2), "y": _r(y, 2)} for x, y in f.landmarks72]
    if f.quality is not None:
        out["quality"] = {
            "blur": _r(f.quality["blur"]),
            "illumination": _r(f.quality["illumination"], 2),
            "completeness": int(f.quality["completeness"]),
        }
    return out


_DETECT_KEYS = {
    "age": ("age",),
    "gender": ("gender",),
    "expression": ("expression",),
    "emotion": ("emotion",),
    "landmark": ("landmark", "landmark72"),
    "eye_status": ("eye_status",),
    "quality": ("quality",),
}


def detect_json(p: Probe, wanted: set[str]) -> dict[str, Any]:
    """detect's face entry: the defaults (token, location, probability, angle) plus `wanted`."""
    out: dict[str, Any] = {"face_token": p.token}
    for key in ("location", "face_probability", "angle"):
        if key in p.attrs:
            out[key] = p.attrs[key]
    for name in sorted(wanted):
        for key in _DETECT_KEYS.get(name, ()):
            if key in p.attrs:
                out[key] = p.attrs[key]
    if "embedding" in wanted:
        out["feature"] = base64.b64encode(p.embedding.astype("<f4").tobytes()).decode()
    return out


def check_quality(p: Probe, control: str) -> None:
    if control == "NONE":
        return
    min_light, max_blur, min_complete = QUALITY_LIMITS[control]
    q = p.attrs.get("quality")
    if q is None:  # cannot happen for faces FaceCore detected; a token always carries quality
        raise ApiError(223118, "the face has no quality measurement to check")
    if q["blur"] > max_blur:
        raise ApiError(223114, f"face blur {q['blur']:.3f} is over {max_blur} ({control})")
    if q["illumination"] < min_light:
        raise ApiError(
            223115, f"face illumination {q['illumination']:.0f} is under {min_light:g} ({control})"
        )
    if q["completeness"] < min_complete:
        raise ApiError(223116, f"the face is not wholly inside the image ({control})")


class FaceService:
    def __init__(
        self,
        engine: Engine,
        library: FaceLibrary,
        max_pixels: int,
        has_liveness: bool = False,
        url_hosts: frozenset[str] = frozenset(),
        url_max_bytes: int = 10 * 1024 * 1024,
        url_timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.library = library
        self.max_pixels = max_pixels
        self.has_liveness = has_liveness
        self.url_hosts = url_hosts
        self.url_max_bytes = url_max_bytes
        self.url_timeout = url_timeout

    # ------------------------------------------------------------------ faces from input

    def probes(
        self,
        appid: str,
        body: dict[str, Any],
        fields: tuple[str, ...] | set[str],
        max_faces: int = 1,
        crop: bool = False,
    ) -> list[Probe]:
        """The faces of the request's image (largest first), or the face its token names."""
        image_type = P.IMAGE_TYPE.read(body)
        image = P.IMAGE.read(body)
        P.FACE_TYPE.read(body)  # checked; every face type goes through the same models
        if image_type == "FACE_TOKEN":
            if len(image) > 64:  # an image sent as a token: not echoed into error_detail / log
                raise ApiError(222025, f"image is {len(image)} characters, not a face_token")
            token = check_token(image)
            emb, attrs = self.library.token_get(appid, token)
            return [Probe(token, emb, attrs)]
        if image_type == "URL":
            data = fetch_image(image, self.url_hosts, self.url_max_bytes, self.url_timeout)
        else:
            data = P.decode_base64(image)
        decoded = decode_image(data, self.max_pixels)
        faces = self.engine.detect(decoded, max_faces, {*fields, "embedding", "quality"})
        if not faces:
            raise ApiError(222202, "no face was found in the image")
        out = []
        for f in faces:
            assert f.embedding is not None
            attrs = face_attrs(f)
            self.library.token_put(appid, f.token, f.embedding, attrs)
            out.append(
                Probe(f.token, f.embedding, attrs, face_crop(decoded, f.box) if crop else None)
            )
        return out

    def probe(
        self,
        appid: str,
        body: dict[str, Any],
        fields: tuple[str, ...] = MATCH_FIELDS,
        crop: bool = False,
    ) -> Probe:
        """The largest face, after the request's quality and liveness controls."""
        quality = P.QUALITY_CONTROL.read(body)
        self.check_liveness_control(body)
        p = self.probes(appid, body, fields, 1, crop)[0]
        check_quality(p, quality)
        return p

    def check_liveness_control(self, body: dict[str, Any]) -> None:
        control = P.LIVENESS_CONTROL.read(body)
        if control != "NONE" and not self.has_liveness:
            raise ApiError(
                223119,
                f"liveness_control={control} needs the liveness model, which is not installed "
                "on this server (use NONE, or install it: see the README)",
                "liveness_control",
            )

    # ------------------------------------------------------------------ model-bound routes

    def detect(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        max_faces = P.MAX_FACE_NUM.read(body)
        wanted = face_fields(P.FACE_FIELD.read(body))
        probes = self.probes(appid, body, {*ALWAYS, *wanted}, max_faces)
        return {"face_num": len(probes), "face_list": [detect_json(p, wanted) for p in probes]}

    def match(self, appid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        a, b = (self.probe(appid, item) for item in items)
        score = similarity_to_score(float(np.dot(a.embedding, b.embedding)))
        return {
            "score": _r(float(score)),
            "face_list": [{"face_token": a.token}, {"face_token": b.token}],
        }

    def _search_args(self, body: dict[str, Any]) -> tuple[list[str], str | None, float, int]:
        groups = P.group_list(P.GROUP_ID_LIST.read(body))
        user = P.USER_ID_OPTIONAL.read(body)
        return groups, user, P.MATCH_THRESHOLD.read(body), P.MAX_USER_NUM.read(body)

    def identify(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        groups, user, threshold, top = self._search_args(body)
        p = self.probe(appid, body)
        matches = self.library.identify(appid, groups, p.embedding, user, threshold, top)
        return {"face_token": p.token, "user_list": [_user(m) for m in matches]}

    def multi_search(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        groups, user, threshold, top = self._search_args(body)
        max_faces = P.MAX_FACE_NUM.read(body)
        quality = P.QUALITY_CONTROL.read(body)
        self.check_liveness_control(body)
        probes = self.probes(appid, body, MATCH_FIELDS, max_faces)
        for p in probes:
            check_quality(p, quality)
        found = self.library.identify_many(
            appid, groups, np.stack([p.embedding for p in probes]), user, threshold, top
        )
        faces = [
            {
                "face_token": p.token,
                "location": p.attrs["location"],
                "user_list": [] if isinstance(r, Exception) else [_user(m) for m in r],
            }
            for p, r in zip(probes, found)
        ]
        if all(not f["user_list"] for f in faces):
            raise ApiError(222207, "no face in the image matches a user")
        return {"face_num": len(faces), "face_list": faces}

    def _stored_face(self, appid: str, body: dict[str, Any]) -> tuple[str, str, str | None, Probe]:
        group, user = P.GROUP_ID.read(body), P.USER_ID.read(body)
        info = P.USER_INFO.read(body)
        return group, user, info, self.probe(appid, body, crop=True)

    def add(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, user, info, p = self._stored_face(appid, body)
        self.library.face_add(appid, group, user, _new_face(p), info)
        return {"face_token": p.token, "location": p.attrs["location"]}

    def update(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, user, info, p = self._stored_face(appid, body)
        self.library.face_update(appid, group, user, _new_face(p), info)
        return {"face_token": p.token, "location": p.attrs["location"]}

    # ------------------------------------------------------------------ library routes

    def face_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        faces = self.library.face_list(appid, P.GROUP_ID.read(body), P.USER_ID.read(body))
        return {
            "face_list": [{"face_token": f.face_token, "ctime": _ctime(f.ctime)} for f in faces]
        }

    def face_delete(self, appid: str, body: dict[str, Any]) -> None:
        group, user = P.GROUP_ID.read(body), P.USER_ID.read(body)
        self.library.face_delete(appid, group, user, P.FACE_TOKEN.read(body))

    def user_copy(self, appid: str, body: dict[str, Any]) -> None:
        user = P.USER_ID.read(body)
        src, dst = P.SRC_GROUP_ID.read(body), P.DST_GROUP_ID.read(body)
        self.library.user_copy(appid, user, src, dst)

    def user_get(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, user = P.GROUP_ID_OR_ALL.read(body), P.USER_ID.read(body)
        users = self.library.user_get(appid, group, user)
        return {"user_list": [{"user_info": u.user_info, "group_id": u.group_id} for u in users]}

    def user_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, start, length = P.GROUP_ID.read(body), P.START.read(body), P.LENGTH.read(body)
        return {"user_id_list": self.library.user_list(appid, group, start, length)}

    def user_delete(self, appid: str, body: dict[str, Any]) -> None:
        group, user = P.GROUP_ID_OR_ALL.read(body), P.USER_ID.read(body)
        if group != "@ALL":
            self.library.user_delete(appid, group, user)
            return
        for u in self.library.user_get(appid, "@ALL", user):  # 223103 when in no group
            self.library.user_delete(appid, u.group_id, user)

    def group_add(self, appid: str, body: dict[str, Any]) -> None:
        self.library.group_add(appid, P.GROUP_ID.read(body))

    def group_delete(self, appid: str, body: dict[str, Any]) -> None:
        self.library.group_delete(appid, P.GROUP_ID.read(body))

    def group_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        start, length = P.START.read(body), P.LENGTH.read(body)
        return {"group_id_list": self.library.group_list(appid, start, length)}


def _user(m: Any) -> dict[str, Any]:
    return {
        "group_id": m.group_id,
        "user_id": m.user_id,
        "user_info": m.user_info,
        "score": _r(m.score),
    }


def _new_face(p: Probe) -> NewFace:
    loc = p.attrs["location"]
    box = (loc["left"], loc["top"], loc["left"] + loc["width"], loc["top"] + loc["height"])
    return NewFace(p.token, p.embedding, box, p.crop)


def _ctime(ts: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(ts))
