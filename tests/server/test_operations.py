"""Running the service: overload, graceful shutdown, /metrics, /openapi.json, settings, access log.

(a) Past its queue the server refuses at once with 222901 instead of letting requests pile up.
(b) SIGTERM lets requests in flight (running and queued) finish, exits 0, and the library survives.
(c) /metrics is Prometheus text whose series agree with the requests made.
(d) /openapi.json is a valid OpenAPI 3.1 document that lists every route and matches the answers.
(e) Flags and FACECORE_* variables are honoured, flags over variables; bad values are refused.
(f) The access log has one JSON line per request, under the response's log_id, without images.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import facecore
import httpx
import jsonschema
import orjson
import pytest
from facecore_server.routes import CLOUD_PATHS, CLOUD_PREFIX, OPS, PREFIXES
from live_server import MISC, Client, b64, lfw, start_server
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def metrics(client: Client) -> Samples:
    r = httpx.get(client.url + "/metrics", timeout=30)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(r.text)
        for s in family.samples
    }


def sample(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def two_faces(client: Client, group: str) -> dict[str, str]:
    """Add two LFW people to `group`; user -> face_token."""
    out = {}
    for user, person in (("sorkin", "Aaron_Sorkin"), ("kiarostami", "Abbas_Kiarostami")):
        result = client.ok(
            "face/add",
            {"image": b64(lfw(person)), "image_type": "BASE64", "group_id": group, "user_id": user},
        )
        out[user] = result["face_token"]
    return out


def check_faces(client: Client, group: str, faces: dict[str, str]) -> None:
    for user, token in faces.items():
        listed = client.ok("face/list", {"group_id": group, "user_id": user})["face_list"]
        assert [f["face_token"] for f in listed] == [token]
        found = client.ok(
            "face/identify", {"image": token, "image_type": "FACE_TOKEN", "group_id_list": group}
        )["user_list"][0]
        assert found["user_id"] == user and found["score"] > 99.9


# ---------------------------------------------------------------------- (a) overload


@pytest.mark.slow
def test_overload_is_refused_quickly_with_system_busy(tmp_path: Path) -> None:
    server = start_server(tmp_path, "--workers", "1", "--max-queue", "4", "--queue-timeout", "0.5")
    try:
        url = server.url + "/face-api/v3/face/detect?appid=load"
        body = orjson.dumps({"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"})
        n = 64
        start = threading.Barrier(n)

        def one(_: int) -> tuple[dict[str, Any], float]:
            # The client is made before the start: building one costs the test process more
            # CPU than the server spends refusing a request.
            with httpx.Client(timeout=60) as http:
                start.wait()
                t0 = time.monotonic()
                r = http.post(url, content=body)
                seconds = time.monotonic() - t0
            assert r.status_code == 200, r.text
            return r.json(), seconds

        with ThreadPoolExecutor(n) as pool:
            answers = list(pool.map(one, range(n)))
        codes = [env["error_code"] for env, _ in answers]
        ok, busy = codes.count(0), codes.count(222901)
        assert ok >= 1 and busy >= 1 and ok + busy == n, codes
        for env, _ in answers:  # times are measured in bench/ (test_server.py), not asserted
            if env["error_code"] == 222901:
                assert env["error_msg"] == "system busy" and env["result"] is None
            else:
                assert env["result"]["face_num"] == 1
        # Still serving afterwards.
        again = server.ok(
            "face/detect", {"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"}
        )
        assert again["face_num"] == 1
        m = metrics(server)
        assert sample(m, "facecore_rejected_busy_total") == busy > 0
        assert (
            sample(m, "facecore_requests_total", route="face/detect", error_code="222901") == busy
        )
        assert sample(m, "facecore_requests_total", route="face/detect", error_code="0") == ok + 1
        assert sample(m, "facecore_queue_depth") == 0
    finally:
        assert server.stop() == 0


# ---------------------------------------------------------------------- (b) graceful shutdown


@pytest.mark.slow
def test_sigterm_lets_requests_in_flight_finish(tmp_path: Path) -> None:
    flags = ("--workers", "1", "--queue-timeout", "60", "--shutdown-timeout", "60")
    server = start_server(tmp_path, *flags)
    try:
        faces = two_faces(server, "keep")
        # Two slow requests (a crowd, ten faces with every field): one runs, one waits.
        body = {
            "image": b64(MISC / "lumia.jpg"),
            "image_type": "BASE64",
            "max_face_num": 10,
            "face_field": "age,gender,expression,emotion,landmark,eye_status,quality",
        }
        with ThreadPoolExecutor(2) as pool:
            pending = [pool.submit(server.post, "face/detect", body, timeout=120) for _ in range(2)]
            deadline = time.monotonic() + 60
            while True:
                m = metrics(server)
                running = sample(m, "facecore_requests_running")
                if (running, sample(m, "facecore_queue_depth")) == (1, 1):
                    break
                assert time.monotonic() < deadline, "the two requests never got in flight"
                assert not any(p.done() for p in pending), [p.result() for p in pending]
                time.sleep(0.02)
            server.proc.send_signal(signal.SIGTERM)
            answers = [p.result() for p in pending]
        for env in answers:  # complete envelopes, not cut connections
            assert env["error_code"] == 0, env
            assert env["result"]["face_num"] == 10
            assert all("landmark72" in f for f in env["result"]["face_list"])
        assert server.proc.wait(timeout=60) == 0, server.server_log()[-3000:]
    finally:
        server.stop()
    restarted = start_server(tmp_path, *flags)
    try:
        check_faces(restarted, "keep", faces)
    finally:
        assert restarted.stop() == 0


# ---------------------------------------------------------------------- (c) /metrics


def test_metrics_agree_with_the_requests(server: Client) -> None:
    before = metrics(server)
    faces = two_faces(server, "ops_metrics")
    server.ok("face/detect", {"image": b64(lfw("Aaron_Sorkin")), "image_type": "BASE64"})
    env = server.post("group/list", {"length": 0})
    assert env["error_code"] == 222003
    after = metrics(server)

    def delta(name: str, **labels: str) -> float:
        return sample(after, name, **labels) - sample(before, name, **labels)

    assert delta("facecore_requests_total", route="face/add", error_code="0") == 2
    assert delta("facecore_requests_total", route="face/detect", error_code="0") == 1
    assert delta("facecore_requests_total", route="group/list", error_code="222003") == 1
    for route in ("face/add", "face/detect", "group/list"):
        count = sample(after, "facecore_request_seconds_count", route=route)
        total = sum(
            v
            for (name, labels), v in after.items()
            if name == "facecore_requests_total" and ("route", route) in labels
        )
        assert count == total > 0
        assert sample(after, "facecore_request_seconds_bucket", route=route, le="+Inf") == count
        assert sample(after, "facecore_request_seconds_sum", route=route) > 0
    for model in ("mtcnn_pnet", "recognizer"):  # every detect runs these
        assert delta("facecore_batch_items_count", model=model) >= 3
        assert delta("facecore_batch_items_sum", model=model) >= 3
    assert (
        sample(after, "facecore_group_faces", appid=server.appid, group="ops_metrics")
        == len(faces)
        == 2
    )
    assert sample(after, "facecore_queue_depth") == 0
    assert ("facecore_queue_depth", frozenset()) in after
    assert sample(after, "facecore_up") == 1


# ---------------------------------------------------------------------- (d) /openapi.json


def _schemas(node: Any) -> Iterator[dict[str, Any]]:
    """Every `schema` object in the document."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "schema" and isinstance(value, dict):
                yield value
            else:
                yield from _schemas(value)
    elif isinstance(node, list):
        for value in node:
            yield from _schemas(value)


@pytest.fixture(scope="module")
def document(server: Client) -> dict[str, Any]:
    r = httpx.get(server.url + "/openapi.json", timeout=30)
    assert r.status_code == 200
    doc: dict[str, Any] = r.json()
    return doc


def test_openapi_is_valid(document: dict[str, Any]) -> None:
    # openapi-spec-validator is not a dependency; schemathesis ships the OpenAPI Initiative's
    # own JSON Schema of the 3.1 format, which is what that validator checks against too.
    from schemathesis.specs.openapi.definitions import OPENAPI_31

    assert re.fullmatch(r"3\.1\.\d+", document["openapi"])
    jsonschema.Draft202012Validator(OPENAPI_31).validate(document)
    assert document["info"]["version"] == facecore.__version__
    schemas = list(_schemas(document))
    assert len(schemas) > 2 * len(OPS)
    for schema in schemas:
        jsonschema.Draft202012Validator.check_schema(schema)
    ids = [op["operationId"] for item in document["paths"].values() for op in item.values()]
    assert len(ids) == len(set(ids))


def test_openapi_lists_every_route_with_its_parameters(document: dict[str, Any]) -> None:
    paths = document["paths"]
    expected = {f"{PREFIXES[0]}/{p}" for op in OPS for p in (op.path, *op.aliases)}
    expected |= {f"{CLOUD_PREFIX}/{p}" for p in CLOUD_PATHS}
    assert {p for p, item in paths.items() if "post" in item} == expected
    assert {p for p, item in paths.items() if "get" in item} == {
        f"{PREFIXES[0]}/capabilities",
        "/health",
        "/metrics",
        "/oauth/2.0/token",
    }
    for cloud, private in CLOUD_PATHS.items():  # the public-cloud path of a route: its twin
        twin = paths[f"{PREFIXES[0]}/{private}"]["post"]
        post = paths[f"{CLOUD_PREFIX}/{cloud}"]["post"]
        assert post["requestBody"] == twin["requestBody"]
        assert post["responses"] == twin["responses"]
    assert set(document["components"]["securitySchemes"]) == {
        "accessToken",
        "apiKey",
        "secretKey",
    }
    for op in OPS:
        for path in (op.path, *op.aliases):
            post = paths[f"{PREFIXES[0]}/{path}"]["post"]
            (appid,) = post["parameters"]
            assert (appid["name"], appid["in"], appid["required"]) == ("appid", "query", True)
            body = post["requestBody"]["content"]["application/json"]["schema"]
            if op.counts:
                assert body["type"] == "array"
                assert (body["minItems"], body["maxItems"]) == (min(op.counts), max(op.counts))
                body = body["items"]
            assert set(body["properties"]) == {p.name for p in op.params}
            assert body["required"] == [p.name for p in op.params if p.required]
            envelope = post["responses"]["200"]["content"]["application/json"]["schema"]
            assert set(envelope["required"]) == {
                "error_code",
                "error_msg",
                "log_id",
                "timestamp",
                "cached",
                "result",
            }


def test_openapi_schemas_accept_real_answers(server: Client, document: dict[str, Any]) -> None:
    """A success with every field, and errors, validate against the documented envelopes."""

    def envelope_schema(path: str) -> dict[str, Any]:
        post = document["paths"][f"{PREFIXES[0]}/{path}"]["post"]
        schema: dict[str, Any] = post["responses"]["200"]["content"]["application/json"]["schema"]
        return schema

    fields = "age,gender,expression,emotion,landmark,eye_status,quality,feature,angle"
    answers = [
        (
            "face/detect",
            server.post(
                "face/detect",
                {
                    "image": b64(MISC / "obama_and_biden.jpg"),
                    "image_type": "BASE64",
                    "max_face_num": 10,
                    "face_field": fields,
                },
            ),
        ),
        ("face/detect", server.post("face/detect", {"image": "!", "image_type": "BASE64"})),
        ("group/list", server.post("group/list", {})),
        ("user/get", server.post("user/get", {"group_id": "@ALL", "user_id": "nobody"})),
    ]
    assert answers[0][1]["result"]["face_num"] >= 2
    for path, env in answers:
        jsonschema.Draft202012Validator(envelope_schema(path)).validate(env)
    # The document is not vacuous: it refuses a wrong answer.
    wrong = dict(answers[0][1], log_id=12)
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.Draft202012Validator(envelope_schema("face/detect")).validate(wrong)


# ---------------------------------------------------------------------- (e) settings


def test_missing_appid_without_a_default(server: Client) -> None:
    r = httpx.post(server.url + "/face-api/v3/group/list", json={}, timeout=30)
    env = r.json()
    assert env["error_code"] == 222001 and env["error_msg"] == "param[appid] is null"


def test_flags_and_environment(tmp_path: Path) -> None:
    env = {
        "FACECORE_DEFAULT_APPID": "from_env",
        "FACECORE_MAX_BODY": "4096",
        "FACECORE_WORKERS": "3",
        "FACECORE_BATCH_MAX": "3",  # overridden by the flag below
        "FACECORE_DATA": str(tmp_path / "not_used"),  # overridden by --data (start_server)
        "FACECORE_ACCESS_LOG": "off",
    }
    server = start_server(tmp_path, "--batch-max", "5", "--token-days", "7", env=env)
    try:
        health = httpx.get(server.url + "/health", timeout=30).json()
        assert health["workers"] == 3 and health["data_dir"] == str(server.data)
        caps = httpx.get(server.url + "/face-api/v3/capabilities", timeout=30).json()["result"]
        assert caps["limits"]["max_body_bytes"] == 4096 and caps["limits"]["token_days"] == 7
        assert caps["batching"] == {"max_batch": 5, "max_wait_ms": 0.0, "workers": 3}
        assert caps["backend"]["backend"] == "onnxruntime"
        # No ?appid: the default tenant, the same library as ?appid=from_env.
        url = server.url + "/face-api/v3/"
        r = httpx.post(url + "group/add", json={"group_id": "g_default"}, timeout=30)
        assert r.json()["error_code"] == 0
        assert server.ok("group/list", {}, appid="from_env")["group_id_list"] == ["g_default"]
        assert server.ok("group/list", {}, appid="other")["group_id_list"] == []
        # With a default appid, the document makes appid optional.
        doc = httpx.get(server.url + "/openapi.json", timeout=30).json()
        (appid,) = doc["paths"]["/face-api/v3/group/list"]["post"]["parameters"]
        assert appid["required"] is False
        # FACECORE_MAX_BODY: a body over 4096 bytes is refused.
        env_big = server.post("group/list", {"pad": "x" * 5000})
        assert env_big["error_code"] == 222013, env_big
        # FACECORE_ACCESS_LOG=off: no access log lines.
        assert not [line for line in server.server_log().splitlines() if line.startswith("{")]
    finally:
        assert server.stop() == 0


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--workers", "-1"], {}, "--workers must be >= 0"),
        (["--max-queue", "0"], {}, "--max-queue must be >= 1"),
        (["--queue-timeout", "0"], {}, "--queue-timeout must be > 0"),
        (
            ["--default-appid", "bad-id"],
            {},
            "--default-appid must be 1-48 characters of [A-Za-z0-9_], got 'bad-id'",
        ),
        (["--default-appid", "all"], {}, "--default-appid 'all' is a reserved word"),
        (
            ["--store", "mysql://x@y/z"],
            {},
            "--store must be rocksdb or a postgresql://user@host:port/db URL, got 'mysql://x@y/z'",
        ),
        (["--log-level", "loud"], {}, "--log-level must be critical|error|warning|info|debug"),
        (["--access-log", "maybe"], {}, "expected on or off, got 'maybe'"),
        (["--workers", "two"], {}, "argument --workers: invalid int value: 'two'"),
        (["--no-such-flag"], {}, "unrecognized arguments: --no-such-flag"),
        ([], {"FACECORE_WORKERS": "abc"}, "FACECORE_WORKERS='abc' is not a valid --workers"),
        ([], {"FACECORE_SYNC_WRITES": "maybe"}, "FACECORE_SYNC_WRITES='maybe' is not a valid"),
        ([], {"FACECORE_PORT": "0"}, "--port must be in 1..65535, got 0"),
    ],
)
def test_bad_settings_are_refused(args: list[str], env: dict[str, str], message: str) -> None:
    port = [] if "FACECORE_PORT" in env else ["--port", "8399"]  # never bound: refused first
    out = subprocess.run(
        [sys.executable, "-m", "facecore_server", *port, *args],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert out.returncode == 2, out.stderr
    assert message in out.stderr, out.stderr
    assert "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1].startswith("facecore-server: error:")


# ---------------------------------------------------------------------- (f) access log


def test_access_log_has_one_line_per_request_and_no_images(server: Client) -> None:
    image = b64(lfw("Abbas_Kiarostami"))
    sent = [
        ("face/detect", {"image": image, "image_type": "BASE64"}, 0),
        ("face/detect", {"image": image, "image_type": "FACE_TOKEN"}, 222025),
        ("face/detect", {"image": image, "image_type": image}, 222015),
        ("face/match", [{"image": image, "image_type": "BASE64"}] * 2, 0),
        ("user/get", {"group_id": "@ALL", "user_id": "nobody"}, 223103),
    ]
    ids: dict[int, tuple[str, int]] = {}
    for route, body, code in sent:
        env = server.post(route, body)
        assert env["error_code"] == code, env
        ids[env["log_id"]] = (f"/face-api/v3/{route}", code)
    r = httpx.post(server.url + "/face-api/v3/no/such", params={"appid": "a"}, timeout=30)
    ids[r.json()["log_id"]] = ("/face-api/v3/no/such", 3)

    log = server.server_log()
    lines = [json.loads(line) for line in log.splitlines() if line.startswith("{")]
    for log_id, (path, code) in ids.items():
        mine = [line for line in lines if line["log_id"] == log_id]
        assert len(mine) == 1, (log_id, mine)
        (line,) = mine
        assert line["path"] == path and line["error_code"] == code and line["method"] == "POST"
        assert line["status"] == (404 if code == 3 else 200)
        assert line["appid"] == (None if code == 3 else server.appid)
        assert line["ms"] >= 0 and (line["bytes_in"] > 0) == (code != 3)
    # Not one 40-character piece of the image anywhere in the log (nor in an error_detail).
    pieces = {image[i : i + 40] for i in range(0, len(image) - 40, 997)}
    assert not [p for p in pieces if p in log]
