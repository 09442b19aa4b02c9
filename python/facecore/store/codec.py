"""The face library's keys and record formats (docs/storage.md), one place for both stores.

All keys are UTF-8, fields separated by "/", which no id may contain (ids.py):
    G/{appid}/{group}                  group: JSON {ctime, deleting}
    U/{appid}/{group}/{user}           user: JSON {user_info, ctime}
    F/{appid}/{group}/{user}/{token}   face: row int64, ctime int64, box 4 x f32
    R/{appid}/{group}/{row:016x}       row: embedding d x f32, token 16 bytes, user id
    T/{appid}/{group}/{token}          token -> row int64 + user id
    I/{appid}/{group}/{token}          registration image bytes (for reindex)
    D/{appid}/{token}                  detected-face token: ts int64, embedding, attributes JSON
    E/{ts:016x}/{appid}/{token}        eviction order of detected-face tokens
    K/{namespace}/{key}                small metadata (the import journal, H5 sessions)
A user's faces are contiguous, and so is each group's data under each kind: listing, user
deletion and group deletion are prefix scans and range deletes.
"""

from __future__ import annotations

import json
import struct
import time
from typing import Any

import numpy as np

from facecore.store.ids import is_id

FACE = struct.Struct("<qq4f")  # F/ value: row, ctime, box
ROW = struct.Struct("<q")  # T/ value head: row (then the user id)
TS = struct.Struct("<q")  # D/ value head: when the token was stored, ns
GROUP_KINDS = ("R", "F", "T", "I", "U")  # a group's data besides its G/ record, by kind
# The kinds whose changes an instance's memory depends on (its groups, their indexes, who each row
# belongs to, the users' user_info): what a shared store's change log carries to the others.
FOLLOWED = (b"G/", b"R/", b"U/")


# Parsing many hex digits at once (numpy): ASCII -> the digit's value (lowercase, as keys are;
# 255 where not a digit), and what digit i of a row number's 16 is worth (16 ** (15 - i)).
HEX = np.full(256, 255, np.uint8)
HEX[np.frombuffer(b"0123456789abcdef", np.uint8)] = np.arange(16, dtype=np.uint8)
ROW_SHIFTS = np.arange(60, -4, -4, dtype=np.int64)


def group_key(appid: str, group: str) -> str:
    return f"G/{appid}/{group}"


def user_key(appid: str, group: str, user: str) -> str:
    return f"U/{appid}/{group}/{user}"


def face_key(appid: str, group: str, user: str, token: str) -> str:
    return f"F/{appid}/{group}/{user}/{token}"


def row_key(appid: str, group: str, row: int) -> str:
    return f"R/{appid}/{group}/{row:016x}"


def token_key(appid: str, group: str, token: str) -> str:
    return f"T/{appid}/{group}/{token}"


def image_key(appid: str, group: str, token: str) -> str:
    return f"I/{appid}/{group}/{token}"


def scope(kind: str, appid: str, group: str) -> bytes:
    """The prefix of one group's keys of one kind: "R/{appid}/{group}/"."""
    return f"{kind}/{appid}/{group}/".encode()


def end_of(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (non-empty, no 0xff byte)."""
    assert prefix and prefix[-1] != 0xFF
    return prefix[:-1] + bytes([prefix[-1] + 1])  # "/" + 1 = "0"


def group_ids(key: bytes) -> tuple[str, str] | None:
    """(appid, group) of a well-formed G/ key, else None."""
    parts = key.decode("utf-8", "replace").split("/")
    if len(parts) != 3 or not is_id(parts[1]) or not is_id(parts[2]):
        return None
    return parts[1], parts[2]


def data_group(key: bytes) -> tuple[str, str] | None:
    """(appid, group) of a well-formed key of one of a group's kinds (R/, F/, ...), else None."""
    parts = key.split(b"/", 3)
    return group_ids(b"G/" + b"/".join(parts[1:3])) if len(parts) == 4 else None


def any_group(key: bytes) -> tuple[str, str] | None:
    """(appid, group) of a G/ key or of a key of the group's data, else None."""
    return group_ids(key) if key.startswith(b"G/") else data_group(key)


def group_meta(value: bytes) -> dict[str, Any]:
    """A G/ value's JSON object; {} when it is not one."""
    try:
        meta = json.loads(value)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def group_value(ctime: int | None = None, deleting: bool = False) -> bytes:
    return json.dumps(
        {"ctime": int(time.time()) if ctime is None else ctime, "deleting": deleting}
    ).encode()


def row_of(field: bytes) -> int | None:
    """The row number of an R/ key's last field (16 lowercase hex digits), else None."""
    if len(field) != 16 or field.strip(b"0123456789abcdef"):
        return None
    return int(field, 16)


def row_value(embedding: np.ndarray, token: str, user: str) -> bytes:
    return embedding.tobytes() + bytes.fromhex(token) + user.encode()


def parse_row(value: bytes, dim: int) -> tuple[np.ndarray, str, str]:
    """An R/ value's (fp32 embedding view, token, user)."""
    width = 4 * dim
    vec = np.frombuffer(value, np.float32, dim)
    return vec, value[width : width + 16].hex(), value[width + 16 :].decode()


def user_meta_ok(raw: bytes | None) -> bool:
    """Whether a U/ value is the user's JSON {user_info, ctime}."""
    if raw is None:
        return False
    try:
        meta = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(meta, dict)
        and isinstance(meta.get("user_info"), str)
        and isinstance(meta.get("ctime"), int)
    )
