"""The PostgreSQL store (facecore.store.postgres) against a real server (the session's cluster,
tests/pg_cluster.py): the storage interface's contract, which the RocksDB store meets too (run
on both), and what only a shared store does: its change log (gapless, in commit order, a gap
reported), its locks across connections, its schema's version, its failure when the server dies.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import psycopg
import pytest
from facecore.errors import StoreUnavailable
from facecore.store import postgres
from facecore.store.kv import DELETE, DELETE_RANGE, PUT, Store, StoreGap, WriteBatch, scan_prefix
from facecore.store.postgres import PostgresStore
from facecore.store.rocks import RocksStore

from tests.pg_cluster import Cluster

FOLLOWED = (b"G/", b"R/")


@pytest.fixture
def url(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture
def pg(url: str) -> Iterator[PostgresStore]:
    store = PostgresStore(url, followed=FOLLOWED)
    try:
        yield store
    finally:
        store.close()


@pytest.fixture(params=["rocksdb", "postgresql"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Store]:
    """Each store in turn, for the interface's contract."""
    s: Store
    if request.param == "rocksdb":
        s = RocksStore(tmp_path / "db")
    else:
        s = PostgresStore(request.getfixturevalue("postgres").database(), followed=FOLLOWED)
    try:
        yield s
    finally:
        s.close()


def batch(*ops: tuple[int, bytes, bytes]) -> WriteBatch:
    b = WriteBatch()
    b.ops.extend(ops)
    return b


# ---------------------------------------------------------------------------- the interface


def test_batches_apply_in_order_and_scans_are_key_ranges(store: Store) -> None:
    store.write(
        batch(
            (PUT, b"F/a/g/u/1", b"one"),
            (PUT, b"F/a/g/u/2", b"two"),
            (PUT, b"F/a/g0", b"next group"),
            (PUT, b"F/a/g/v/1", b"v"),
            (DELETE, b"F/a/g/u/2", b""),
            (PUT, b"F/a/g/u/3", b"\x00\xff binary"),
        )
    )
    assert store.get(b"F/a/g/u/1") == b"one" and store.get(b"F/a/g/u/2") is None
    assert store.multi_get([b"F/a/g/u/3", b"nope", b"F/a/g/u/1"]) == [
        b"\x00\xff binary",
        None,
        b"one",
    ]
    assert [k for k, _ in scan_prefix(store, b"F/a/g/")] == [
        b"F/a/g/u/1",
        b"F/a/g/u/3",
        b"F/a/g/v/1",
    ]
    # A range delete, then a put inside the range: the put stays (RocksDB's batch order).
    store.write(batch((DELETE_RANGE, b"F/a/g/", b"F/a/g0"), (PUT, b"F/a/g/w/1", b"w")))
    assert [k for k, _ in store.scan(b"F/", None)] == [b"F/a/g/w/1", b"F/a/g0"]
    assert store.count(b"F/", b"F0") == 2


def test_a_long_scan_pages_through_every_key(store: Store) -> None:
    b = WriteBatch()
    for i in range(2500):
        b.put(f"U/a/g/{i:05d}".encode(), b"x" * (i % 7))
    store.write(b)
    keys = [k for k, _ in scan_prefix(store, b"U/a/g/")]
    assert keys == [f"U/a/g/{i:05d}".encode() for i in range(2500)]
    assert [k for k, _ in store.scan(b"U/a/g/01000", b"U/a/g/01003")] == [
        b"U/a/g/01000",
        b"U/a/g/01001",
        b"U/a/g/01002",
    ]


def test_the_sequence_grows_with_followed_writes(store: Store) -> None:
    before = store.sequence()
    store.write(batch((PUT, b"R/a/g/0000000000000000", b"v")))
    assert store.sequence() > before


def test_view_rows_are_the_well_formed_ones_with_their_owners(store: Store) -> None:
    dim = 4
    rng = np.random.default_rng(0)
    vecs = rng.standard_normal((3, dim)).astype(np.float32)
    b = WriteBatch()
    for row, v in zip((7, 2, 300), vecs):
        b.put(f"R/a/g/{row:016x}".encode(), v.tobytes() + bytes(16) + b"user")
    b.put(b"R/a/g/zz", b"damaged key")
    b.put(b"R/a/g/" + b"z" * 16, vecs[0].tobytes() + bytes(16) + b"user")  # not hex
    b.put(f"R/a/g/{9:016x}".encode(), b"short")  # damaged value
    b.put(f"R/a/h/{1:016x}".encode(), vecs[0].tobytes() + bytes(16) + b"u")  # another group
    b.put(f"R/a/g/{400:016x}".encode(), vecs[2].tobytes() + bytes(range(16)) + b"x" * 200)
    store.write(b)
    with store.view() as view:
        rows, got, tokens, users, lengths = view.owned_vectors(b"R/a/g/", dim)
    assert rows.tolist() == [2, 7, 300, 400]
    assert np.array_equal(got, vecs[[1, 0, 2, 2]])
    assert tokens[3].tolist() == list(range(16)) and not tokens[:3].any()
    assert lengths.tolist() == [4, 4, 4, 200]  # an id too long to be one: its length tells
    assert users.shape == (4, 4) and users[:3].tobytes() == b"user" * 3


# ---------------------------------------------------------------------------- the change log


def test_the_change_log_carries_followed_writes_in_order(pg: PostgresStore) -> None:
    assert pg.write(batch((PUT, b"U/a/g/u", b"not followed"))) == 0
    s1 = pg.write(batch((PUT, b"G/a/g", b"{}"), (PUT, b"U/a/g/v", b"x")))
    s2 = pg.write(batch((DELETE_RANGE, b"R/a/g/", b"R/a/g0")))
    assert (s1, s2) == (1, 2) and pg.sequence() == 2
    changes = pg.changes(0)
    assert [c.seq for c in changes] == [1, 2]
    assert changes[0].ops == [(PUT, b"G/a/g", b"{}")]  # U/ is not followed
    assert changes[1].ops == [(DELETE_RANGE, b"R/a/g/", b"R/a/g0")]
    assert pg.changes(2) == []


def test_concurrent_writers_get_gapless_numbers_in_commit_order(pg: PostgresStore) -> None:
    def writer(i: int) -> None:
        for j in range(25):
            pg.write(batch((PUT, f"R/a/g/{i:08x}{j:08x}".encode(), b"v")))

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [c.seq for c in pg.changes(0, limit=1000)] == list(range(1, 101))


def test_a_pruned_log_is_a_gap(pg: PostgresStore, url: str) -> None:
    for i in range(5):
        pg.write(batch((PUT, f"G/a/g{i}".encode(), b"{}")))
    assert pg.prune(keep=2, older_than_s=0) == 3
    assert [c.seq for c in pg.changes(3)] == [4, 5]
    with pytest.raises(StoreGap, match="no longer holds"):
        pg.changes(1)
    with psycopg.connect(url, autocommit=True) as conn:  # the database replaced by another one
        conn.execute("UPDATE facecore_meta SET value = 'other' WHERE name = 'epoch'")
    with pytest.raises(StoreGap, match="replaced"):
        pg.changes(5)


def test_a_notify_wakes_the_waiter(pg: PostgresStore, url: str) -> None:
    other = PostgresStore(url, followed=FOLLOWED)
    try:
        announced: list[int | None] = []  # None: wait() gave up, nothing was announced
        t = threading.Thread(target=lambda: announced.append(pg.wait(30)))
        t.start()
        time.sleep(0.2)  # let it block in wait()
        seq = other.write(batch((PUT, b"G/a/g", b"{}")))
        t.join(60)
        assert announced == [seq]
    finally:
        other.close()


# ---------------------------------------------------------------------------- locks and schema


def test_locked_blocks_exclude_each_other_across_stores(pg: PostgresStore, url: str) -> None:
    """Two stores (two instances) increment one counter under the same lock, read-check-write:
    no increment is lost."""
    other = PostgresStore(url, followed=FOLLOWED)

    def bump(s: PostgresStore) -> None:
        for _ in range(20):
            with s.locked(["K/c/n"]):
                n = int(s.get(b"K/c/n") or b"0")
                s.write(batch((PUT, b"K/c/n", str(n + 1).encode())))

    try:
        threads = [threading.Thread(target=bump, args=(s,)) for s in (pg, other, pg, other)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert pg.get(b"K/c/n") == b"80"
    finally:
        other.close()


def test_a_block_without_a_write_changes_nothing(pg: PostgresStore) -> None:
    with pytest.raises(ZeroDivisionError), pg.locked(["x"]):
        pg.get(b"G/a/g")
        _ = 1 / 0
    with pg.locked(["x"]) as head:  # the lock was released
        assert head == pg.sequence() == 0


def test_connections_give_up_on_a_silent_network(pg: PostgresStore) -> None:
    """Every connection the store makes (its pool's, its listener) asks the kernel to drop it
    when the database stops acknowledging (a network that drops packets resets nothing): a call
    fails in about 30 s, not TCP's default of about 15 minutes. The settings are libpq's own, as
    the server connection reports them."""
    with pg._pool.connection() as conn:
        options = dict(part.split("=", 1) for part in conn.info.dsn.split())
    assert options["keepalives"] == "1" and int(options["tcp_user_timeout"]) == 30_000
    idle, every, count = (
        int(options[k]) for k in ("keepalives_idle", "keepalives_interval", "keepalives_count")
    )
    assert idle + every * count <= 30  # an idle connection is given up as soon


def test_schema_is_created_once_and_a_newer_one_is_refused(url: str) -> None:
    first = PostgresStore(url)
    second = PostgresStore(url)  # migrates nothing: the same epoch
    assert first.epoch == second.epoch
    first.close()
    second.close()
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute("SELECT name, value FROM facecore_meta ORDER BY name").fetchall()
        assert {str(k): str(v) for k, v in rows}["schema_version"] == str(postgres.SCHEMA_VERSION)
        conn.execute("UPDATE facecore_meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreUnavailable, match="newer than this FaceCore"):
        PostgresStore(url)


# ---------------------------------------------------------------------------- failure


def test_a_dead_server_fails_calls_at_once_until_it_is_back(
    postgres: Cluster, pg: PostgresStore
) -> None:
    """Restarts the session's cluster: kept last in this module, and quick."""
    pg.write(batch((PUT, b"G/a/g", b"{}")))
    postgres.kill()
    try:
        with pytest.raises(StoreUnavailable):
            pg.write(batch((PUT, b"G/a/h", b"{}")))

        def no_pool(*args: object, **kwargs: object) -> None:
            pytest.fail("waited on the pool while down")

        pool = pg._pool.connection
        pg._pool.connection = no_pool  # type: ignore[assignment,method-assign]
        with pytest.raises(StoreUnavailable):  # known down: at once, no waiting on the pool
            pg.get(b"G/a/g")
        pg._pool.connection = pool  # type: ignore[method-assign]
        pg.wait(0.1)  # the probe fails while it is down
        assert pg.down is not None
    finally:
        postgres.restart()
    deadline = time.monotonic() + 30
    while pg.down is not None and time.monotonic() < deadline:
        pg.wait(0.1)  # the probe reconnects
    assert pg.down is None
    assert pg.get(b"G/a/g") == b"{}" and pg.get(b"G/a/h") is None  # nothing half written
    pg.write(batch((PUT, b"G/a/h", b"{}")))
    assert [c.seq for c in pg.changes(0)] == [1, 2]
