"""The shared store (PostgreSQL, `--store postgresql://...`) beside the embedded one (RocksDB), in
one run, so that the ratios are what we quote: add throughput (single `face_add`, and
`face_add_many` in batches of 1000), identify latency (100k faces, one group, one query a call),
the replication lag from a write on one instance to its index on another, and the start-up load of
a 1M-face library.

PostgreSQL runs as a throwaway cluster on loopback (tests/pg_cluster.py) with fsync ON and the
distribution's other defaults, on the same machine as the benchmark (which shares its cores).
Embeddings are random unit vectors, d = 128; face i is user u{i} with token {i:032x}; queries are
stored faces plus noise (cosine ~0.995), and every benchmark checks the top-1 user of its answers.

- add: fresh libraries; N_MANY faces through face_add_many, N_SINGLE through face_add;
- identify: a library of N_IDENTIFY faces built once per store; max_user_num 1; on a shared store
  every identify also reads the change log's last number (to answer every acknowledged write);
  then the same PostgreSQL instance again with its database SIGKILLed (identify from memory:
  owners.py, the int8 index's scores);
- lag: two instances over one database; A adds one face at a time, and the time from A's answer
  to B's index holding the face is recorded (B applies it by itself: LISTEN/NOTIFY, 0.5 s poll);
- load: N_LOAD faces written straight into each store (the keys the library writes, no images),
  then the library opened: PostgreSQL loads one snapshot by binary COPY; RocksDB (no index
  snapshot) rebuilds by its prefix scan. In-process, warm page cache.

`FACECORE_BENCH_LOAD_N` shrinks the load (to try the suite out quickly).
"""

from __future__ import annotations

import json
import os
import struct
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from tests.pg_cluster import Cluster

DIM = 128
APPID = "bench"
N_MANY = 20_000
N_SINGLE = 1_000
N_IDENTIFY = 100_000
N_LOAD = int(os.environ.get("FACECORE_BENCH_LOAD_N", "1000000"))
LAG_WRITES = 300
BATCH = 1000
QUERIES = 300
MIN_TOP1 = 0.99
STORES = ("rocksdb", "postgresql")


def unit(n: int, seed: int) -> np.ndarray:
    x = np.random.default_rng(seed).standard_normal((n, DIM), dtype=np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def queries_of(base: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows = rng.choice(base.shape[0], QUERIES, replace=False)
    q = base[rows] + rng.standard_normal((QUERIES, DIM), dtype=np.float32) * np.float32(0.1 / 11.3)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return rows, q.astype(np.float32)


def user(i: int) -> str:
    return f"u{i:07d}"


def token(i: int) -> str:
    return f"{i:032x}"


@pytest.fixture(scope="module")
def cluster() -> Iterator[Cluster]:
    why = Cluster.find()
    if why is not None:
        pytest.skip(why)
    c = Cluster.start(fsync=True)
    try:
        yield c
    finally:
        c.stop()


def library(store: str, path: Path, cluster: Cluster, url: str | None = None) -> Any:
    from facecore.store.library import FaceLibrary
    from facecore.store.postgres import PostgresStore

    if store == "rocksdb":
        return FaceLibrary(path)
    return FaceLibrary(path, store=PostgresStore(url or cluster.database("bench")))


def add_many(lib: Any, group: str, base: np.ndarray, start: int, stop: int) -> None:
    from facecore.store.library import NewFace

    for s in range(start, stop, BATCH):
        items = [
            (user(i), NewFace(token(i), base[i]), None) for i in range(s, min(stop, s + BATCH))
        ]
        assert not [r for r in lib.face_add_many(APPID, group, items) if isinstance(r, Exception)]


def top1(lib: Any, group: str, q: np.ndarray, rows: np.ndarray, n: int = 100) -> float:
    got = [lib.identify(APPID, [group], q[i])[0].user_id for i in range(n)]
    return float(np.mean([g == user(int(rows[i])) for g, i in zip(got, range(n))]))


# --------------------------------------------------------------------------- add


@pytest.mark.benchmark(group="shared store: add")
@pytest.mark.parametrize("store", STORES)
@pytest.mark.parametrize("call", ["add_many", "add_single"])
def test_store_add(benchmark: Any, cluster: Cluster, tmp_path: Path, store: str, call: str) -> None:
    from facecore.store.library import NewFace

    n = N_MANY if call == "add_many" else N_SINGLE
    base = unit(n, 1)
    lib = library(store, tmp_path / "lib", cluster)

    def add() -> None:
        if call == "add_many":
            add_many(lib, "g", base, 0, n)
        else:
            for i in range(n):
                lib.face_add(APPID, "g", user(i), NewFace(token(i), base[i]))

    try:
        benchmark.pedantic(add, rounds=1, iterations=1, warmup_rounds=0)
        assert lib.stats()["faces"] == n
        rows, q = queries_of(base, 2)
        correct = top1(lib, "g", q, rows)
    finally:
        lib.close()
    seconds = benchmark.stats.stats.mean
    benchmark.extra_info.update(
        kind="shared-add", store=store, call=call, faces=n, faces_per_s=n / seconds,
        top1_correct=correct,
    )  # fmt: skip
    assert correct >= MIN_TOP1


# --------------------------------------------------------------------------- identify


@pytest.fixture(scope="module")
def identify_libs(
    cluster: Cluster, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[dict[str, Any]]:
    base = unit(N_IDENTIFY, 3)
    libs = {}
    for store in STORES:
        libs[store] = library(store, tmp_path_factory.mktemp(f"identify-{store}"), cluster)
        add_many(libs[store], "g", base, 0, N_IDENTIFY)
    libs["queries"] = queries_of(base, 4)
    try:
        yield libs
    finally:
        for store in STORES:
            libs[store].close()


@pytest.mark.benchmark(group="shared store: identify, 100k faces, 1 group, 1 query a call")
@pytest.mark.parametrize("store", [*STORES, "postgresql-down"])
def test_store_identify(
    benchmark: Any, identify_libs: dict[str, Any], cluster: Cluster, store: str
) -> None:
    down = store == "postgresql-down"
    lib = identify_libs["postgresql" if down else store]
    rows, q = identify_libs["queries"]
    answers: list[str] = []

    def one() -> None:
        answers.append(lib.identify(APPID, ["g"], q[len(answers) % QUERIES])[0].user_id)

    if down:
        cluster.kill()
    try:
        benchmark.pedantic(one, rounds=QUERIES, iterations=1, warmup_rounds=5)
    finally:
        if down:
            cluster.restart()
    asked = [i % QUERIES for i in range(5, 5 + QUERIES)]  # after the warm-up rounds
    correct = float(np.mean([a == user(int(rows[i])) for a, i in zip(answers[5:], asked)]))
    benchmark.extra_info.update(kind="shared-identify", store=store, top1_correct=correct)
    assert correct >= MIN_TOP1


# --------------------------------------------------------------------------- replication lag


def until(done: Callable[[], bool], what: str, seconds: float = 60) -> None:
    """Spin until `done()`, failing after `seconds` (B never applied A's write) instead of
    spinning forever."""
    deadline = time.monotonic() + seconds
    while not done():
        assert time.monotonic() < deadline, f"B did not apply {what} within {seconds:g} s"
        time.sleep(0.0002)


@pytest.mark.benchmark(group="shared store: replication lag (a write on A, visible on B)")
def test_replication_lag(benchmark: Any, cluster: Cluster, tmp_path: Path) -> None:
    from facecore.store.library import NewFace

    url = cluster.database("lag")
    a = library("postgresql", tmp_path / "a", cluster, url)
    b = library("postgresql", tmp_path / "b", cluster, url)
    base = unit(LAG_WRITES, 5)
    lags: list[float] = []
    try:
        a.face_add(APPID, "g", "warm", NewFace(uuid.uuid4().hex, unit(1, 6)[0]))
        until(lambda: (APPID, "g") in b._groups, "the group's creation")
        g = b._groups[(APPID, "g")]

        def one() -> None:
            i = len(lags)
            a.face_add(APPID, "g", user(i), NewFace(token(i), base[i]))
            t0 = time.perf_counter()
            until(lambda: len(g.index) >= i + 2, f"write {i}")  # B's follower; nothing asks it
            lags.append(time.perf_counter() - t0)
            time.sleep(0.005)  # writes a few ms apart, as separate clients' would be

        benchmark.pedantic(one, rounds=LAG_WRITES, iterations=1, warmup_rounds=0)
        rows, q = queries_of(base, 7)
        correct = top1(b, "g", q, rows, n=50)
    finally:
        a.close()
        b.close()
    ms = np.array(lags) * 1000
    benchmark.extra_info.update(
        kind="shared-lag", writes=len(lags), lag_ms_p50=float(np.percentile(ms, 50)),
        lag_ms_p95=float(np.percentile(ms, 95)), lag_ms_p99=float(np.percentile(ms, 99)),
        lag_ms_max=float(ms.max()), top1_correct=correct,
    )  # fmt: skip
    assert correct >= MIN_TOP1


# --------------------------------------------------------------------------- start-up load


def records(n: int, base: np.ndarray) -> Iterator[tuple[bytes, bytes]]:
    """The keys face_add writes for faces [0, n) of group "g" (no images), in no key order."""
    from facecore.store import codec

    ctime = int(time.time())
    yield codec.group_key(APPID, "g").encode(), codec.group_value(ctime)
    info = json.dumps({"user_info": "", "ctime": ctime}).encode()
    box = (0.0, 0.0, 0.0, 0.0)
    for i in range(n):
        u, t = user(i), token(i)
        yield codec.user_key(APPID, "g", u).encode(), info
        yield codec.face_key(APPID, "g", u, t).encode(), codec.FACE.pack(i, ctime, *box)
        yield codec.token_key(APPID, "g", t).encode(), codec.ROW.pack(i) + u.encode()
        yield codec.row_key(APPID, "g", i).encode(), codec.row_value(base[i], t, u)


def fill_postgres(url: str, n: int, base: np.ndarray) -> None:
    """The records by one binary COPY into facecore_library (schema made by a store first)."""
    import psycopg
    from facecore.store.postgres import PostgresStore

    PostgresStore(url).close()
    head = b"PGCOPY\n\xff\r\n\0" + struct.pack(">ii", 0, 0)
    with psycopg.connect(url, autocommit=True) as conn, conn.cursor() as cur:
        with cur.copy("COPY facecore_library (key, value) FROM STDIN (FORMAT BINARY)") as copy:
            copy.write(head)
            chunk: list[bytes] = []
            for k, v in records(n, base):
                chunk.append(struct.pack(">hi", 2, len(k)) + k + struct.pack(">i", len(v)) + v)
                if len(chunk) == 100_000:
                    copy.write(b"".join(chunk))
                    chunk = []
            copy.write(b"".join(chunk) + struct.pack(">h", -1))
        conn.execute("VACUUM ANALYZE facecore_library")


def fill_rocksdb(path: Path, n: int, base: np.ndarray) -> None:
    from facecore.store.core import STORE_DIR
    from facecore.store.kv import WriteBatch
    from facecore.store.rocks import RocksStore

    store = RocksStore(path / STORE_DIR)
    batch = WriteBatch()
    for k, v in records(n, base):
        batch.put(k, v)
        if len(batch) == 100_000:
            store.write(batch)
            batch = WriteBatch()
    store.write(batch)
    store.close()


@pytest.mark.benchmark(group="shared store: start-up load of the library")
@pytest.mark.parametrize("store", STORES)
def test_startup_load(benchmark: Any, cluster: Cluster, tmp_path: Path, store: str) -> None:
    base = unit(N_LOAD, 8)
    url = cluster.database("load") if store == "postgresql" else None
    t0 = time.perf_counter()
    if url is not None:
        fill_postgres(url, N_LOAD, base)
    else:
        fill_rocksdb(tmp_path / "lib", N_LOAD, base)
    fill_s = time.perf_counter() - t0
    opened: list[Any] = []

    def open_it() -> None:
        opened.append(library(store, tmp_path / "lib", cluster, url))

    benchmark.pedantic(open_it, rounds=1, iterations=1, warmup_rounds=0)
    lib = opened[0]
    owners_bytes = sum(g.owners.nbytes() for g in lib._groups.values() if g.owners is not None)
    try:
        assert lib.stats()["faces"] == N_LOAD
        rows, q = queries_of(base, 9)
        correct = top1(lib, "g", q, rows, n=50)
    finally:
        lib.close()
    benchmark.extra_info.update(
        kind="shared-load", store=store, faces=N_LOAD, fill_s=fill_s, top1_correct=correct,
        owners_bytes_per_face=owners_bytes / N_LOAD,
    )  # fmt: skip
    assert correct >= MIN_TOP1
