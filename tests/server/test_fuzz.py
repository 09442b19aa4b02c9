"""Fuzzing every route of a live server: schemathesis generates requests from the server's own
/openapi.json (valid and invalid ones), and hand-made garbage bodies go to every route under every
prefix. Whatever comes in, the answer is HTTP 200 with a v3 envelope that its documented response
schema accepts, never a 5xx, never 222302 (an exception the server did not foresee), and it comes.
Its code is one the route may give: a refusal names the route's own parameters, never another's.
"""

from __future__ import annotations

import json
import random
from typing import Any

import httpx
import pytest
import schemathesis
from facecore import errors
from facecore_server import params as P
from facecore_server.routes import OPS, PREFIXES, Op
from hypothesis import HealthCheck, given, settings
from live_server import Client
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.core.result import Ok
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

pytestmark = pytest.mark.slow

MESSAGES = {error.code: error.message for error in errors.sent()}  # every code the server sends
SYSTEM_ERROR = errors.InternalError.code
MISSING = errors.MissingParam.code

# Every POST route as the document lists it (canonical prefix), aliases included.
API_PATHS = [f"{PREFIXES[0]}/{path}" for op in OPS for path in (op.path, *op.aliases)]
ARRAY_PATHS = {f"{PREFIXES[0]}/{op.path}" for op in OPS if op.counts}
# Routes without a required parameter (group/list): an empty or all-null body is a valid request.
OPTIONAL_ONLY = {
    f"{PREFIXES[0]}/{path}"
    for op in OPS
    if not any(p.required for p in op.params)
    for path in (op.path, *op.aliases)
}

# What a generated request may be answered. Every route: 0, a missing parameter or the appid's
# format (222001, 222014), and the table's codes past the format checks (no face, no such group,
# liveness control without its models, ...; the format codes are 222001-222026). Beyond that, only
# the format codes of the route's own parameters (of face_token too where an image may be one),
# and the image count where the body is an array. Not the auth codes: auth is off.
APPID_FORMAT = 222014
IMAGE_COUNT = 222208
PAST_THE_CHECKS = {c for c in MESSAGES if c > 222200} - {SYSTEM_ERROR, IMAGE_COUNT}
OP_OF = {f"{PREFIXES[0]}/{path}": op for op in OPS for path in (op.path, *op.aliases)}


def may_answer(op: Op) -> set[int]:
    own = {p.code for p in op.params}
    if P.IMAGE in op.params:
        own.add(P.FACE_TOKEN.code)
    if op.counts:
        own.add(IMAGE_COUNT)
    return {0, MISSING, APPID_FORMAT} | own | PAST_THE_CHECKS


# The checks that apply to an API whose errors are HTTP 200 envelopes. Left out on purpose:
# negative_data_rejection (wants a 4xx for invalid input: here every refusal is HTTP 200 with an
# error_code, as Baidu's clients expect), positive_data_acceptance (only asks for a 2xx, which
# every answer is, so it proves nothing here), missing_required_header and ignored_auth (no
# headers or auth are declared), use_after_free and ensure_resource_availability (need OpenAPI
# links, which the document has none of), max_response_time (no timed assertions in tests).
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
]
FUZZ = settings(
    max_examples=25,
    deadline=None,
    database=None,  # no .hypothesis/ directory in the checkout
    suppress_health_check=list(HealthCheck),
    print_blob=True,
)


def check_envelope(r: httpx.Response | schemathesis.Response) -> dict[str, Any]:
    """The v3 envelope rules the response schema cannot express; returns the envelope."""
    assert r.status_code == 200, r.text[:500]
    if isinstance(r, httpx.Response):
        log_header = r.headers["X-Log-Id"]
    else:  # schemathesis: lowercase keys, list values
        (log_header,) = r.headers["x-log-id"]
    env: dict[str, Any] = r.json()
    code = env["error_code"]
    assert isinstance(code, int) and not isinstance(code, bool)
    assert code == 0 or code in MESSAGES, env
    assert code != SYSTEM_ERROR, f"an unforeseen exception reached the handler: {env}"
    assert isinstance(env["log_id"], int) and len(str(env["log_id"])) == 13
    assert log_header == str(env["log_id"])
    assert env["cached"] == 0 and isinstance(env["timestamp"], int)
    if code == 0:
        assert env["error_msg"] == "SUCCESS" and "error_detail" not in env
    else:
        assert env["result"] is None, env
        assert env["error_msg"] == MESSAGES[code] or (
            code == 222001 and env["error_msg"].startswith("param[")
        ), env
        assert isinstance(env["error_detail"], str) and env["error_detail"]
    return env


@pytest.fixture(scope="module")
def api_schema(server: Client) -> schemathesis.BaseSchema:
    return schemathesis.openapi.from_url(server.url + "/openapi.json", timeout=30)


def test_document_lists_every_route(api_schema: schemathesis.BaseSchema) -> None:
    loaded = list(api_schema.get_all_operations())
    assert all(isinstance(op, Ok) for op in loaded), loaded  # no operation schemathesis refused
    labels = {op.ok().label for op in loaded if isinstance(op, Ok)}
    assert {f"POST {p}" for p in API_PATHS} <= labels
    assert {"GET /face-api/v3/capabilities", "GET /health", "GET /metrics"} <= labels


@pytest.mark.parametrize("mode", [GenerationMode.POSITIVE, GenerationMode.NEGATIVE])
@pytest.mark.parametrize("path", API_PATHS)
def test_generated_requests(
    api_schema: schemathesis.BaseSchema, path: str, mode: GenerationMode
) -> None:
    operation = api_schema[path]["POST"]
    op = OP_OF[path]
    codes: set[int] = set()

    @FUZZ
    @given(operation.as_strategy(generation_mode=mode))
    def fuzz(case: schemathesis.Case[Any]) -> None:
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        code = check_envelope(response)["error_code"]
        # A refusal names this route's own parameters, never another route's.
        assert code in may_answer(op), (code, case.query, case.body)
        if mode == GenerationMode.POSITIVE:
            # The document's appid rule is the server's; a route that requires nothing succeeds
            # (the session code needs the liveness models, which this server lacks).
            assert code != APPID_FORMAT, (case.query, case.body)
            if path in OPTIONAL_ONLY and not path.endswith("/sessioncode"):
                assert code == 0, (code, case.body)
        codes.add(code)

    fuzz()
    if mode == GenerationMode.POSITIVE:
        # Past the request-level refusals: some answer came from the route's own checks, its work
        # or a success.
        assert codes - {MISSING, APPID_FORMAT}, (path, codes)
    else:
        assert codes - {0}, (path, codes)  # invalid requests were refused


@pytest.mark.parametrize("path", ["/face-api/v3/capabilities", "/health", "/metrics"])
def test_generated_get_requests(api_schema: schemathesis.BaseSchema, path: str) -> None:
    operation = api_schema[path]["GET"]

    @settings(FUZZ, max_examples=3)
    @given(operation.as_strategy())
    def fuzz(case: schemathesis.Case[Any]) -> None:
        response = case.call(timeout=30)
        case.validate_response(response, checks=CHECKS)
        if path.endswith("capabilities"):
            assert check_envelope(response)["error_code"] == 0

    fuzz()


def _nested(depth: int) -> bytes:
    return b'{"a":' * depth + b"1" + b"}" * depth


def garbage() -> list[tuple[str, bytes]]:
    """(name, raw body) pairs that no route can use."""
    rng = random.Random(20240607)
    unicode_ids = {
        "group_id": "группа",
        "user_id": "用户👤",
        "face_token": "ﬀ" * 32,
        "group_id_list": "g1,😀",
        "src_group_id": "ǅ",
        "dst_group_id": "\u0000",
        "image": "😀",
        "image_type": "ＢＡＳＥ６４",
    }
    every_field = sorted({p.name for op in OPS for p in op.params})
    return [
        ("empty", b""),
        ("random bytes", bytes(rng.randrange(256) for _ in range(4096))),
        ("invalid utf-8", b'{"group_id": "\xff\xfe"}'),
        ("lone surrogate", b'{"group_id": "\\ud800"}'),
        ("truncated", b'{"group_id": "g'),
        ("nested 100", _nested(100)),
        ("nested 5000", _nested(5000)),
        ("deep array", b"[" * 5000 + b"]" * 5000),
        ("json null", b"null"),
        ("json number", b"1e999"),
        ("json string", b'"image"'),
        ("array of objects", b"[{}, {}, {}]"),
        ("array of arrays", b"[[], []]"),
        ("unicode ids", json.dumps(unicode_ids, ensure_ascii=False).encode()),
        ("nulls", json.dumps(dict.fromkeys(every_field)).encode()),
        ("arrays", json.dumps({k: [k] for k in every_field}).encode()),
        ("objects", json.dumps({k: {"x": k} for k in every_field}).encode()),
        ("booleans", json.dumps(dict.fromkeys(every_field, True)).encode()),
        ("huge numbers", json.dumps(dict.fromkeys(every_field, 10**30)).encode()),
        ("huge floats", b"{" + b",".join(f'"{k}": 1e308'.encode() for k in every_field) + b"}"),
        ("negative", json.dumps(dict.fromkeys(every_field, -1)).encode()),
        ("digit strings", json.dumps(dict.fromkeys(every_field, "9" * 5000)).encode()),
        ("long strings", json.dumps(dict.fromkeys(every_field, "a" * 100_000)).encode()),
        ("control chars", json.dumps(dict.fromkeys(every_field, "\u0000\r\n\t")).encode()),
        ("duplicate keys", b'{"group_id": "a", "group_id": [1]}'),
    ]


GARBAGE = garbage()
# Bodies that are a JSON object (or nothing) setting none of the routes' parameters.
SETS_NOTHING = {"empty", "nested 100", "nulls", "unicode ids", "duplicate keys"}
NOT_JSON = {
    "random bytes",
    "invalid utf-8",
    "lone surrogate",
    "truncated",
    "nested 5000",
    "deep array",
}
# 1e999 is JSON (RFC 8259 sets no range; the server reads it as infinity): a number, not an object.
NOT_OBJECT = {"json null", "json string", "json number", "array of objects", "array of arrays"}


@pytest.mark.parametrize("path", API_PATHS)
def test_garbage_bodies(server: Client, path: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for name, raw in GARBAGE:
            r = http.post(path, params={"appid": "fuzz"}, content=raw)
            env = check_envelope(r)
            if path.endswith("/sessioncode") and name in SETS_NOTHING:
                assert env["error_code"] == 223119, (name, env)  # this server has no models
            elif path in OPTIONAL_ONLY and name in SETS_NOTHING:
                assert env["error_code"] == 0, (name, env)  # nothing it reads is set
            else:
                assert env["error_code"] != 0, (name, env)
            if name in NOT_JSON:
                assert env["error_code"] == 222001, (name, env)
            elif name in NOT_OBJECT:  # match/liveness want arrays of objects, the others one
                want = 222208 if path in ARRAY_PATHS else 222001
                if path.endswith("/face/liveness") and name == "array of objects":
                    want = 223119  # three objects is a valid count; this server has no models
                assert env["error_code"] == want, (name, env)


@pytest.mark.parametrize("prefix", PREFIXES)
def test_garbage_under_every_prefix(server: Client, prefix: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for op in OPS:
            for path in (op.path, *op.aliases):
                for name, raw in GARBAGE[:6]:
                    r = http.post(f"{prefix}/{path}", params={"appid": "a"}, content=raw)
                    env = check_envelope(r)
                    if name not in SETS_NOTHING or f"{PREFIXES[0]}/{path}" not in OPTIONAL_ONLY:
                        assert env["error_code"] != 0, (prefix, path, name, env)


@pytest.mark.parametrize(
    "appid",
    ["", "a" * 49, "../etc", "ключ", "a b", "a%00b", "@ALL", "all", "a,b", "\u202e"],
)
def test_garbage_appids(server: Client, appid: str) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for path in API_PATHS:
            env = check_envelope(http.post(path, params={"appid": appid}, json={}))
            expected = {222001} if appid == "" else {222014}
            assert env["error_code"] in expected, (path, appid, env)


def test_garbage_methods_and_paths(server: Client) -> None:
    with httpx.Client(base_url=server.url, timeout=30) as http:
        for method, path, status in [
            ("GET", API_PATHS[0], 405),
            ("PUT", API_PATHS[1], 405),
            ("DELETE", f"{PREFIXES[0]}/group/delete", 405),
            ("POST", f"{PREFIXES[0]}/face/nothing", 404),
            ("POST", "/face-api/v2/face/detect", 404),
            ("POST", "/" + "x" * 4000, 404),
        ]:
            r = http.request(method, path, params={"appid": "a"}, content=b"{}")
            assert r.status_code == status, (method, path, r.text)
            env = r.json()
            assert env["error_code"] == 3 and env["result"] is None
            assert len(str(env["log_id"])) == 13


def test_server_survived_the_fuzzing(server: Client) -> None:
    """Runs last in this module: the process is up, and nothing escaped into its log."""
    assert server.proc.poll() is None
    assert httpx.get(server.url + "/health", timeout=30).json()["status"] == "ok"
    log = server.server_log()
    assert "Traceback" not in log and "internal error" not in log, log[-3000:]
