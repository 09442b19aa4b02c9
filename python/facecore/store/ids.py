"""The checks every id and paging argument of the library passes before it reaches a key.

IDs are 1+ characters of [A-Za-z0-9_], so no id can contain the key separator "/" (codec.py);
tokens are 32 lowercase hex characters. Each check raises the v3 error of its argument.
"""

from __future__ import annotations

import re
from typing import TypeGuard

from facecore.errors import (
    BadAppId,
    BadFaceToken,
    BadGroupId,
    BadLength,
    BadStart,
    BadUserId,
    BadUserInfo,
    FaceCoreError,
)

# Matched with fullmatch, never match + "$": "$" also matches before a final newline ("a\n").
ID = re.compile(r"[A-Za-z0-9_]+")
TOKEN = re.compile(r"[0-9a-f]{32}")
RESERVED = frozenset({"all", "self", "me", "this", "next"})
MAX_USER_BYTES = 128  # a user_id's longest (ASCII: bytes and characters alike)


def show(value: object) -> str:
    """A rejected value for an error message: never all of a long one (it may be an image)."""
    text = repr(value)
    return text if len(text) <= 70 else f"{text[:64]}... ({len(text)} characters)"


def is_id(value: object) -> TypeGuard[str]:
    """Whether `value` is, whole, 1+ characters of [A-Za-z0-9_] (ASCII only)."""
    return isinstance(value, str) and ID.fullmatch(value) is not None


def check_id(value: object, name: str, max_bytes: int, error: type[FaceCoreError]) -> str:
    if not is_id(value) or len(value) > max_bytes:
        raise error(f"{name} must be 1-{max_bytes} characters of [A-Za-z0-9_], got {show(value)}")
    if value.lower() in RESERVED:
        raise error(f"{name} {value!r} is a reserved word")
    return value


def check_appid(appid: object, name: str = "appid") -> str:
    return check_id(appid, name, 48, BadAppId)


def check_group(group_id: object) -> str:
    return check_id(group_id, "group_id", 48, BadGroupId)


def check_user(user_id: object) -> str:
    return check_id(user_id, "user_id", MAX_USER_BYTES, BadUserId)


def check_token(token: object) -> str:
    if not isinstance(token, str) or not TOKEN.fullmatch(token):
        raise BadFaceToken(f"face_token must be 32 lowercase hex characters, got {show(token)}")
    return token


def check_user_info(user_info: object) -> str | None:
    if user_info is None:
        return None
    if not isinstance(user_info, str) or len(user_info.encode("utf-8")) > 256:
        raise BadUserInfo("user_info must be a string of at most 256 UTF-8 bytes")
    return user_info


def check_page(start: object, length: object) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise BadStart(f"start must be an integer >= 0, got {start!r}")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 1000:
        raise BadLength(f"length must be an integer in 1..1000, got {length!r}")
    return start, length
