"""FaceLibrary under concurrent writers and searchers on shared groups.

Eight threads add, delete, update and identify for a few seconds. During the run no identify may
return a face whose deletion had completed before the call began, and a face that stayed in the
library for the whole call must be found as the top match of its own embedding. Afterwards the
listing must equal what the threads recorded, every listed face must be its own top-1 (score 100),
and stats must agree with the listing.

Linearizability: forced interleavings (one call stopped at a chosen point while another runs)
show that copy, set_embedding, REPLACE and the readers answer as if they ran before or after a
racing write, never a mix of both; seeded random interleavings of every write on a few groups,
users and tokens must answer only documented codes and leave a store that verify() finds clean.
"""

from __future__ import annotations

import random
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facecore.errors import FaceCoreError
from facecore.store.library import FaceInfo, FaceLibrary, NewFace, iter_prefix

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


# ---------------------------------------------------------------------------- forced interleavings


def answer(fn: Callable[[], object]) -> int | str:
    """0 for success, the code of a FaceCoreError, or the text of any other exception."""
    try:
        fn()
    except FaceCoreError as e:
        return e.code or repr(e)
    except Exception as e:  # noqa: BLE001 -- what a client would get as an internal error
        return f"{type(e).__name__}: {e}"
    return 0


class Pause:
    """Stops the first call of `lib.<method>` made by the thread named `thread` (and matching
    `when`) until `release` is set; `reached` is set when it stops. With after=True it stops
    after the call instead of before."""

    def __init__(
        self,
        lib: FaceLibrary,
        method: str,
        thread: str = "first",
        when: Callable[..., bool] = lambda *a: True,
        after: bool = False,
    ) -> None:
        self.reached = threading.Event()
        self.release = threading.Event()
        original = getattr(lib, method)
        armed = [True]

        def stop(args: tuple[Any, ...]) -> None:
            if armed[0] and threading.current_thread().name == thread and when(*args):
                armed[0] = False
                self.reached.set()
                assert self.release.wait(60)

        def hooked(*args: Any, **kwargs: Any) -> Any:
            if not after:
                stop(args)
            result = original(*args, **kwargs)
            if after:
                stop(args)
            return result

        setattr(lib, method, hooked)


def interleave(
    lib: FaceLibrary,
    pause: Pause,
    first: Callable[[], object],
    second: Callable[[], object],
    group: str,
) -> tuple[int | str, int | str]:
    """Run `first` in a thread until `pause` stops it, then `second`: wholly inside first's
    window when first holds no lock on `group` (the race the lock must prevent), else in a
    thread of its own that the lock makes wait until first is done. The two answers."""
    answers: dict[str, int | str] = {}
    t1 = threading.Thread(target=lambda: answers.update(first=answer(first)), name="first")
    t1.start()
    assert pause.reached.wait(60), "the first call never reached its pause point"
    g = lib._groups.get((APP, group))
    if g is not None and g.lock.locked():
        t2 = threading.Thread(target=lambda: answers.update(second=answer(second)))
        t2.start()
        pause.release.set()
        t2.join(60)
    else:
        answers["second"] = answer(second)
        pause.release.set()
    t1.join(60)
    assert not t1.is_alive()
    return answers["first"], answers["second"]


def delete_group(lib: FaceLibrary, group: str) -> Callable[[], None]:
    def run() -> None:
        lib.group_delete(APP, group)
        assert lib.wait_deletions(60)

    return run


def faces_of(lib: FaceLibrary, group: str, user: str) -> set[str]:
    return {f.face_token for f in lib.face_list(APP, group, user)}


def assert_clean(lib: FaceLibrary) -> None:
    report = lib.verify()
    assert report.ok, (report.problems, report.examples)


@pytest.fixture
def seeded(lib: FaceLibrary) -> tuple[FaceLibrary, list[str]]:
    """Group "src" with user "u" (3 faces) and "x" (1 face), empty group "dst"; u's tokens."""
    rng = np.random.default_rng(7)
    tokens = [uuid.uuid4().hex for _ in range(3)]
    lib.face_add_many(APP, "src", [("u", NewFace(t, unit(rng)), "u info") for t in tokens])
    lib.face_add(APP, "src", "x", NewFace(uuid.uuid4().hex, unit(rng)))
    lib.group_add(APP, "dst")
    return lib, tokens


def test_copy_racing_the_deletion_of_its_source(seeded: tuple[FaceLibrary, list[str]]) -> None:
    """The copy stops while reading the source; the source group is deleted. The copy must be
    all before the deletion (0, every face in dst) or after it (223128/223100), not a
    RuntimeError about a missing row."""
    lib, tokens = seeded
    pause = Pause(lib, "_must")
    got = interleave(
        lib, pause, lambda: lib.user_copy(APP, "u", "src", "dst"), delete_group(lib, "src"), "src"
    )
    assert got[1] == 0
    if got[0] == 0:
        assert faces_of(lib, "dst", "u") == set(tokens)
    else:
        assert got[0] in (223128, 223100), got
        assert lib.user_list(APP, "dst") == []
    assert_clean(lib)


def test_identical_concurrent_copies_both_succeed(seeded: tuple[FaceLibrary, list[str]]) -> None:
    """A copy stops after checking the destination for its first face; an identical copy runs.
    Both must succeed (faces already the user's are skipped), not one with 223105."""
    lib, tokens = seeded
    pause = Pause(lib, "_must")

    def copy() -> None:
        lib.user_copy(APP, "u", "src", "dst")

    assert interleave(lib, pause, copy, copy, "dst") == (0, 0)
    assert faces_of(lib, "dst", "u") == set(tokens)
    assert lib.user_get(APP, "dst", "u")[0].user_info == "u info"
    assert_clean(lib)


@pytest.mark.parametrize("read", ["face_list", "user_list", "user_get", "face_image"])
def test_reads_racing_a_group_deletion(seeded: tuple[FaceLibrary, list[str]], read: str) -> None:
    """A read stops after finding the group; the group is deleted. The read must answer what
    the group held or 223128, never 223103 or an empty or partial list."""
    lib, tokens = seeded
    calls: dict[str, tuple[str, Callable[[], object]]] = {
        "face_list": ("_iter_prefix", lambda: lib.face_list(APP, "src", "u")),
        "user_list": ("_iter_prefix", lambda: lib.user_list(APP, "src")),
        "user_get": ("_get", lambda: lib.user_get(APP, "src", "u")),
        "face_image": ("_get", lambda: lib.face_image(APP, "src", tokens[0])),
    }
    method, call = calls[read]
    pause = Pause(lib, method)
    got = interleave(lib, pause, call, delete_group(lib, "src"), "src")
    assert got == (223128, 0)


def test_set_embedding_racing_a_group_deletion(lib: FaceLibrary) -> None:
    """set_embedding stops after finding the group; the group is deleted. It must answer 223128
    (not 223106, not a RuntimeError) and leave no key of the deleted group behind."""
    rng = np.random.default_rng(8)
    f = lib.face_add(APP, "g", "u", NewFace(uuid.uuid4().hex, unit(rng)))
    pause = Pause(lib, "_group", after=True)
    got = interleave(
        lib,
        pause,
        lambda: lib.set_embedding(APP, "g", f.face_token, unit(rng)),
        delete_group(lib, "g"),
        "g",
    )
    assert got == (223128, 0)
    for kind in "GUFRTI":
        assert list(iter_prefix(lib._db, f"{kind}/{APP}/g".encode())) == []


def test_concurrent_replaces_of_a_new_user_leave_one_face(lib: FaceLibrary) -> None:
    """Two REPLACEs (face_update create=True) of a user the group does not have yet: the second
    waits for the first, so the user ends with the second's face only, not with both."""
    rng = np.random.default_rng(9)
    lib.group_add(APP, "g")
    a, b = NewFace(uuid.uuid4().hex, unit(rng)), NewFace(uuid.uuid4().hex, unit(rng))
    pause = Pause(lib, "_get", when=lambda key: key.startswith("U/"))
    got = interleave(
        lib,
        pause,
        lambda: lib.face_update(APP, "g", "new", a, "a", create=True),
        lambda: lib.face_update(APP, "g", "new", b, "b", create=True),
        "g",
    )
    assert got == (0, 0)
    assert faces_of(lib, "g", "new") == {b.face_token}
    assert lib.user_get(APP, "g", "new")[0].user_info == "b"
    assert_clean(lib)


# ---------------------------------------------------------------------------- random interleavings

R_GROUPS = ["ra", "rb", "rc"]
R_USERS = ["u0", "u1", "u2"]
R_TOKENS = 10
R_THREADS = 6
R_OPS = 600  # per thread
# Every answer each operation may give in a random interleaving (0: success).
ALLOWED: dict[str, set[int | str]] = {
    "face_add": {0, 223105, 223128},
    "face_add_many": {0, 223105, 223128},
    "face_update": {0, 223100, 223103, 223105, 223128},
    "replace": {0, 223105, 223128},
    "face_delete": {0, 223100, 223106, 223128},
    "user_delete": {0, 223100, 223103, 223128},
    "user_copy": {0, 223100, 223103, 223105, 223111, 223128},
    "group_add": {0, 223101, 223128},
    "group_delete": {0, 223100, 223128},
    "set_embedding": {0, 223100, 223106, 223128},
    "face_list": {0, 223100, 223103, 223128},
    "user_get": {0, 223100, 223103, 223128},
    "user_list": {0, 223100, 223128},
    "identify": {0, 223100, 222207, 223128},
}


@pytest.fixture
def fine_switching() -> Iterator[None]:
    """Switch threads every 10 us instead of 5 ms, so that races happen in a short run."""
    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        yield
    finally:
        sys.setswitchinterval(old)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_random_interleavings_leave_a_consistent_store(
    lib: FaceLibrary, fine_switching: None, seed: int
) -> None:
    """Six threads run seeded random writes and reads on 3 groups x 3 users x 10 tokens (a
    token always has the same embedding, as the same image always has the same token). Every
    answer must be one its operation documents; afterwards verify() must find nothing, every
    face must be its own top match in its group, and a reopened library must list the same."""
    rng = np.random.default_rng(seed)
    tokens = [uuid.uuid4().hex for _ in range(R_TOKENS)]
    embedding = {t: unit(rng) for t in tokens}
    bad: list[str] = []
    done: dict[str, int] = dict.fromkeys(ALLOWED, 0)

    def op(r: random.Random) -> tuple[str, Callable[[], object]]:
        g, g2 = r.choice(R_GROUPS), r.choice(R_GROUPS)
        u, t, t2 = r.choice(R_USERS), r.choice(tokens), r.choice(tokens)
        face = NewFace(t, embedding[t], (1.0, 2.0, 3.0, 4.0), t.encode())
        info = f"{u}-{r.randrange(3)}"
        ops: list[tuple[int, str, Callable[[], object]]] = [
            (6, "face_add", lambda: lib.face_add(APP, g, u, face, info)),
            (
                2,
                "face_add_many",
                lambda: lib.face_add_many(
                    APP, g, [(u, face, None), (r.choice(R_USERS), NewFace(t2, embedding[t2]), info)]
                ),
            ),
            (3, "face_update", lambda: lib.face_update(APP, g, u, face, info)),
            (3, "replace", lambda: lib.face_update(APP, g, u, face, info, create=True)),
            (4, "face_delete", lambda: lib.face_delete(APP, g, u, t)),
            (2, "user_delete", lambda: lib.user_delete(APP, g, u)),
            (6, "user_copy", lambda: lib.user_copy(APP, u, g, g2)),
            (1, "group_add", lambda: lib.group_add(APP, g)),
            (1, "group_delete", lambda: lib.group_delete(APP, g)),
            (2, "set_embedding", lambda: lib.set_embedding(APP, g, t, embedding[t])),
            (2, "face_list", lambda: lib.face_list(APP, g, u)),
            (2, "user_get", lambda: lib.user_get(APP, r.choice([g, "@ALL"]), u)),
            (1, "user_list", lambda: lib.user_list(APP, g)),
            (2, "identify", lambda: lib.identify(APP, [g, g2], embedding[t], max_user_num=3)),
        ]
        _, name, fn = r.choices(ops, weights=[w for w, _, _ in ops])[0]
        return name, fn

    def worker(i: int) -> None:
        r = random.Random(seed * 100 + i)
        for _ in range(R_OPS):
            name, fn = op(r)
            got = answer(fn)
            if got not in ALLOWED[name]:
                bad.append(f"{name}: {got}")
            elif got == 0:
                done[name] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(R_THREADS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
        assert not t.is_alive()
    assert not bad, sorted(set(bad))
    assert lib.wait_deletions(60)
    assert done["user_copy"] > 0 and done["group_delete"] > 0, done
    assert_clean(lib)

    listed: dict[tuple[str, str], set[str]] = {}
    for g in lib.group_list(APP, 0, 1000):
        for u in lib.user_list(APP, g, 0, 1000):
            listed[(g, u)] = faces_of(lib, g, u)
            for token in listed[(g, u)]:
                (top,) = lib.identify(APP, [g], embedding[token])
                assert (top.user_id, top.face_token) == (u, token)
                assert top.score == pytest.approx(100.0, abs=1e-3)
    path = lib.path
    lib.close()
    with FaceLibrary(path) as again:
        assert_clean(again)
        relisted = {
            (g, u): faces_of(again, g, u)
            for g in again.group_list(APP, 0, 1000)
            for u in again.user_list(APP, g, 0, 1000)
        }
        assert relisted == listed
