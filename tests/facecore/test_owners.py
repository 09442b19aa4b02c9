"""facecore.store.owners: who each row of a group belongs to, in memory (a shared store's
instances keep it so that identify answers while the database is down)."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator

import numpy as np
import pytest
from facecore.store import codec
from facecore.store.kv import DELETE, DELETE_RANGE, PUT, StoreView
from facecore.store.owners import RowOwners, load_group

DIM = 4
APP, GROUP = "app", "g"


def token(i: int) -> str:
    return f"{i:032x}"


def row_value(i: int, user: str) -> bytes:
    return codec.row_value(np.full(DIM, i, np.float32), token(i), user)


class ListView(StoreView):
    """A view over a dict of records (what a store's scan gives, in key order)."""

    def __init__(self, records: dict[bytes, bytes]) -> None:
        self.records, self.sequence = records, 0

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return iter(
            [
                (k, v)
                for k, v in sorted(self.records.items())
                if k >= start and (end is None or k < end)
            ]
        )


def everything(owners: RowOwners, capacity: int) -> dict[int, tuple[str, str]]:
    return owners.owners(np.arange(capacity))


def test_put_drop_and_lookup() -> None:
    o = RowOwners()
    o.put(0, bytes.fromhex(token(7)), b"alice")
    o.put(5, bytes.fromhex(token(8)), b"bob")
    o.put(2, bytes.fromhex(token(9)), b"alice")
    assert everything(o, 10) == {
        0: (token(7), "alice"),
        2: (token(9), "alice"),
        5: (token(8), "bob"),
    }
    assert o.owners(np.array([[5, -1, 5, 99]])) == {5: (token(8), "bob")}
    assert o.rows_of("alice").tolist() == [0, 2]
    assert o.rows_of("alic").tolist() == [] and o.rows_of("nobody").tolist() == []
    o.drop(0)
    o.put(5, bytes.fromhex(token(8)), b"carol")  # a row written again: its new owner
    assert everything(o, 10) == {2: (token(9), "alice"), 5: (token(8), "carol")}
    assert o.rows_of("alice").tolist() == [2]
    o.clear()
    assert everything(o, 10) == {}


def test_a_user_id_that_is_not_one_is_not_kept() -> None:
    o = RowOwners()
    o.put(0, bytes(16), b"x" * 129)
    o.put(1, bytes(15), b"short_token")
    assert everything(o, 2) == {}


def test_cleared_rows_pool_is_compacted_and_the_rest_kept() -> None:
    o = RowOwners()
    n = 5000
    for i in range(n):
        o.put(i, bytes.fromhex(token(i)), f"user_{i:05d}_padding_padding".encode())
    before = o.nbytes()
    for i in range(n):
        if i % 10:
            o.drop(i)
    assert o._used < 0.2 * before  # compacted (the ids of 9 in 10 rows were dropped)
    assert everything(o, n) == {
        i: (token(i), f"user_{i:05d}_padding_padding") for i in range(0, n, 10)
    }
    assert o.rows_of("user_00010_padding_padding").tolist() == [10]


def test_apply_follows_the_writes_of_rows_and_users() -> None:
    o = RowOwners()
    r = codec.row_key(APP, GROUP, 3).encode()
    u = codec.user_key(APP, GROUP, "alice").encode()
    o.apply(PUT, r, row_value(3, "alice"), DIM)
    o.apply(PUT, u, json.dumps({"user_info": "boss", "ctime": 1}).encode(), DIM)
    assert everything(o, 4) == {3: (token(3), "alice")} and o.info("alice") == "boss"
    o.apply(PUT, u, json.dumps({"user_info": "", "ctime": 1}).encode(), DIM)
    assert o.info("alice") == "" and o.infos == {}
    o.apply(PUT, u, json.dumps({"user_info": "again", "ctime": 1}).encode(), DIM)
    o.apply(DELETE, u, b"", DIM)
    assert o.infos == {}
    o.apply(DELETE, r, b"", DIM)
    assert everything(o, 4) == {}
    o.apply(PUT, r, row_value(3, "alice"), DIM)
    o.apply(PUT, u, json.dumps({"user_info": "x", "ctime": 1}).encode(), DIM)
    scope_r, scope_u = codec.scope("R", APP, GROUP), codec.scope("U", APP, GROUP)
    o.apply(DELETE_RANGE, scope_r, codec.end_of(scope_r), DIM)
    o.apply(DELETE_RANGE, scope_u, codec.end_of(scope_u), DIM)
    assert everything(o, 4) == {} and o.infos == {}


def test_a_user_named_like_a_row_number_is_a_user() -> None:
    """A U/ key whose last field is 16 hex digits is a user's record, not a row's."""
    o = RowOwners()
    name = "0000000000000003"
    o.apply(PUT, codec.row_key(APP, GROUP, 3).encode(), row_value(3, name), DIM)
    o.apply(DELETE, codec.user_key(APP, GROUP, name).encode(), b"", DIM)
    assert everything(o, 4) == {3: (token(3), name)}


def test_load_group_matches_the_records_written_one_by_one() -> None:
    """A group loaded from a view (the store's records) holds what the same records applied one
    by one give; damaged rows are left out of the owners (the index still has those with a
    well-formed key), and another group's rows are not this one's."""
    rng = np.random.default_rng(3)
    records: dict[bytes, bytes] = {}
    expected = RowOwners()
    for i in rng.permutation(300).tolist():
        user = f"u{i % 37}"
        key, value = codec.row_key(APP, GROUP, i).encode(), row_value(i, user)
        records[key] = value
        expected.apply(PUT, key, value, DIM)
    for j in range(37):
        info = "" if j % 3 else f"info {j}\t\n\\ 名字"
        key = codec.user_key(APP, GROUP, f"u{j}").encode()
        value = json.dumps({"user_info": info, "ctime": 1}).encode()
        records[key] = value
        expected.apply(PUT, key, value, DIM)
    records[codec.row_key(APP, "other", 1).encode()] = row_value(1, "not_this_group")
    damaged = {300: "bad-user", 301: "", 302: "x" * 129, 303: "sp ace"}
    for i, user in damaged.items():
        records[codec.row_key(APP, GROUP, i).encode()] = row_value(i, user)
    records[codec.scope("R", APP, GROUP) + b"0000000000000x01"] = row_value(304, "bad_key")
    rows, vecs, loaded = load_group(ListView(records), APP, GROUP, DIM)
    assert rows.tolist() == list(range(304))  # in row order, the damaged key left out
    assert vecs[7].tolist() == [7.0] * DIM
    assert everything(loaded, 310) == everything(expected, 310)
    assert loaded.infos == expected.infos and len(loaded.infos) == 13
    assert loaded.rows_of("u5").tolist() == expected.rows_of("u5").tolist()


def test_readers_without_a_lock_see_whole_entries_while_a_writer_grows_and_compacts() -> None:
    """Real threads: lookups while rows are added, dropped (the pool compacted) and the arrays
    grown; every answer is a row's whole, current or earlier, owner."""
    o = RowOwners()
    stop = threading.Event()
    errors: list[str] = []

    def read() -> None:
        while not stop.is_set():
            for row, (tok, user) in o.owners(np.arange(4000)).items():
                if tok != token(row) or user != f"user{row}":
                    errors.append(f"{row}: {tok} {user}")
                    return

    readers = [threading.Thread(target=read) for _ in range(2)]
    for t in readers:
        t.start()
    try:
        for i in range(4000):
            o.put(i, bytes.fromhex(token(i)), f"user{i}".encode())
            if i % 3 == 0 and i:
                o.drop(i - 1)
    finally:
        stop.set()
        for t in readers:
            t.join(60)
    assert not errors, errors[:3]
    assert len(everything(o, 4000)) == 4000 - len(range(3, 4000, 3))


@pytest.mark.parametrize("n", [1, 1000])
def test_nbytes_counts_about_25_bytes_a_row_and_its_user_id(n: int) -> None:
    o = RowOwners()
    rows = np.arange(n, dtype=np.int64)
    names = b"".join(f"u{i:07d}".encode() for i in range(n))
    o.load(
        rows,
        np.zeros((n, 16), np.uint8),
        np.frombuffer(names, np.uint8),
        rows * 8,
        np.full(n, 8, np.uint8),
        {},
    )
    assert o.nbytes() == n * (16 + 8 + 1 + 8)
    assert o.owners(rows)[n - 1][1] == f"u{n - 1:07d}"
