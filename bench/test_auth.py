"""What authentication adds to a request: one server with --auth off (the baseline: no
credential, ?appid=) and one with --auth required, credentials as an access token (the SDK's way)
or as the X-Api-Key / X-Secret-Key pair (checked once with scrypt, then from the server's cache).

The route is group/list on a small library, the cheapest model-free request, so that the auth step
is as large a part of the latency as it can be. One keep-alive connection, one request at a time;
each timed round is one request. Every answer is checked: error code 0 and the key's own groups.
The difference of the medians to the baseline is the cost of auth (target: under 1 ms).
"""

from __future__ import annotations

import asyncio
import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from facecore.store.keys import STORE_DIR, KeyStore
from facecore_server.auth import Auth, FailureLimiter
from starlette.requests import Request

from tests.server.live_server import Client, start_server

ROUNDS = 3000
APPID = "bench_auth"
GROUPS = [f"g{i}" for i in range(5)]


class Arm:
    def __init__(self, server: Client, query: str, headers: dict[str, str]) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.path = f"/face-api/v3/group/list?{query}"
        self.headers = {"Content-Type": "application/json", **headers}

    def call(self) -> dict[str, Any]:
        self.conn.request("POST", self.path, body=b"{}", headers=self.headers)
        answer: dict[str, Any] = json.loads(self.conn.getresponse().read())
        return answer


@pytest.fixture(scope="module")
def arms(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Arm]]:
    servers, out = [], {}
    try:
        for mode in ("off", "required"):
            data = tmp_path_factory.mktemp(f"auth-{mode}") / "data"
            store = KeyStore(data / STORE_DIR)
            key, secret = store.create(APPID, "bench")
            token = store.issue(key).access_token
            store.close()
            server = start_server(data.parent, "--auth", mode, "--access-log", "off", threads=0)
            servers.append(server)
            setup = Arm(server, f"access_token={token}", {})
            for group in GROUPS:
                setup.conn.request(
                    "POST",
                    f"/face-api/v3/group/add?access_token={token}",
                    body=json.dumps({"group_id": group}),
                    headers=setup.headers,
                )
                assert json.loads(setup.conn.getresponse().read())["error_code"] == 0
            setup.conn.close()
            if mode == "off":
                out["off"] = Arm(server, f"appid={APPID}", {})
            else:
                out["token"] = Arm(server, f"access_token={token}", {})
                pair = {"X-Api-Key": key.api_key, "X-Secret-Key": secret}
                out["key-headers"] = Arm(server, "", pair)
        yield out
    finally:
        for a in out.values():
            a.conn.close()
        for server in servers:
            server.stop()


@pytest.mark.parametrize("arm", ["off", "token", "key-headers"])
def test_auth_overhead(benchmark: Any, arms: dict[str, Arm], arm: str) -> None:
    a = arms[arm]
    first = a.call()  # warm: the connection, and for key-headers the one scrypt check
    assert first["error_code"] == 0, first
    answers: list[dict[str, Any]] = []

    def call() -> None:
        answers.append(a.call())

    benchmark.pedantic(call, rounds=ROUNDS, iterations=1, warmup_rounds=50)
    assert all(x["error_code"] == 0 for x in answers)
    assert all(x["result"]["group_id_list"] == GROUPS for x in answers)
    benchmark.extra_info.update(route="group/list", arm=arm, answers=len(answers))


# ---------------------------------------------------------------------------- the step alone

PER_ROUND = 100


def request(query: str, headers: dict[str, str]) -> Request:
    scope = {
        "type": "http",
        "method": "POST",
        "path": "/face-api/v3/group/list",
        "query_string": query.encode(),
        "headers": [(k.lower().encode(), v.encode()) for k, v in headers.items()],
        "client": ("127.0.0.1", 40000),
    }
    return Request(scope)


@pytest.mark.parametrize("arm", ["off", "token", "key-headers"])
def test_auth_step(benchmark: Any, tmp_path: Path, arm: str) -> None:
    """Auth.caller alone, in-process, PER_ROUND requests a round (fresh Request objects, so
    nothing is cached in them): "off" is what --auth off does with a request that has no
    credential."""
    store = KeyStore(tmp_path / STORE_DIR)
    key, secret = store.create(APPID)
    token = store.issue(key).access_token
    auth = Auth(store, arm != "off", FailureLimiter(20, 100, 60))
    query, headers = {
        "off": (f"appid={APPID}", {}),
        "token": (f"access_token={token}", {}),
        "key-headers": ("", {"X-Api-Key": key.api_key, "X-Secret-Key": secret}),
    }[arm]
    loop = asyncio.new_event_loop()
    seen: list[str | None] = []

    async def batch() -> None:
        for _ in range(PER_ROUND):
            seen.append(await auth.caller(request(query, headers)))

    try:
        loop.run_until_complete(batch())  # the one scrypt check of key-headers happens here
        benchmark.pedantic(
            lambda: loop.run_until_complete(batch()), rounds=200, iterations=1, warmup_rounds=5
        )
    finally:
        loop.close()
        store.close()
    assert set(seen) == ({None} if arm == "off" else {APPID})
    benchmark.extra_info.update(arm=arm, requests_per_round=PER_ROUND)
