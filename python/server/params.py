"""Request parameters of the v3 API: one declaration per parameter gives both its check (with the
spec's error code) and its OpenAPI schema, so the two cannot drift apart.

The server checks every parameter here, where the request comes in and before any model runs; an
id by the library's own rule (facecore.store.library.check_id, check_token), so there is one rule.

Leniency a migrating client expects: integers may come as decimal strings ("10"), enum values in any
letter case, and BASE64 images in either alphabet, with or without padding, line breaks or a
``data:image/...;base64,`` prefix.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facecore.errors import (
    BadFaceField,
    BadFaceToken,
    BadFaceType,
    BadGroupId,
    BadGroupIdList,
    BadImage,
    BadImageType,
    BadLength,
    BadLivenessControl,
    BadMatchThreshold,
    BadMaxFaceNum,
    BadMaxUserNum,
    BadQualityControl,
    BadStart,
    BadUserId,
    BadUserInfo,
    FaceCoreError,
    MissingParam,
    TooManyGroups,
    UserNotFound,
)
from facecore.store.library import check_group, check_id, check_token, is_id

_ID = "^[A-Za-z0-9_]+$"  # the OpenAPI pattern (ECMA: "$" is the end); checked by check_id
_DATA_URL = re.compile(r"^data:[\w/+.-]*;base64,", re.IGNORECASE)
_NOT_B64 = re.compile(rb"[^A-Za-z0-9+/=]")


@dataclass(frozen=True)
class Param:
    name: str
    kind: str  # "string" | "integer" | "number" | "enum" | "id" | "list"
    error_type: type[FaceCoreError]  # what a malformed value raises: the spec's code for it
    required: bool = False
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_bytes: int | None = None
    choices: tuple[str, ...] = ()
    empty_ok: bool = False  # "" is a value (user_info: clears it), not an absent parameter
    check: Callable[[str], str] | None = None  # an id's own check, if not check_id's
    description: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def code(self) -> int | None:
        return self.error_type.code

    def schema(self) -> dict[str, Any]:
        s: dict[str, Any]
        if self.kind in ("integer", "number"):
            s = {"type": self.kind}
            if self.minimum is not None:
                s["minimum"] = self.minimum
            if self.maximum is not None:
                s["maximum"] = self.maximum
        elif self.kind == "enum":
            s = {"type": "string", "enum": list(self.choices)}
        elif self.kind == "id":
            s = {"type": "string", "pattern": _ID, "minLength": 1, "maxLength": self.max_bytes}
        else:
            s = {"type": "string"}
            if self.max_bytes is not None:
                s["maxLength"] = self.max_bytes
        if self.default is not None:
            s["default"] = self.default
        if self.description:
            s["description"] = self.description
        s.update(self.extra)
        return s

    def read(self, body: Mapping[str, Any]) -> Any:
        value = body.get(self.name)
        if value is None or (value == "" and not self.empty_ok):
            if self.required:
                raise missing(self.name)
            return self.default
        if self.kind in ("integer", "number"):
            return self._number(value)
        if not isinstance(value, str):
            raise self.error(f"must be a string, got {type(value).__name__}")
        if self.kind == "enum":
            # ASCII only: str.upper() maps look-alikes onto the choices ("lıve" -> "LIVE").
            upper = value.upper() if value.isascii() else value
            if upper not in self.choices:
                raise self.error(f"must be one of {', '.join(self.choices)}, got {value[:32]!r}")
            return upper
        if self.kind == "id":
            if self.check is not None:
                return self.check(value)
            return check_id(value, self.name, self.max_bytes or 0, self.error_type)
        if self.max_bytes is not None and len(value.encode()) > self.max_bytes:
            raise self.error(f"must be at most {self.max_bytes} bytes")
        return value

    def _number(self, value: Any) -> int | float:
        # ASCII digits only: int() also reads other scripts' digits ("\u0661" is 1).
        if isinstance(value, str) and re.fullmatch(r" *-?[0-9]+(\.[0-9]+)? *", value):
            try:
                value = float(value) if "." in value else int(value)
            except ValueError:  # over Python's int-from-string digit limit (4300)
                raise self.error(f"must be a {self.kind}, got {len(value)} digits") from None
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise self.error(f"must be a {self.kind}, got {type(value).__name__}")
        if self.kind == "integer" and isinstance(value, float):
            if not value.is_integer():
                raise self.error(f"must be an integer, got {value}")
            value = int(value)
        if (self.minimum is not None and value < self.minimum) or (
            self.maximum is not None and value > self.maximum
        ):
            raise self.error(f"must be in {_num(self.minimum)}..{_num(self.maximum)}, got {value}")
        number: int | float = value
        return number

    def error(self, why: str) -> FaceCoreError:
        """The error for a malformed value (not a missing one: `missing`)."""
        return self.error_type(f"{self.name} {why}")


def missing(name: str) -> MissingParam:
    """The error for a required parameter that is absent, named in its error_msg."""
    return MissingParam(f"required parameter {name!r} is missing", name)


def _num(x: float | None) -> str:
    return "?" if x is None else str(int(x)) if float(x).is_integer() else str(x)


CONTROLS = ("NONE", "LOW", "NORMAL", "HIGH")
FACE_TYPES = ("LIVE", "IDCARD", "WATERMARK", "CERT", "INFRARED")

IMAGE = Param(
    "image",
    "string",
    BadImage,
    required=True,
    description="BASE64 image data, or a face_token when image_type is FACE_TOKEN",
)
IMAGE_TYPE = Param(
    "image_type",
    "enum",
    BadImageType,
    required=True,
    choices=("BASE64", "FACE_TOKEN", "URL"),
    description="URL only works for hosts the server allow-lists (--url-hosts)",
)
MAX_FACE_NUM = Param("max_face_num", "integer", BadMaxFaceNum, default=1, minimum=1, maximum=10)
FACE_FIELD = Param(
    "face_field",
    "string",
    BadFaceField,
    max_bytes=512,
    description="comma-separated: age, gender, expression, emotion, landmark, "
    "eye_status, quality, feature, ... (see GET /face-api/v3/capabilities)",
)
FACE_TYPE = Param("face_type", "enum", BadFaceType, default="LIVE", choices=FACE_TYPES)
QUALITY_CONTROL = Param(
    "quality_control", "enum", BadQualityControl, default="NONE", choices=CONTROLS
)
LIVENESS_CONTROL = Param(
    "liveness_control", "enum", BadLivenessControl, default="NONE", choices=CONTROLS
)
GROUP_ID = Param("group_id", "id", BadGroupId, required=True, max_bytes=48)
GROUP_ID_OR_ALL = Param(
    "group_id",
    "string",
    BadGroupId,
    required=True,
    max_bytes=48,
    extra={"pattern": "^(@ALL|[A-Za-z0-9_]+)$"},
    description="a group id, or @ALL for every group of the appid",
)
SRC_GROUP_ID = Param("src_group_id", "id", BadGroupId, required=True, max_bytes=48)
DST_GROUP_ID = Param("dst_group_id", "id", BadGroupId, required=True, max_bytes=48)
USER_ID = Param("user_id", "id", BadUserId, required=True, max_bytes=128)
USER_ID_OPTIONAL = Param(
    "user_id", "id", BadUserId, max_bytes=128, description="search only this user's faces"
)
USER_INFO = Param("user_info", "string", BadUserInfo, max_bytes=256, empty_ok=True)
FACE_TOKEN = Param("face_token", "id", BadFaceToken, required=True, max_bytes=64, check=check_token)
GROUP_ID_LIST = Param(
    "group_id_list",
    "string",
    BadGroupIdList,
    required=True,
    max_bytes=10 * 49,
    description="up to 10 comma-separated group ids",
)
MATCH_THRESHOLD = Param(
    "match_threshold", "number", BadMatchThreshold, default=0, minimum=0, maximum=100
)
MAX_USER_NUM = Param("max_user_num", "integer", BadMaxUserNum, default=1, minimum=1, maximum=20)
START = Param("start", "integer", BadStart, default=0, minimum=0, maximum=2**31 - 1)
LENGTH = Param("length", "integer", BadLength, default=100, minimum=1, maximum=1000)

# The public cloud's action_type (an extension of the private routes): add APPENDs a face to the
# user's, or REPLACEs them when the user exists; update UPDATEs an existing user only, or REPLACEs
# (registering the user when missing). No code of the table fits its format error: MissingParam's,
# unnamed ("param[] is null", as for match_threshold).
ADD_ACTION = Param(
    "action_type",
    "enum",
    MissingParam,
    default="APPEND",
    choices=("APPEND", "REPLACE"),
    description="REPLACE: an existing user's faces are replaced by this one",
)
UPDATE_ACTION = Param(
    "action_type",
    "enum",
    MissingParam,
    default="UPDATE",
    choices=("UPDATE", "REPLACE"),
    description=f"REPLACE: a missing user is registered instead of answering {UserNotFound.code}",
)
IMAGE_PARAMS = (IMAGE, IMAGE_TYPE, FACE_TYPE, QUALITY_CONTROL, LIVENESS_CONTROL)


def group_list(value: str) -> list[str]:
    """The groups of `group_id_list`, in order, duplicates dropped; TooManyGroups beyond 10. A
    reserved word is the group id's own error (BadGroupId), as the library has it."""
    groups = [g.strip(" ") for g in value.split(",")]  # spaces around commas only
    if any(not is_id(g) or len(g) > 48 for g in groups):
        raise BadGroupIdList(f"group_id_list must be comma-separated group ids, got {value[:64]!r}")
    groups = [check_group(g) for g in dict.fromkeys(groups)]
    if len(groups) > 10:
        raise TooManyGroups(f"group_id_list names {len(groups)} groups; at most 10 per search")
    return groups


def decode_base64(text: str) -> bytes:
    """Bytes of a BASE64 image: either alphabet, padding optional, whitespace and a data: prefix
    tolerated; BadImage for anything else."""
    text = _DATA_URL.sub("", text, count=1)
    data = "".join(text.split()).encode("ascii", "replace").translate(_URLSAFE)
    if not data or _NOT_B64.search(data) or "=" in data.rstrip(b"=").decode():
        raise BadImage("image is not valid base64")
    data = data.rstrip(b"=")
    if not data:  # "====": padding alone encodes nothing
        raise BadImage("image is not valid base64 (no data, only padding)")
    if len(data) % 4 == 1:
        raise BadImage("image is not valid base64 (truncated)")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except binascii.Error as e:
        raise BadImage(f"image is not valid base64: {e}") from None


_URLSAFE = bytes.maketrans(b"-_", b"+/")
