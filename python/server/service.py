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
import json
import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np
from facecore import fields
from facecore.engine import Engine, Face
from facecore.errors import LivenessMissing
from facecore.image import decode_image, face_crop
from facecore.library import FaceLibrary, NewFace, check_token
from facecore.liveness import THRESHOLDS as LIVENESS_THRESHOLDS
from facecore.score import similarity_to_score
from facecore.video import Video, analyse
from facecore_server import params as P
from facecore_server.errors import ApiError
from facecore_server.fetch import fetch_image

# The spec's quality thresholds: illumination >= min, blur <= max, completeness >= min.
# Occlusion (223113, 223121-223127) is never checked: no occlusion model (see /capabilities).
QUALITY_LIMITS = {"LOW": (20.0, 0.8, 0), "NORMAL": (40.0, 0.6, 0), "HIGH": (100.0, 0.2, 1)}
# The spec's liveness_control thresholds: a face scoring under them answers 223120.
LIVENESS_LIMITS = {"LOW": 0.05, "NORMAL": 0.3, "HIGH": 0.9}
LIVENESS_COUNTS = (1, 3, 8)  # images face/liveness takes
SESSION_SECONDS = 300  # an H5 session code is valid 5 minutes, and for one video
SESSION_DIGITS = 4
_SESSION_ID = re.compile(r"S[0-9a-f]{22}")


@dataclass
class Probe:
    """One face to use: detected in this request's image, or remembered under its token."""

    token: str
    embedding: np.ndarray
    attrs: dict[str, Any]  # the face as detect answers it, without face_token
    crop: bytes | None = None  # registration crop (only for images, only when asked)


def _r(x: float, digits: int = 8) -> float:
    return round(float(x), digits)


def face_fields(value: str | None, liveness: bool = False) -> set[str]:
    """Engine fields for a face_field string; unknown names are a 222017. "liveness" is computed
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
    if f.liveness is not None:
        out["liveness"] = {"livemapscore": _r(f.liveness)}
    if f.quality is not None:
        out["quality"] = {
            "blur": _r(f.quality["blur"]),
            "illumination": _r(f.quality["illumination"], 2),
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


def _no_liveness(token: str) -> ApiError:
    return ApiError(
        223119,
        f"face_token {token} was detected without liveness: send the image itself, or detect "
        "it with face_field=liveness first",
    )


def check_liveness(p: Probe, control: str) -> None:
    if control == "NONE":
        return
    live = p.attrs.get("liveness")
    if live is None:
        raise _no_liveness(p.token)
    if live["livemapscore"] < LIVENESS_LIMITS[control]:
        raise ApiError(
            223120,
            f"liveness score {live['livemapscore']:.3f} is under {LIVENESS_LIMITS[control]} "
            f"({control})",
        )


class FaceService:
    def __init__(
        self,
        engine: Engine,
        library: FaceLibrary,
        max_pixels: int,
        url_hosts: frozenset[str] = frozenset(),
        url_max_bytes: int = 10 * 1024 * 1024,
        url_timeout: float = 5.0,
    ) -> None:
        self.engine = engine
        self.library = library
        self.max_pixels = max_pixels
        self.has_liveness = engine.liveness is not None
        self.url_hosts = url_hosts
        self.url_max_bytes = url_max_bytes
        self.url_timeout = url_timeout
        self._sessions = threading.Lock()

    # ------------------------------------------------------------------ faces from input

    def probes(
        self,
        appid: str,
        body: dict[str, Any],
        wanted: tuple[str, ...] | set[str],
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
        faces = self.engine.detect(decoded, max_faces, {*wanted, *fields.STORED})
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

    def controlled(
        self, appid: str, body: dict[str, Any], max_faces: int = 1, crop: bool = False
    ) -> list[Probe]:
        """The faces of the request (largest first), after its quality and liveness controls."""
        quality = P.QUALITY_CONTROL.read(body)
        liveness = self.liveness_control(body)
        extra = ("liveness",) if liveness != "NONE" else ()
        probes = self.probes(appid, body, extra, max_faces, crop)
        for p in probes:
            check_quality(p, quality)
            check_liveness(p, liveness)
        return probes

    def probe(self, appid: str, body: dict[str, Any], crop: bool = False) -> Probe:
        """The largest face, after the request's quality and liveness controls."""
        return self.controlled(appid, body, 1, crop)[0]

    def liveness_control(self, body: dict[str, Any]) -> str:
        """The request's liveness_control; 223119 when it asks for liveness the server lacks."""
        control: str = P.LIVENESS_CONTROL.read(body)
        if control != "NONE" and not self.has_liveness:
            raise ApiError(
                223119,
                f"liveness_control={control} needs the liveness models, which are not installed "
                "on this server (use NONE, or install them: README, Liveness)",
                "liveness_control",
            )
        return control

    # ------------------------------------------------------------------ model-bound routes

    def detect(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        max_faces = P.MAX_FACE_NUM.read(body)
        wanted = face_fields(P.FACE_FIELD.read(body), self.has_liveness)
        probes = self.probes(appid, body, {*fields.ALWAYS, *wanted}, max_faces)
        return {"face_num": len(probes), "face_list": [detect_json(p, wanted) for p in probes]}

    def liveness(self, appid: str, items: list[dict[str, Any]]) -> dict[str, Any]:
        """Multi-image liveness: the largest face of each of 1, 3 or 8 images, each scored, and
        one score for the request: the median (the lower middle one for an even count), so that
        neither one replayed frame nor one bad frame decides it alone."""
        if not self.has_liveness:
            raise LivenessMissing()
        if len(items) not in LIVENESS_COUNTS:
            raise ApiError(222208, f"face/liveness takes 1, 3 or 8 images, got {len(items)}")
        faces = []
        for item in items:
            wanted = face_fields(P.FACE_FIELD.read(item), True) | {"liveness"}
            p = self.probes(appid, item, {*fields.ALWAYS, *wanted}, 1)[0]
            if "liveness" not in p.attrs:  # a token detected without liveness
                raise _no_liveness(p.token)
            faces.append(detect_json(p, wanted))
        scores = sorted(f["liveness"]["livemapscore"] for f in faces)
        return {
            "face_liveness": scores[(len(scores) - 1) // 2],
            "thresholds": dict(LIVENESS_THRESHOLDS),
            "face_list": faces,
        }

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
        probes = self.controlled(appid, body, P.MAX_FACE_NUM.read(body))
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

    def add(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(appid, body, P.ADD_ACTION, self.library.face_add)

    def update(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        return self._store(appid, body, P.UPDATE_ACTION, self.library.face_update)

    def _store(
        self, appid: str, body: dict[str, Any], action: P.Param, store: Callable[..., Any]
    ) -> dict[str, Any]:
        """add and update: the largest face stored by `store` (the library's face_add or
        face_update), or by _replace for action_type REPLACE."""
        replace = action.read(body) == "REPLACE"
        group, user = P.GROUP_ID.read(body), P.USER_ID.read(body)
        info = P.USER_INFO.read(body)
        p = self.probe(appid, body, crop=True)
        if replace:
            self._replace(appid, group, user, p, info)
        else:
            store(appid, group, user, _new_face(p), info)
        return {"face_token": p.token, "location": p.attrs["location"]}

    def _replace(self, appid: str, group: str, user: str, p: Probe, info: str | None) -> None:
        """The user's faces become this one; a user (or group) that does not exist yet is
        registered, in the same atomic step (two concurrent REPLACEs leave one of the faces)."""
        self.library.face_update(appid, group, user, _new_face(p), info, create=True)

    # ------------------------------------------------------------------ H5 video liveness

    def session_code(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        """A random code for the user to read aloud in the video, and its session (5 minutes,
        one video)."""
        if not self.has_liveness:
            raise LivenessMissing()
        session_id = "S" + secrets.token_hex(11)
        code = "".join(secrets.choice("0123456789") for _ in range(SESSION_DIGITS))
        record = {"appid": appid, "code": code, "expires": time.time() + SESSION_SECONDS}
        self.library.kv_put("h5session", session_id, json.dumps(record).encode())
        return {"session_id": session_id, "code": code}

    def _take_session(self, session_id: object, appid: str | None) -> dict[str, Any]:
        """The session's record, marked used: a session answers one video only. With `appid`
        (an authenticated caller), only that appid's sessions exist."""
        if session_id is None or session_id == "":
            raise ApiError(222001, "required parameter 'session_id' is missing", "session_id")
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            raise ApiError(222209, "session_id is not one this server issued")
        with self._sessions:
            raw = self.library.kv_get("h5session", session_id)
            record: dict[str, Any] | None = json.loads(raw) if raw else None
            if (
                record is None
                or record.get("used")
                or record["expires"] < time.time()
                or appid not in (None, record["appid"])
            ):
                raise ApiError(
                    222209,
                    f"session {session_id} does not exist, has expired ({SESSION_SECONDS // 60} "
                    "minutes) or was already used: ask for a new code",
                )
            record["used"] = True
            self.library.kv_put("h5session", session_id, json.dumps(record).encode())
        return record

    def video_liveness(
        self, session_id: object, video: bytes | None, appid: str | None = None
    ) -> dict[str, Any]:
        if not self.has_liveness:
            raise LivenessMissing()
        if not video:
            raise ApiError(
                222001, "required parameter 'video' (or video_base64) is missing", "video"
            )
        session = self._take_session(session_id, appid)
        # Checked before any frame is decoded, then streamed: the per-frame limit is the image
        # one (--max-pixels), capped at 1920x1080 for video (facecore.video).
        with Video(video, self.max_pixels) as clip:
            r = analyse(self.engine, clip)
        pics = []
        for p in r.pictures:
            # The frame's face again, now with its embedding; its liveness was scored above.
            found = self.engine.detect(p.image, 1, fields.ALWAYS)
            if not found:
                continue
            face = found[0]
            face.liveness = p.liveness
            assert face.embedding is not None
            self.library.token_put(session["appid"], face.token, face.embedding, face_attrs(face))
            ok, jpeg = cv2.imencode(".jpg", p.image, [cv2.IMWRITE_JPEG_QUALITY, 90])
            if ok:
                pic = base64.b64encode(jpeg.tobytes()).decode()
                pics.append({"face_id": face.token, "pic": pic})
        return {
            "score": _r(r.score),
            "thresholds": dict(LIVENESS_THRESHOLDS),
            # No offline speech recogniser ships in a registry package we can use honestly, so
            # the spoken digits are not recognised: identify stays empty (docs/liveness.md).
            "code": {"create": session["code"], "identify": ""},
            "pic_list": pics,
            "analysis": {
                "image_score": _r(r.image_score),
                "evidence": _r(r.evidence, 4),
                "blink": r.blink,
                "mouth": _r(r.mouth, 4),
                "parallax": _r(r.parallax, 4),
                "motion_degrees": _r(r.motion_degrees, 2),
                "frames_with_face": r.frames_with_face,
                "frames_sampled": r.sampled,
                "seconds": _r(r.duration, 2),
            },
        }

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
