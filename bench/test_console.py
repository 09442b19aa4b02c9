"""The console's library page on a group of 100,000 users, measured from the server: one page of
users with their faces and user_info (GET /console/api/users, what the page asks for) beside the
plain v3 user/list of the same page (POST /face-api/v3/group/getusers), on one live server, one
keep-alive request at a time; the server on the embedded RocksDB, then on PostgreSQL (--store,
a throwaway cluster on loopback; skipped where none can be started), where every read of the
library is a round trip.

Pages: the first (start 0) and the last (start 99,950): user/list pages by skipping the group's
users in key order, so the last page is the dearest. The group is filled through the library's
Python API (face_add_many, synthetic unit vectors, one face per user) before the server starts.
Every answer is checked: the page's user ids, and for the console each user's face token and
user_info. The ratio console / v3 of the median round is reported with each console arm.
"""

from __future__ import annotations

import http.client
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.pg_cluster import Cluster
from tests.server.live_server import Client, start_server

APPID = "bench_console"
GROUP = "big"
USERS = 100_000
PAGE = 50  # the library page's page (python/server/static/js/library.js, USERS_PAGE)
ROUNDS = 300
BATCH = 1000
STARTS = {"first": 0, "last": USERS - PAGE}
medians: dict[tuple[str, str, str], float] = {}


def user(i: int) -> str:
    return f"u{i:06d}"  # zero-padded: key order is number order


def token(i: int) -> str:
    return f"{i:032x}"


def fill(data: Path, url: str | None) -> None:
    from facecore.store.library import FaceLibrary, NewFace
    from facecore.store.postgres import PostgresStore

    rng = np.random.default_rng(18)
    with FaceLibrary(data, store=PostgresStore(url) if url else None) as lib:
        for s in range(0, USERS, BATCH):
            emb = rng.standard_normal((BATCH, 128)).astype(np.float32)
            emb /= np.linalg.norm(emb, axis=1, keepdims=True)
            items = [
                (user(i), NewFace(token(i), emb[i - s]), f"user {i}") for i in range(s, s + BATCH)
            ]
            out = lib.face_add_many(APPID, GROUP, items)
            assert not [r for r in out if isinstance(r, Exception)]
        assert lib.stats()["groups"][f"{APPID}/{GROUP}"] == USERS


@pytest.fixture(scope="module", params=["rocksdb", "postgresql"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, Client]]:
    """(the store, a server on it) with the group filled before the server starts."""
    home = tmp_path_factory.mktemp("console-bench")
    cluster = None
    url = None
    if request.param == "postgresql":
        why = Cluster.find()
        if why is not None:
            pytest.skip(why)
        cluster = Cluster.start()
        url = cluster.database("console")
    try:
        fill(home / "data", url)
        flags = ("--store", url) if url else ()
        client = start_server(home, "--access-log", "off", *flags, threads=0)
        try:
            yield request.param, client
        finally:
            client.stop()
    finally:
        if cluster is not None:
            cluster.stop()


class Arm:
    """One kind of request for one page, on its own keep-alive connection."""

    def __init__(self, server: Client, arm: str, start: int) -> None:
        self.conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
        self.arm, self.start = arm, start

    def call(self) -> dict[str, Any]:
        if self.arm == "v3":
            body = json.dumps({"group_id": GROUP, "start": self.start, "length": PAGE})
            path = f"/face-api/v3/group/getusers?appid={APPID}"
            self.conn.request("POST", path, body, {"Content-Type": "application/json"})
        else:
            query = f"appid={APPID}&group_id={GROUP}&start={self.start}&length={PAGE}"
            self.conn.request("GET", f"/console/api/users?{query}")
        answer: dict[str, Any] = json.loads(self.conn.getresponse().read())
        return answer

    def check(self, answer: dict[str, Any]) -> None:
        assert answer["error_code"] == 0, answer
        wanted = [user(i) for i in range(self.start, self.start + PAGE)]
        if self.arm == "v3":
            assert answer["result"]["user_id_list"] == wanted
            return
        users = answer["result"]["user_list"]
        assert [u["user_id"] for u in users] == wanted
        for i, u in zip(range(self.start, self.start + PAGE), users):
            assert [f["face_token"] for f in u["face_list"]] == [token(i)]
            assert u["user_info"] == f"user {i}"


@pytest.mark.parametrize("page", list(STARTS))
@pytest.mark.parametrize("arm", ["v3", "console"])
def test_users_page(benchmark: Any, served: tuple[str, Client], arm: str, page: str) -> None:
    store, server = served
    a = Arm(server, arm, STARTS[page])
    a.check(a.call())
    answers: list[dict[str, Any]] = []
    benchmark.pedantic(
        lambda: answers.append(a.call()), rounds=ROUNDS, iterations=1, warmup_rounds=20
    )
    a.conn.close()
    for answer in answers:
        a.check(answer)
    medians[(store, arm, page)] = benchmark.stats.stats.median
    benchmark.extra_info.update(store=store, arm=arm, page=page, users=USERS, length=PAGE)
    if arm == "console" and (store, "v3", page) in medians:
        ratio = medians[(store, "console", page)] / medians[(store, "v3", page)]
        benchmark.extra_info["ratio_to_v3_median"] = round(ratio, 2)
