"""The v3 operations in Baidu's shapes: parameters in, `result` out, errors as facecore.errors.

Each route of routes.OPS names one method here as its handler: `handler(service, appid, body)`.
Synchronous and thread-safe; the app runs the model-bound ones (detect, match, identify,
multi-search, add, update) through its admission gate, the library-only ones on a worker thread.

Every face detected from an image is remembered under its face_token (embedding, location,
quality and whatever fields were computed), so the token works as image_type=FACE_TOKEN in every
route later. A detect on a token answers the fields stored with it; a field that was not computed
when the face was first seen is left out rather than guessed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from facecore.errors import (
    BadFaceToken,
    FaceCoreError,
    LivenessMissing,
    NoFace,
    NoMatch,
)
from facecore.pipeline import fields
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image, face_crop
from facecore.pipeline.liveness import THRESHOLDS as LIVENESS_THRESHOLDS
from facecore.score import similarity_to_score
from facecore.store.library import FaceLibrary, Match
from facecore_server import controls
from facecore_server import params as P
from facecore_server.faces import (
    Probe,
    ctime,
    detect_json,
    face_attrs,
    face_fields,
    new_face,
    r,
    user,
)
from facecore_server.fetch import fetch_image
from facecore_server.h5 import H5


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
        self.h5 = H5(engine, library, max_pixels)

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
                raise BadFaceToken(f"image is {len(image)} characters, not a face_token")
            emb, attrs = self.library.token_get(appid, image)  # which checks the token
            return [Probe(image, emb, attrs)]
        if image_type == "URL":
            data = fetch_image(image, self.url_hosts, self.url_max_bytes, self.url_timeout)
        else:
            data = P.decode_base64(image)
        decoded = decode_image(data, self.max_pixels)
        faces = self.engine.detect(decoded, max_faces, {*wanted, *fields.STORED})
        if not faces:
            raise NoFace("no face was found in the image")
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
        liveness = controls.liveness_control(body, self.has_liveness)
        extra = ("liveness",) if liveness != "NONE" else ()
        probes = self.probes(appid, body, extra, max_faces, crop)
        for p in probes:
            controls.check_quality(p, quality)
            controls.check_liveness(p, liveness)
        return probes

    def probe(self, appid: str, body: dict[str, Any], crop: bool = False) -> Probe:
        """The largest face, after the request's quality and liveness controls."""
        return self.controlled(appid, body, 1, crop)[0]

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
        faces = []  # items: 1, 3 or 8 (routes.LIVENESS_COUNTS, checked with the body)
        for item in items:
            wanted = face_fields(P.FACE_FIELD.read(item), True) | {"liveness"}
            p = self.probes(appid, item, {*fields.ALWAYS, *wanted}, 1)[0]
            if "liveness" not in p.attrs:  # a token detected without liveness
                raise controls.no_liveness(p.token)
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
            "score": r(float(score)),
            "face_list": [{"face_token": a.token}, {"face_token": b.token}],
        }

    def _search(
        self, appid: str, body: dict[str, Any], every_face: bool = False
    ) -> tuple[list[Probe], list[list[Match] | FaceCoreError]]:
        """identify and multi-search: the search parameters, checked here before the image is
        looked at and so not again by the library (identify_checked), then the faces of the
        image (the largest, or `every_face` up to max_face_num) and the users each matches (or
        NoMatch)."""
        groups = P.group_list(P.GROUP_ID_LIST.read(body))
        user_id = P.USER_ID_OPTIONAL.read(body)
        threshold, top = P.MATCH_THRESHOLD.read(body), P.MAX_USER_NUM.read(body)
        probes = self.controlled(appid, body, P.MAX_FACE_NUM.read(body) if every_face else 1)
        embeddings = np.stack([p.embedding for p in probes])
        found = self.library.identify_checked(appid, groups, embeddings, user_id, threshold, top)
        return probes, found

    def identify(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        (p,), (matches,) = self._search(appid, body)
        if isinstance(matches, FaceCoreError):
            raise matches
        return {"face_token": p.token, "user_list": [user(m) for m in matches]}

    def multi_search(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        probes, found = self._search(appid, body, every_face=True)
        faces = [
            {
                "face_token": p.token,
                "location": p.attrs["location"],
                "user_list": [] if isinstance(res, Exception) else [user(m) for m in res],
            }
            for p, res in zip(probes, found)
        ]
        if all(not f["user_list"] for f in faces):
            raise NoMatch("no face in the image matches a user")
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
        group, user_id = P.GROUP_ID.read(body), P.USER_ID.read(body)
        info = P.USER_INFO.read(body)
        p = self.probe(appid, body, crop=True)
        if replace:
            self._replace(appid, group, user_id, p, info)
        else:
            store(appid, group, user_id, new_face(p), info)
        return {"face_token": p.token, "location": p.attrs["location"]}

    def _replace(self, appid: str, group: str, user_id: str, p: Probe, info: str | None) -> None:
        """The user's faces become this one; a user (or group) that does not exist yet is
        registered, in the same atomic step (two concurrent REPLACEs leave one of the faces)."""
        self.library.face_update(appid, group, user_id, new_face(p), info, create=True)

    def session_code(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        """The H5 video liveness's session code (facecore_server.h5)."""
        return self.h5.session_code(appid)

    # ------------------------------------------------------------------ library routes

    def face_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        faces = self.library.face_list(appid, P.GROUP_ID.read(body), P.USER_ID.read(body))
        return {"face_list": [{"face_token": f.face_token, "ctime": ctime(f.ctime)} for f in faces]}

    def face_delete(self, appid: str, body: dict[str, Any]) -> None:
        group, user_id = P.GROUP_ID.read(body), P.USER_ID.read(body)
        self.library.face_delete(appid, group, user_id, P.FACE_TOKEN.read(body))

    def user_copy(self, appid: str, body: dict[str, Any]) -> None:
        user_id = P.USER_ID.read(body)
        src, dst = P.SRC_GROUP_ID.read(body), P.DST_GROUP_ID.read(body)
        self.library.user_copy(appid, user_id, src, dst)

    def user_get(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, user_id = P.GROUP_ID_OR_ALL.read(body), P.USER_ID.read(body)
        users = self.library.user_get(appid, group, user_id)
        return {"user_list": [{"user_info": u.user_info, "group_id": u.group_id} for u in users]}

    def user_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        group, start, length = P.GROUP_ID.read(body), P.START.read(body), P.LENGTH.read(body)
        return {"user_id_list": self.library.user_list(appid, group, start, length)}

    def user_delete(self, appid: str, body: dict[str, Any]) -> None:
        group, user_id = P.GROUP_ID_OR_ALL.read(body), P.USER_ID.read(body)
        if group != "@ALL":
            self.library.user_delete(appid, group, user_id)
            return
        for u in self.library.user_get(appid, "@ALL", user_id):  # UserNotFound when in no group
            self.library.user_delete(appid, u.group_id, user_id)

    def group_add(self, appid: str, body: dict[str, Any]) -> None:
        self.library.group_add(appid, P.GROUP_ID.read(body))

    def group_delete(self, appid: str, body: dict[str, Any]) -> None:
        self.library.group_delete(appid, P.GROUP_ID.read(body))

    def group_list(self, appid: str, body: dict[str, Any]) -> dict[str, Any]:
        start, length = P.START.read(body), P.LENGTH.read(body)
        return {"group_id_list": self.library.group_list(appid, start, length)}
