"""The v3 routes: one declaration each (path, handler, aliases, parameters, result shape), from which
the app registers its endpoints and /openapi.json is written."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from facecore_server import params as P
from facecore_server.service import FaceService

# Path prefixes that all answer the same routes (docs/api.md).
PREFIXES = ("/face-api/v3", "/v3", "/api/face-api/v3", "/api/v3")
LIVENESS_COUNTS = (1, 3, 8)  # images face/liveness takes
DETECT, RECOGNITION = "detect", "recognition"  # the features a licence sells (facecore_license)

_NUM = {"type": "number"}
_STR = {"type": "string"}
_INT = {"type": "integer"}
LOCATION = {
    "type": "object",
    "required": ["left", "top", "width", "height", "rotation"],
    "properties": {"left": _NUM, "top": _NUM, "width": _NUM, "height": _NUM, "rotation": _INT},
}
_TYPED = {
    "type": "object",
    "required": ["type", "probability"],
    "properties": {"type": _STR, "probability": _NUM},
}
_POINTS = {
    "type": "array",
    "items": {"type": "object", "required": ["x", "y"], "properties": {"x": _NUM, "y": _NUM}},
}
DETECT_FACE = {
    "type": "object",
    "required": ["face_token", "location", "face_probability"],
    "properties": {
        "face_token": _STR,
        "location": LOCATION,
        "face_probability": _NUM,
        "angle": {
            "type": "object",
            "required": ["yaw", "pitch", "roll"],
            "properties": {"yaw": _NUM, "pitch": _NUM, "roll": _NUM},
        },
        "age": _NUM,
        "gender": _TYPED,
        "expression": _TYPED,
        "emotion": _TYPED,
        "eye_status": {
            "type": "object",
            "required": ["left_eye", "right_eye"],
            "properties": {"left_eye": _NUM, "right_eye": _NUM},
        },
        "landmark": {**_POINTS, "minItems": 4, "maxItems": 4},
        "landmark72": {**_POINTS, "minItems": 72, "maxItems": 72},
        "quality": {
            "type": "object",
            "required": ["blur", "illumination", "completeness"],
            "properties": {"blur": _NUM, "illumination": _NUM, "completeness": _INT},
        },
        "feature": {"type": "string", "description": "base64 of the float32 embedding"},
        "liveness": {
            "type": "object",
            "required": ["livemapscore"],
            "properties": {"livemapscore": _NUM},
        },
    },
}
USER = {
    "type": "object",
    "required": ["group_id", "user_id", "user_info", "score"],
    "properties": {"group_id": _STR, "user_id": _STR, "user_info": _STR, "score": _NUM},
}
_TOKEN_ONLY = {"type": "object", "required": ["face_token"], "properties": {"face_token": _STR}}


def _obj(**props: Any) -> dict[str, Any]:
    return {"type": "object", "required": list(props), "properties": props}


def _list(items: dict[str, Any]) -> dict[str, Any]:
    return {"type": "array", "items": items}


@dataclass(frozen=True)
class Op:
    path: str  # "face/detect", after a prefix
    handler: Callable[[FaceService, str, Any], Any]  # (service, appid, body) -> result
    params: tuple[P.Param, ...]
    result: dict[str, Any] | None  # None: result is always null
    summary: str
    aliases: tuple[str, ...] = ()
    model: bool = False  # runs the models: goes through admission (and, licensed, needs a lease)
    counts: tuple[int, ...] = ()  # body is an array of that many image objects (match, liveness)
    # What a licence must sell for it (docs/license.md): "detect" (detection, attributes,
    # liveness), "recognition" (match, search and the library's writes), None (library reads).
    feature: str | None = None


_IMAGE = P.IMAGE_PARAMS
_SEARCH = (P.GROUP_ID_LIST, P.USER_ID_OPTIONAL, P.MATCH_THRESHOLD, P.MAX_USER_NUM)
_STORE = (*_IMAGE, P.GROUP_ID, P.USER_ID, P.USER_INFO)
_STORED = _obj(face_token=_STR, location=LOCATION)

OPS = (
    Op(
        "face/detect",
        FaceService.detect,
        (*_IMAGE[:3], P.MAX_FACE_NUM, P.FACE_FIELD),
        _obj(face_num=_INT, face_list=_list(DETECT_FACE)),
        "Detect faces with their attributes",
        model=True,
        feature=DETECT,
    ),
    Op(
        "face/liveness",
        FaceService.liveness,
        (*_IMAGE[:3], P.FACE_FIELD),
        _obj(
            face_liveness=_NUM,
            thresholds=_obj(**{"frr_1e-4": _NUM, "frr_1e-3": _NUM, "frr_1e-2": _NUM}),
            face_list=_list(DETECT_FACE),
        ),
        "Silent liveness of 1, 3 or 8 images (needs the liveness models)",
        model=True,
        counts=LIVENESS_COUNTS,
        feature=DETECT,
    ),
    Op(
        "face/liveness/sessioncode",
        FaceService.session_code,
        (),
        _obj(session_id=_STR, code=_STR),
        "A code to read aloud in an H5 liveness video, and its session (5 minutes, one video)",
        feature=DETECT,
    ),
    Op(
        "face/match",
        FaceService.match,
        _IMAGE,
        _obj(score=_NUM, face_list=_list(_TOKEN_ONLY)),
        "Compare the largest faces of two images (score 0-100, 80 = FAR 1e-4)",
        model=True,
        counts=(2,),
        feature=RECOGNITION,
    ),
    Op(
        "face/identify",
        FaceService.identify,
        (*_IMAGE, *_SEARCH),
        _obj(face_token=_STR, user_list=_list(USER)),
        "Search groups for the users most like the largest face",
        ("face/search",),
        model=True,
        feature=RECOGNITION,
    ),
    Op(
        "face/multi-search",
        FaceService.multi_search,
        (*_IMAGE, *_SEARCH, P.MAX_FACE_NUM),
        _obj(
            face_num=_INT,
            face_list=_list(_obj(face_token=_STR, location=LOCATION, user_list=_list(USER))),
        ),
        "Search groups for every face of the image (M:N)",
        model=True,
        feature=RECOGNITION,
    ),
    Op(
        "face/add",
        FaceService.add,
        (*_STORE, P.ADD_ACTION),
        _STORED,
        "Register the largest face for a user (creates group and user)",
        model=True,
        feature=RECOGNITION,
    ),
    Op(
        "face/update",
        FaceService.update,
        (*_STORE, P.UPDATE_ACTION),
        _STORED,
        "Replace all of a user's faces in a group with the largest face",
        model=True,
        feature=RECOGNITION,
    ),
    Op(
        "face/list",
        FaceService.face_list,
        (P.GROUP_ID, P.USER_ID),
        _obj(face_list=_list(_obj(face_token=_STR, ctime=_STR))),
        "A user's faces",
        ("face/getlist",),
    ),
    Op(
        "face/delete",
        FaceService.face_delete,
        (P.GROUP_ID, P.USER_ID, P.FACE_TOKEN),
        None,
        "Delete one face of a user (the user goes with its last face)",
        feature=RECOGNITION,
    ),
    Op(
        "user/copy",
        FaceService.user_copy,
        (P.USER_ID, P.SRC_GROUP_ID, P.DST_GROUP_ID),
        None,
        "Copy a user and its faces into another existing group",
        feature=RECOGNITION,
    ),
    Op(
        "user/get",
        FaceService.user_get,
        (P.GROUP_ID_OR_ALL, P.USER_ID),
        _obj(user_list=_list(_obj(user_info=_STR, group_id=_STR))),
        "A user's info and groups",
    ),
    Op(
        "user/list",
        FaceService.user_list,
        (P.GROUP_ID, P.START, P.LENGTH),
        _obj(user_id_list=_list(_STR)),
        "User ids of a group",
        ("group/getusers",),
    ),
    Op(
        "user/delete",
        FaceService.user_delete,
        (P.GROUP_ID_OR_ALL, P.USER_ID),
        None,
        "Delete a user from a group (or every group with @ALL)",
        feature=RECOGNITION,
    ),
    Op(
        "group/add",
        FaceService.group_add,
        (P.GROUP_ID,),
        None,
        "Create an empty group",
        feature=RECOGNITION,
    ),
    Op(
        "group/delete",
        FaceService.group_delete,
        (P.GROUP_ID,),
        None,
        "Delete a group and everything in it (in the background)",
        feature=RECOGNITION,
    ),
    Op(
        "group/list",
        FaceService.group_list,
        (P.START, P.LENGTH),
        _obj(group_id_list=_list(_STR)),
        "Groups of the appid",
        ("group/getlist",),
    ),
)

# Baidu's public-cloud paths, as the baidu-aip SDK (aip.AipFace) calls them: each is served by the
# handler of the private route it names, with the same parameters, answers and error codes.
CLOUD_PREFIX = "/rest/2.0/face/v3"
CLOUD_PATHS = {
    "detect": "face/detect",
    "search": "face/identify",
    "multi-search": "face/multi-search",
    "match": "face/match",
    "faceverify": "face/liveness",
    "faceset/user/add": "face/add",
    "faceset/user/update": "face/update",
    "faceset/face/delete": "face/delete",
    "faceset/user/get": "user/get",
    "faceset/face/getlist": "face/list",
    "faceset/group/getusers": "user/list",
    "faceset/user/copy": "user/copy",
    "faceset/user/delete": "user/delete",
    "faceset/group/add": "group/add",
    "faceset/group/delete": "group/delete",
    "faceset/group/getlist": "group/list",
}
# The public cloud's H5 video liveness (v1, answered in the H5 envelope: err_no, err_msg,
# serverlogid): its session code op, and the video route itself (None).
CLOUD_H5: dict[str, str | None] = {
    "/rest/2.0/face/v1/faceliveness/sessioncode": "face/liveness/sessioncode",
    "/rest/2.0/face/v1/faceliveness/verify": None,
}
