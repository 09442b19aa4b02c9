"""JSON Schemas of the v3 answers, written from the spec's response tables and examples
(../shared/spec/baidu-face-private-v3.md) and the decisions docs/api.md records, not from the
server's openapi.py, so that they check it. `check(route, envelope)` validates a whole answer;
`SPEC_MESSAGES` is the spec's error table (code -> error_msg), read from the spec file itself.

Where the spec and those decisions differ, the decisions win: detect answers `angle` (the table says
`angel`), face tokens are 32 lowercase hex characters. Fields FaceCore cannot compute (beauty,
glasses, race, face_shape, face_type, parsing, occlusion) must be absent, which the schemas demand
with `false` subschemas.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import jsonschema

SPEC = Path(__file__).resolve().parents[2].parent / "shared" / "spec" / "baidu-face-private-v3.md"

NUMBER: dict[str, Any] = {"type": "number"}
STRING: dict[str, Any] = {"type": "string"}
PROBABILITY: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 1}
SCORE: dict[str, Any] = {"type": "number", "minimum": 0, "maximum": 100}
TOKEN: dict[str, Any] = {"type": "string", "pattern": "^[0-9a-f]{32}$"}
ID: dict[str, Any] = {"type": "string", "pattern": "^[A-Za-z0-9_]+$", "maxLength": 128}
# Fields of Baidu's answer that need models FaceCore does not have: never sent, never faked.
ABSENT_FIELDS = ("beauty", "glasses", "race", "face_shape", "face_type", "parsing", "parsing_info")


def _object(
    required: dict[str, Any], optional: dict[str, Any] | None = None, absent: tuple[str, ...] = ()
) -> dict[str, Any]:
    """A closed object: these required and optional properties, nothing else."""
    props: dict[str, Any] = {**required, **(optional or {})}
    props.update({name: False for name in absent})
    return {
        "type": "object",
        "required": list(required),
        "properties": props,
        "additionalProperties": False,
    }


def _typed(types: list[str]) -> dict[str, Any]:
    return _object({"type": {"type": "string", "enum": types}, "probability": PROBABILITY})


def _points(n: int) -> dict[str, Any]:
    point = _object({"x": NUMBER, "y": NUMBER})
    return {"type": "array", "items": point, "minItems": n, "maxItems": n}


# location (人脸检测, 人脸注册, 人脸更新): left/top/width/height double, rotation int64 in
# [-180, 180]. left/top may be negative for a face that runs over the image edge.
LOCATION = _object(
    {
        "left": NUMBER,
        "top": NUMBER,
        "width": {"type": "number", "exclusiveMinimum": 0},
        "height": {"type": "number", "exclusiveMinimum": 0},
        "rotation": {"type": "integer", "minimum": -180, "maximum": 180},
    }
)
ANGLE = _object(
    {
        "yaw": {"type": "number", "minimum": -90, "maximum": 90},
        "pitch": {"type": "number", "minimum": -90, "maximum": 90},
        "roll": {"type": "number", "minimum": -180, "maximum": 180},
    }
)
QUALITY = _object(
    {
        "blur": PROBABILITY,
        "illumination": {"type": "number", "minimum": 0, "maximum": 255},
        "completeness": {"type": "integer", "enum": [0, 1]},
    },
    absent=("occlusion",),
)
# The face entry of 人脸检测's answer. eye_status comes from the spec's example; emotion and feature
# are not in the table (emotion is Baidu cloud's field, feature is the face_field value's payload:
# base64 of the float32 embedding).
DETECT_FACE = _object(
    {
        "face_token": TOKEN,
        "location": LOCATION,
        "face_probability": PROBABILITY,
        "angle": ANGLE,
    },
    {
        "age": {"type": "number", "minimum": 0, "maximum": 120},
        "expression": _typed(["none", "smile", "laugh"]),
        "gender": _typed(["male", "female"]),
        "emotion": _typed(
            ["angry", "disgust", "fear", "happy", "sad", "surprise", "neutral", "pouty", "grimace"]
        ),
        "eye_status": _object({"left_eye": PROBABILITY, "right_eye": PROBABILITY}),
        "landmark": _points(4),
        "landmark72": _points(72),
        "quality": QUALITY,
        "feature": {"type": "string", "pattern": "^[A-Za-z0-9+/]+={0,2}$"},
    },
    absent=(*ABSENT_FIELDS, "angel", "liveness"),
)
DETECT = _object(
    {
        "face_num": {"type": "integer", "minimum": 1},
        "face_list": {"type": "array", "items": DETECT_FACE, "minItems": 1},
    }
)
MATCH = _object(
    {
        "score": SCORE,
        "face_list": {
            "type": "array",
            "items": _object({"face_token": TOKEN}),
            "minItems": 2,
            "maxItems": 2,
        },
    }
)
USER_MATCH = _object({"group_id": ID, "user_id": ID, "user_info": STRING, "score": SCORE})
IDENTIFY = _object(
    {
        "face_token": TOKEN,
        "user_list": {"type": "array", "items": USER_MATCH, "minItems": 1, "maxItems": 20},
    }
)
# M:N search (FaceCore's extension, docs/api.md): every face with its location and its user list.
MULTI_SEARCH = _object(
    {
        "face_num": {"type": "integer", "minimum": 1},
        "face_list": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "face_token": TOKEN,
                    "location": LOCATION,
                    "user_list": {"type": "array", "items": USER_MATCH, "maxItems": 20},
                }
            ),
        },
    }
)
STORED = _object({"face_token": TOKEN, "location": LOCATION})  # 人脸注册, 人脸更新
FACE_LIST = _object(
    {
        "face_list": {
            "type": "array",
            "minItems": 1,
            "items": _object(
                {
                    "face_token": TOKEN,
                    "ctime": {"type": "string", "pattern": r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d$"},
                }
            ),
        }
    }
)
USER_GET = _object(
    {
        "user_list": {
            "type": "array",
            "minItems": 1,
            "items": _object({"user_info": STRING, "group_id": ID}),
        }
    }
)
USER_LIST = _object({"user_id_list": {"type": "array", "items": ID, "maxItems": 1000}})
GROUP_LIST = _object({"group_id_list": {"type": "array", "items": ID, "maxItems": 1000}})
NULL: dict[str, Any] = {"type": "null"}  # 删除人脸, 复制用户, 删除用户, 创建/删除用户组

RESULTS: dict[str, dict[str, Any]] = {
    "face/detect": DETECT,
    "face/match": MATCH,
    "face/identify": IDENTIFY,
    "face/search": IDENTIFY,
    "face/multi-search": MULTI_SEARCH,
    "face/add": STORED,
    "face/update": STORED,
    "face/list": FACE_LIST,
    "face/getlist": FACE_LIST,
    "face/delete": NULL,
    "user/copy": NULL,
    "user/get": USER_GET,
    "user/list": USER_LIST,
    "group/getusers": USER_LIST,
    "user/delete": NULL,
    "group/add": NULL,
    "group/delete": NULL,
    "group/list": GROUP_LIST,
    "group/getlist": GROUP_LIST,
}

_ENVELOPE_COMMON: dict[str, Any] = {
    "error_code": {"type": "integer"},
    "error_msg": STRING,
    "log_id": {"type": "integer", "minimum": 10**12, "maximum": 10**13 - 1},  # 13 digits
    "timestamp": {"type": "integer", "minimum": 1_500_000_000},
    "cached": {"const": 0},
}


def envelope(result: dict[str, Any]) -> dict[str, Any]:
    """A successful answer whose `result` follows `result`."""
    return _object(
        {
            **_ENVELOPE_COMMON,
            "error_code": {"const": 0},
            "error_msg": {"const": "SUCCESS"},
            "result": result,
        },
        absent=("error_detail",),
    )


ERROR_ENVELOPE = _object(
    {
        **_ENVELOPE_COMMON,
        "error_code": {"type": "integer", "not": {"const": 0}},
        "result": NULL,
        "error_detail": {"type": "string", "minLength": 1},
    }
)


def check(route: str, env: Any) -> Any:
    """Validate a successful answer of `route` ("face/detect", an alias, ...); returns `result`."""
    jsonschema.validate(env, envelope(RESULTS[route]), cls=jsonschema.Draft202012Validator)
    return env["result"]


def check_error(env: Any, code: int, param: str | None = None) -> None:
    """An error answer: the envelope's shape, `code`, and the spec table's error_msg for it
    (`param`: the parameter a 222001 names)."""
    jsonschema.validate(env, ERROR_ENVELOPE, cls=jsonschema.Draft202012Validator)
    assert env["error_code"] == code, env
    assert env["error_msg"] == spec_message(code, param), env


def _spec_messages() -> dict[int, str]:
    """code -> error_msg from the 错误码 table at the end of the spec."""
    text = SPEC.read_text(encoding="utf-8")
    table = text[text.rindex("## 错误码") :]
    out = {}
    for m in re.finditer(r"^\|\s*(\d{6})\s*\|\s*([^|]*?)\s*\|", table, re.MULTILINE):
        out[int(m.group(1))] = m.group(2)
    return out


SPEC_MESSAGES = _spec_messages()
# Not in the private-deployment table: Baidu cloud's answer for a path that is no API method.
SPEC_MESSAGES[3] = "Unsupported openapi method"


def spec_message(code: int, param: str | None = None) -> str:
    """The table's text; 222001's "param[] is null" names the missing parameter in its brackets."""
    text = SPEC_MESSAGES[code]
    if code == 222001 and param:
        return f"param[{param}] is null"
    return text
