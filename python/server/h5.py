"""H5 video liveness (the public cloud's faceliveness): a session code for the user to read aloud,
then a short video of them, scored for liveness.

A session lives 5 minutes and answers one video; sessions are kept in the library's key-value
space, so they survive a restart and every instance sharing a store sees them all (a session
taken on one instance is used up on every other). The video comes as a multipart
file (`video`), base64 (`video_base64`) in a form or a JSON object, with its `session_id`.
"""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
from typing import Any

import cv2
from facecore.errors import BadImage, FaceTokenNotFound, LivenessMissing, MissingParam
from facecore.pipeline import fields
from facecore.pipeline.engine import Engine
from facecore.pipeline.liveness import THRESHOLDS as LIVENESS_THRESHOLDS
from facecore.pipeline.video import Video, analyse
from facecore.store.library import FaceLibrary
from facecore_server.bodies import parse_body, read_form
from facecore_server.faces import face_attrs, r
from facecore_server.params import decode_base64, missing
from starlette.requests import Request

SESSION_SECONDS = 300  # an H5 session code is valid 5 minutes, and for one video
SESSION_DIGITS = 4
_SESSION_ID = re.compile(r"S[0-9a-f]{22}")


class H5:
    """Session codes and the videos that answer them. Thread-safe."""

    def __init__(self, engine: Engine, library: FaceLibrary, max_pixels: int) -> None:
        self.engine, self.library, self.max_pixels = engine, library, max_pixels
        self.has_liveness = engine.liveness is not None

    def session_code(self, appid: str) -> dict[str, Any]:
        """A random code for the user to read aloud in the video, and its session (5 minutes,
        one video)."""
        if not self.has_liveness:
            raise LivenessMissing()
        session_id = "S" + secrets.token_hex(11)
        code = "".join(secrets.choice("0123456789") for _ in range(SESSION_DIGITS))
        record = {"appid": appid, "code": code, "expires": time.time() + SESSION_SECONDS}
        self.library.kv_put("h5session", session_id, json.dumps(record).encode())
        return {"session_id": session_id, "code": code}

    def take_session(self, session_id: object, appid: str | None) -> dict[str, Any]:
        """The session's record, marked used: a session answers one video only. With `appid`
        (an authenticated caller), only that appid's sessions exist."""
        if session_id is None or session_id == "":
            raise missing("session_id")
        if not isinstance(session_id, str) or not _SESSION_ID.fullmatch(session_id):
            raise FaceTokenNotFound("session_id is not one this server issued")
        taken: dict[str, Any] = {}

        def take(raw: bytes | None) -> bytes:
            """The record marked used; FaceTokenNotFound (nothing written) if it cannot be."""
            record: dict[str, Any] | None = json.loads(raw) if raw else None
            if (
                record is None
                or record.get("used")
                or record["expires"] < time.time()
                or appid not in (None, record["appid"])
            ):
                raise FaceTokenNotFound(
                    f"session {session_id} does not exist, has expired ({SESSION_SECONDS // 60} "
                    "minutes) or was already used: ask for a new code",
                )
            record["used"] = True
            taken.update(record)
            return json.dumps(record).encode()

        # One step against every other taker, of this instance or another sharing the store.
        self.library.kv_update("h5session", session_id, take)
        return taken

    def verify(self, form: dict[str, Any] | None, raw: bytes, appid: str | None) -> dict[str, Any]:
        """The answer to a video request: `form` its fields, or None for a JSON body (`raw`). On
        a worker: a JSON body's parsing and the base64 decoding are work too, kept off the event
        loop (10 MB of either blocks every other request for tens of milliseconds)."""
        session_id, video = _video_fields(parse_body(raw) if form is None else form)
        return self.video_liveness(session_id, video, appid)

    def video_liveness(
        self, session_id: object, video: bytes | None, appid: str | None = None
    ) -> dict[str, Any]:
        if not self.has_liveness:
            raise LivenessMissing()
        if not video:
            raise MissingParam("required parameter 'video' (or video_base64) is missing", "video")
        session = self.take_session(session_id, appid)
        # Checked before any frame is decoded, then streamed: the per-frame limit is the image
        # one (--max-pixels), capped at 1920x1080 for video (facecore.pipeline.video).
        with Video(video, self.max_pixels) as clip:
            result = analyse(self.engine, clip)
        pics = []
        for p in result.pictures:
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
            "score": r(result.score),
            "thresholds": dict(LIVENESS_THRESHOLDS),
            # No offline speech recogniser ships in a registry package we can use honestly, so
            # the spoken digits are not recognised: identify stays empty (docs/liveness.md).
            "code": {"create": session["code"], "identify": ""},
            "pic_list": pics,
            "analysis": {
                "image_score": r(result.image_score),
                "evidence": r(result.evidence, 4),
                "blink": result.blink,
                "mouth": r(result.mouth, 4),
                "parallax": r(result.parallax, 4),
                "motion_degrees": r(result.motion_degrees, 2),
                "frames_with_face": result.frames_with_face,
                "frames_sampled": result.sampled,
                "seconds": r(result.duration, 2),
            },
        }


async def video_form(request: Request, raw: bytes, limit: int) -> dict[str, Any] | None:
    """The fields of a multipart or url-encoded form (the `video` file as bytes), or None for
    any other body (a JSON object, parsed on the worker)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    form = await read_form(request, raw, max_files=1, max_fields=16, max_part_size=limit)
    try:
        values: dict[str, Any] = dict(form)
        upload = form.get("video")
        if upload is not None and not isinstance(upload, str):
            values["video"] = await upload.read()
        return values
    finally:
        await form.close()


def _video_fields(values: dict[str, Any]) -> tuple[object, bytes | None]:
    """(session_id, video bytes): the `video` file wins over `video_base64` when both come."""
    if isinstance(values.get("video"), bytes):
        return values.get("session_id"), values["video"]
    text = values.get("video_base64")
    if text is None or text == "":
        return values.get("session_id"), None
    if not isinstance(text, str):
        raise BadImage("video_base64 must be a base64 string")
    try:
        video = decode_base64(text)
    except BadImage:
        raise BadImage("video_base64 is not valid base64") from None
    return values.get("session_id"), video
