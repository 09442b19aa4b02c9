"""The spec's error table, and how any exception becomes the v3 envelope's error_code/error_msg.

`error_msg` is the table's text exactly (clients match on it); the specific reason goes into
`error_detail`, an extra envelope field, and into the access log. "param[] is null" names the missing
parameter inside its brackets, as the other "param[...]" messages do.
"""

from __future__ import annotations

from facecore.errors import FaceCoreError

# From the table at the end of baidu-face-private-v3.md ("system busy" 222902-222916 omitted: they
# are the same condition as 222901, which is the one FaceCore sends).
MESSAGES: dict[int, str] = {
    222001: "param[] is null",
    222002: "param[start] format error",
    222003: "param[length] format error",
    222004: "param[op_app_id_list] format error",
    222005: "param[group_id_list] format error",
    222006: "group_id format error",
    222007: "uid format error",
    222008: "face_id format error",
    222009: "quality_conf format error",
    222010: "user_info format error",
    222011: "param[uid_list] format error",
    222012: "param[op_app_id] format error",
    222013: "param[image] format error",
    222014: "param[app_id] format error",
    222015: "param[image_type] format error",
    222016: "param[max_face_num] format error",
    222017: "param[face_field] format error",
    222018: "param[user_id] format error",
    222019: "param[quality_control] format error",
    222020: "param[liveness_control] format error",
    222021: "param[max_user_num] format error",
    222022: "param[id_card_number] format error",
    222023: "param[name] format error",
    222024: "param[face_type] format error",
    222025: "param[face_token] format error",
    222026: "param[max_star_num] format error",
    222201: "network not available",
    222202: "pic not has face",
    222203: "image check fail",
    222204: "image_url_download_fail",
    222205: "network not availablel",
    222206: "rtse service return fail",
    222207: "match user is not found",
    222208: "the number of image is incorrect",
    222209: "face token not exist",
    222300: "add face fail",
    222301: "get face fail",
    222302: "system error",
    222303: "get face fail",
    223100: "group is not exist",
    223101: "group is already exist",
    223102: "user is already exist",
    223103: "user is not exist",
    223104: "group_list is too large",
    223105: "face is already exist",
    223106: "face is not exist",
    223110: "uid_list is too large",
    223111: "dst group is not exist",
    223112: "quality_conf format error",
    223113: "face is covered",
    223114: "face is fuzzy",
    223115: "face light is not good",
    223116: "incomplete face",
    223117: "app_list is too large",
    223118: "quality control error",
    223119: "liveness control item error",
    223120: "liveness check fail",
    223121: "left eye is occlusion",
    223122: "right eye is occlusion",
    223123: "left cheek is occlusion",
    223124: "right cheek is occlusion",
    223125: "chin contour is occlusion",
    223126: "nose is occlusion",
    223127: "mouth is occlusion",
    222901: "system busy",
    222304: "image size is too large",
    223128: "group was deleting",
    222361: "system busy",
}
# Outside the spec's table: Baidu's public-cloud codes, with the public cloud's messages, for a
# path that is not an API method (3) and for authentication (facecore_server.auth).
UNSUPPORTED_METHOD = 3
MESSAGES.update(
    {
        UNSUPPORTED_METHOD: "Unsupported openapi method",
        6: "No permission to access data",
        14: "IAM Certification failed",
        18: "Open api qps request limit reached",
        110: "Access token invalid or no longer valid",
        111: "Access token expired",
    }
)

MISSING = 222001
BUSY = 222901
SYSTEM_ERROR = 222302


class ApiError(FaceCoreError):
    """A request the server refuses: `code` from MESSAGES, `detail` saying why in words."""

    def __init__(self, code: int, detail: str, param: str | None = None) -> None:
        super().__init__(detail, param)
        self.code = code


def missing(param: str) -> ApiError:
    return ApiError(MISSING, f"required parameter {param!r} is missing", param)


def message(code: int, param: str | None = None) -> str:
    text = MESSAGES.get(code, MESSAGES[SYSTEM_ERROR])
    if code == MISSING and param:
        return f"param[{param}] is null"
    return text
