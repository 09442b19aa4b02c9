"""FaceLibrary under concurrent writers and searchers on shared groups.

Eight threads add, delete, update and identify for a few seconds. During the run no identify may
return a face whose deletion had completed before the call began, and a face that stayed in the
library for the whole call must be found as the top match of its own embedding. Afterwards the
listing must equal what the threads recorded, every listed face must be its own top-1 (score 100),
and stats must agree with the listing.
"""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from facecore.errors import FaceCoreError
from facecore.library import FaceInfo, FaceLibrary, NewFace

DIM = 128
APP = "conc"
GROUPS = ["g0", "g1", "g2"]
USERS = [f"u{i}" for i in range(40)]
RUN_SECONDS = 3.0
MIN_FACES = 40


def unit(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(DIM).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


class Book:
    """What the threads did: live faces, completed deletions, one lock per (group, user)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.live: dict[str, tuple[str, str, np.ndarray]] = {}
        self.deleted: dict[str, np.ndarray] = {}  # token -> embedding, deletion completed
        self.user_locks = {(g, u): threading.Lock() for g in GROUPS for u in USERS}
        self.errors: list[str] = []

    def tokens_of(self, group: str, user: str) -> list[str]:
        with self.lock:
            return [t for t, (g, u, _) in self.live.items() if (g, u) == (group, user)]

    def claim(self, tokens: list[str]) -> dict[str, np.ndarray]:
        """Take faces out of the live set before deleting them (they may still be found)."""
        with self.lock:
            return {t: self.live.pop(t)[2] for t in tokens}

    def gone(self, claimed: dict[str, np.ndarray]) -> None:
        with self.lock:
            self.deleted.update(claimed)


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[FaceLibrary]:
    library = FaceLibrary(tmp_path / "lib")
    try:
        yield library
    finally:
        library.close()


def _worker(
    book: Book, stop: threading.Event, fn: Callable[[random.Random], None], seed: int
) -> None:
    r = random.Random(seed)
    try:
        while not stop.is_set():
            fn(r)
    except Exception as e:  # noqa: BLE001 -- reported once, after the join
        book.errors.append(f"{fn.__name__}: {type(e).__name__}: {e}")
        stop.set()


@pytest.mark.slow
def test_concurrent_adds_deletes_identifies(lib: FaceLibrary) -> None:
    book = Book()
    stop = threading.Event()
    seed_rng = np.random.default_rng(0)
    for g in GROUPS:
        items = []
        for u in USERS:
            for _ in range(2):
                e = unit(seed_rng)
                items.append((u, NewFace(uuid.uuid4().hex, e), f"{u}@{g}"))
        for (u, f, _), r in zip(items, lib.face_add_many(APP, g, items)):
            assert isinstance(r, FaceInfo)
            book.live[f.face_token] = (g, u, f.embedding)
    counts = {"add": 0, "delete": 0, "update": 0, "user_delete": 0, "identify": 0, "churn": 0}
    count_lock = threading.Lock()

    def bump(k: str) -> None:
        with count_lock:
            counts[k] += 1

    def adder(r: random.Random) -> None:
        rng = np.random.default_rng(r.getrandbits(32))
        g, u = r.choice(GROUPS), r.choice(USERS)
        with book.user_locks[(g, u)]:
            if r.random() < 0.3:
                faces = [NewFace(uuid.uuid4().hex, unit(rng)) for _ in range(r.randint(2, 5))]
                out = lib.face_add_many(APP, g, [(u, f, None) for f in faces])
            else:
                faces = [NewFace(uuid.uuid4().hex, unit(rng))]
                out = [lib.face_add(APP, g, u, faces[0], f"{u}@{g}")]
            for f, res in zip(faces, out):
                assert isinstance(res, FaceInfo), res
                with book.lock:
                    book.live[f.face_token] = (g, u, f.embedding)
        bump("add")

    def deleter(r: random.Random) -> None:
        rng = np.random.default_rng(r.getrandbits(32))
        g, u = r.choice(GROUPS), r.choice(USERS)
        with book.lock:
            if sum(1 for gg, _, _ in book.live.values() if gg == g) < MIN_FACES:
                return  # keep every group populated, so identify always has candidates
        with book.user_locks[(g, u)]:
            tokens = book.tokens_of(g, u)
            if not tokens:
                return
            action = r.random()
            if action < 0.6:
                t = r.choice(tokens)
                claimed = book.claim([t])
                lib.face_delete(APP, g, u, t)
                book.gone(claimed)
                bump("delete")
            elif action < 0.8:
                claimed = book.claim(tokens)
                lib.user_delete(APP, g, u)
                book.gone(claimed)
                bump("user_delete")
            else:
                f = NewFace(uuid.uuid4().hex, unit(rng))
                claimed = book.claim(tokens)
                lib.face_update(APP, g, u, f)
                book.gone(claimed)
                with book.lock:
                    book.live[f.face_token] = (g, u, f.embedding)
                bump("update")

    def identifier(r: random.Random) -> None:
        with book.lock:
            if not book.live:
                return
            token = r.choice(list(book.live))
            g, u, e = book.live[token]
            deleted_before = set(book.deleted)
            probe = book.deleted[r.choice(list(book.deleted))] if book.deleted else None
        groups = GROUPS if r.random() < 0.5 else [g]
        if r.random() < 0.2:  # restricted to the face's own user
            try:
                own = lib.identify(APP, [g], e, user_id=u, max_user_num=5)
            except FaceCoreError as err:
                assert err.code == 222207, err  # the user was deleted meanwhile
            else:
                assert {m.user_id for m in own} == {u}
                assert not {m.face_token for m in own} & deleted_before
        try:
            matches = lib.identify(APP, groups, e, max_user_num=5)
        except FaceCoreError as err:
            with book.lock:
                n = sum(1 for gg, _, _ in book.live.values() if gg in groups)
            raise AssertionError(f"identify in {groups} ({n} faces) failed: {err.code} {err}")
        with book.lock:
            stayed = token in book.live
        returned = {m.face_token for m in matches}
        assert not returned & deleted_before, f"deleted faces returned: {returned & deleted_before}"
        if stayed:
            top = matches[0]
            assert (top.group_id, top.user_id, top.face_token) == (g, u, token), (top, token)
            assert top.score == pytest.approx(100.0, abs=1e-3)
        if probe is not None:  # a deleted face's own embedding must not find it
            many = lib.identify_many(APP, GROUPS, np.stack([probe, e]), max_user_num=20)
            for res in many:
                if isinstance(res, list):
                    assert not {m.face_token for m in res} & deleted_before
        bump("identify")

    def churn(r: random.Random) -> None:
        """Create, fill, search and delete a private group, beside the shared ones."""
        rng = np.random.default_rng(r.getrandbits(32))
        g = f"tmp{r.getrandbits(20)}"
        e = unit(rng)
        lib.face_add_many(
            APP, g, [(f"x{i}", NewFace(uuid.uuid4().hex, unit(rng)), None) for i in range(20)]
        )
        f = lib.face_add(APP, g, "me_too", NewFace(uuid.uuid4().hex, e))
        assert lib.identify(APP, [g], e)[0].face_token == f.face_token
        lib.group_delete(APP, g)
        try:
            lib.user_list(APP, g)
            raise AssertionError("a deleted group still lists users")
        except FaceCoreError as err:
            assert err.code in (223128, 223100), err
        bump("churn")

    threads = [
        threading.Thread(target=_worker, args=(book, stop, fn, seed))
        for seed, fn in enumerate(
            [adder, adder, adder, deleter, deleter, identifier, identifier, churn]
        )
    ]
    for t in threads:
        t.start()
    deadline = time.monotonic() + RUN_SECONDS
    while time.monotonic() < deadline and not stop.is_set():
        time.sleep(0.05)
    stop.set()
    for t in threads:
        t.join(60)
        assert not t.is_alive()
    assert not book.errors, book.errors
    assert lib.wait_deletions(60)
    assert all(v > 0 for v in counts.values()), counts
    print("operations:", counts, "live faces:", len(book.live), "deleted:", len(book.deleted))

    # The library equals the book.
    faces = sorted(lib.iter_faces(APP))
    assert {f[3] for f in faces} == set(book.live)
    assert not {f[3] for f in faces} & book.deleted.keys()
    assert lib.group_list(APP, 0, 1000) == GROUPS
    stats = lib.stats()
    listed = 0
    for g in GROUPS:
        users = lib.user_list(APP, g, 0, 1000)
        expect_users = sorted({u for (gg, u, _) in book.live.values() if gg == g})
        assert users == expect_users
        n = 0
        for u in users:
            tokens = {f.face_token for f in lib.face_list(APP, g, u)}
            assert tokens == set(book.tokens_of(g, u))
            n += len(tokens)
        assert stats["groups"][f"{APP}/{g}"] == n
        listed += n
    assert stats["faces"] == listed == len(book.live)
    # Every listed face is its own top-1, in its group and across all groups.
    live = list(book.live)
    embs = np.stack([book.live[t][2] for t in live])
    results = lib.identify_many(APP, GROUPS, embs, max_user_num=1)
    for token, res in zip(live, results):
        assert isinstance(res, list), res
        g, u, _ = book.live[token]
        assert (res[0].group_id, res[0].user_id, res[0].face_token) == (g, u, token)
        assert res[0].score == pytest.approx(100.0, abs=1e-3)


@pytest.mark.slow
def test_listing_groups_while_groups_come_and_go(lib: FaceLibrary) -> None:
    """group_list, user_get("@ALL") and stats read the group table while other threads add and
    delete groups: they must answer, never fail on the table changing under them."""
    rng = np.random.default_rng(1)
    for i in range(500):
        lib.group_add(APP, f"base{i:04d}")
    lib.face_add(APP, "base0000", "someone", NewFace(uuid.uuid4().hex, unit(rng)), "info")
    book = Book()
    stop = threading.Event()
    calls = {"churn": 0, "read": 0}

    def churn(r: random.Random) -> None:
        g = f"tmp{r.getrandbits(24)}"
        lib.group_add(APP, g)
        lib.group_delete(APP, g)
        calls["churn"] += 1

    def read(r: random.Random) -> None:
        assert lib.group_list(APP, 0, 3) == ["base0000", "base0001", "base0002"]
        assert [u.group_id for u in lib.user_get(APP, "@ALL", "someone")] == ["base0000"]
        assert lib.stats()["faces"] == 1
        calls["read"] += 1

    threads = [
        threading.Thread(target=_worker, args=(book, stop, fn, seed))
        for seed, fn in enumerate([churn, churn, read, read])
    ]
    for t in threads:
        t.start()
    stop.wait(RUN_SECONDS)
    stop.set()
    for t in threads:
        t.join(60)
    assert not book.errors, (book.errors, calls)
    assert calls["read"] > 0 and calls["churn"] > 0
