"""FaceLibrary on a shared PostgreSQL store (the session's cluster, tests/pg_cluster.py).

One suite, two stores: the operations' tests of test_library.py that need nothing but a library
run here again on PostgreSQL (`SHARED`). Then what only a shared store has: several instances
over one database, each a full replica of the indexes, following the others' writes in the
change log; writes racing across instances; a gap in the log; deletions another instance resumes;
detected-face tokens and metadata seen by every instance.

Instances follow on their own within a poll (POLL_SECONDS); the tests make an instance catch up
at once with `_catch_up()` instead of sleeping, so that no assertion depends on timing.
"""

from __future__ import annotations

import random
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest
from facecore.errors import FaceCoreError, GroupDeleting, StoreUnavailable
from facecore.store import codec, owners
from facecore.store.kv import StoreView
from facecore.store.library import FaceLibrary, NewFace
from facecore.store.postgres import PostgresStore

from tests.facecore import test_library as base
from tests.facecore.test_library import APP, filled, listing, nf, unit  # noqa: F401 (fixture)
from tests.pg_cluster import Cluster

# The operations' tests that need only the `lib` fixture (or `filled`, built on it).
SHARED = [
    "test_group_add_and_list_sorted_paged",
    "test_group_add_existing_is_223101",
    "test_group_delete_runs_in_background_and_group_is_recreatable",
    "test_face_add_creates_group_and_user",
    "test_face_add_second_face_keeps_user_info_when_none",
    "test_face_add_many_reports_item_errors_and_adds_the_rest",
    "test_face_add_many_duplicate_token_inside_one_batch",
    "test_face_update_replaces_all_faces",
    "test_face_update_reusing_the_users_own_token",
    "test_face_update_create_registers_a_missing_group_or_user",
    "test_face_delete_last_face_removes_the_user",
    "test_user_get_all_groups",
    "test_user_list_paged_and_sorted",
    "test_user_page_is_user_list_with_each_users_record_and_faces",
    "test_user_copy_copies_faces_and_info_skipping_present_faces",
    "test_user_copy_of_a_face_another_user_has_there_is_223105_and_copies_nothing",
    "test_user_copy_keeps_the_destination_users_other_faces_and_ctime",
    "test_ids_that_prefix_each_other_stay_apart",
    "test_user_delete",
    "test_identify_best_face_per_user_sorted_and_limited",
    "test_identify_merges_several_groups",
    "test_identify_many_matches_identify",
    "test_identify_scores_are_exact_fp32_cosines",
    "test_token_put_get_roundtrip",
    "test_tokens_are_per_appid",
    "test_iter_faces_and_stats_agree_with_listing",
    "test_set_embedding_reindexes",
    "test_failed_face_add_creates_no_group",
    "test_appids_are_isolated",
    "test_missing_group_223100",
    "test_missing_user_223103",
    "test_face_exists_223105",
    "test_face_missing_223106",
    "test_dst_group_missing_223111",
    "test_no_match_222207",
]
for _name in SHARED:
    globals()[_name] = getattr(base, _name)


def open_library(path: Path, url: str) -> FaceLibrary:
    return FaceLibrary(path, store=PostgresStore(url))


@pytest.fixture
def url(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture
def lib(url: str, tmp_path: Path) -> Iterator[FaceLibrary]:
    library = open_library(tmp_path / "lib", url)
    try:
        yield library
    finally:
        library.close()


@pytest.fixture
def trio(url: str, tmp_path: Path) -> Iterator[list[FaceLibrary]]:
    """Three instances over one database."""
    libs = [open_library(tmp_path / f"i{i}", url) for i in range(3)]
    try:
        yield libs
    finally:
        for library in libs:
            library.close()


def synced(*libs: FaceLibrary) -> None:
    for library in libs:
        library._catch_up()


def state(lib: FaceLibrary) -> dict[str, object]:
    """What an instance holds in memory: per group, its faces, rows and deletion mark, and who
    each row belongs to with the users' user_info (for identify while the database is down)."""
    out: dict[str, object] = {}
    for (appid, group), g in sorted(lib._groups.items()):
        rows = sorted(r for r in range(g.next_row) if r in g.index)
        assert g.owners is not None
        owners = g.owners.owners(np.arange(g.next_row))
        if not g.deleting:
            assert sorted(owners) == rows  # every row the index has, and only those
        out[f"{appid}/{group}"] = (g.faces, len(g.index), rows, g.deleting, owners, g.owners.infos)
    return out


def assert_replicas(*libs: FaceLibrary) -> None:
    """Every instance: the same listing, the same in-memory indexes, a clean verify."""
    synced(*libs)
    first = libs[0]
    for library in libs:
        report = library.verify()
        assert report.ok, (report.problems, report.examples)
        assert state(library) == state(first)
        assert listing(library) == listing(first)


# ---------------------------------------------------------------------------- replicas


def test_a_face_added_on_one_instance_is_identified_on_the_others(trio: list[FaceLibrary]) -> None:
    a, b, c = trio
    rng = np.random.default_rng(1)
    e = unit(rng)
    added = a.face_add(APP, "g", "alice", nf(e), "alice info")
    synced(b, c)
    for library in (b, c):
        (top,) = library.identify(APP, ["g"], e)
        assert (top.user_id, top.user_info, top.face_token) == (
            "alice",
            "alice info",
            added.face_token,
        )
        assert top.score == pytest.approx(100.0, abs=1e-3)
    b.face_update(APP, "g", "alice", nf(unit(rng)))  # B replaces her face: A stops finding it
    synced(a)
    assert a.identify(APP, ["g"], e)[0].face_token != added.face_token
    c.user_delete(APP, "g", "alice")
    c.group_delete(APP, "g")
    assert c.wait_deletions(60)
    assert_replicas(a, b, c)
    assert a.group_list(APP) == []


def test_a_new_instance_loads_everything_and_answers_the_same(url: str, tmp_path: Path) -> None:
    with open_library(tmp_path / "a", url) as a:
        queries = base.build_store(a, 5)
        view, answers = listing(a, (APP, "app2")), base.answers(a, queries)
    with open_library(tmp_path / "b", url) as b:  # loads from the database (bulk reads)
        assert listing(b, (APP, "app2")) == view
        assert base.answers(b, queries) == answers


def test_instances_follow_on_their_own(trio: list[FaceLibrary]) -> None:
    """Without being told: the follower thread (NOTIFY, or the poll) applies A's write on B."""
    a, b, _ = trio
    done = threading.Event()
    a.face_add(APP, "g", "u", nf(unit(np.random.default_rng(2))))
    for _ in range(600):
        if b.stats()["faces"] == 1:
            done.set()
            break
        done.wait(0.05)
    assert done.is_set(), "B never applied A's face"


# ---------------------------------------------------------------------------- races, instances


def test_concurrent_writers_on_three_instances_leave_one_consistent_library(
    trio: list[FaceLibrary],
) -> None:
    """Three instances, two threads each, random adds, replaces, deletes and copies of the
    same few users and tokens (a token always with the same embedding): every answer is one its
    operation documents, and afterwards every instance holds the same library, which verifies
    clean, and every face is its own top match on every instance."""
    rng = np.random.default_rng(3)
    tokens = [uuid.uuid4().hex for _ in range(8)]
    embedding = {t: unit(rng) for t in tokens}
    allowed = {0, 223100, 223103, 223105, 223106, 223111, 223128}
    bad: list[str] = []

    def worker(lib: FaceLibrary, seed: int) -> None:
        r = random.Random(seed)
        for _ in range(60):
            g, g2 = r.choice(["ga", "gb"]), r.choice(["ga", "gb"])
            u, t = r.choice(["u0", "u1", "u2"]), r.choice(tokens)
            face = NewFace(t, embedding[t])
            ops: list[tuple[Callable[..., object], tuple[object, ...], dict[str, object]]] = [
                (lib.face_add, (APP, g, u, face, f"{u}-{seed}"), {}),
                (lib.face_update, (APP, g, u, face), {"create": True}),
                (lib.face_delete, (APP, g, u, t), {}),
                (lib.user_delete, (APP, g, u), {}),
                (lib.user_copy, (APP, u, g, g2), {}),
                (lib.identify, (APP, [g], embedding[t]), {}),
            ]
            fn, args, kwargs = r.choice(ops)
            try:
                fn(*args, **kwargs)
            except FaceCoreError as e:
                if e.code not in allowed and e.code != 222207:
                    bad.append(repr(e))
            except Exception as e:  # noqa: BLE001 -- anything else is a failure to report
                bad.append(repr(e))

    threads = [
        threading.Thread(target=worker, args=(lib, 10 * i + j))
        for i, lib in enumerate(trio)
        for j in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
        assert not t.is_alive()
    assert not bad, sorted(set(bad))
    assert_replicas(*trio)
    for lib in trio:
        for g in lib.group_list(APP):
            for u in lib.user_list(APP, g):
                for f in lib.face_list(APP, g, u):
                    (top,) = lib.identify(APP, [g], embedding[f.face_token])
                    assert (top.user_id, top.face_token) == (u, f.face_token)


def test_two_instances_replacing_one_new_user_leave_one_face(trio: list[FaceLibrary]) -> None:
    """REPLACE of a user no group has yet, on two instances at once, many times: the group's
    lock in the database orders them, so the user ends with one face, the later one's."""
    a, b, _ = trio
    rng = np.random.default_rng(4)
    for i in range(10):
        faces = [nf(unit(rng)), nf(unit(rng))]
        threads = [
            threading.Thread(
                target=lib.face_update, args=(APP, f"g{i}", "new", f), kwargs={"create": True}
            )
            for lib, f in zip((a, b), faces)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert len(a.face_list(APP, f"g{i}", "new")) == 1
    assert_replicas(a, b)


# ---------------------------------------------------------------------------- the log and deletions


def test_a_gap_in_the_log_reloads_everything(trio: list[FaceLibrary], url: str) -> None:
    """B misses changes that were pruned from the log meanwhile: it must load everything again,
    never skip them."""
    a, b, _ = trio
    rng = np.random.default_rng(5)
    synced(b)
    b._stop.set()  # B stops following on its own
    assert b._follower is not None
    b._follower.join()
    for i in range(5):
        a.face_add(APP, "g", f"u{i}", nf(unit(rng)))
    a.user_delete(APP, "g", "u0")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DELETE FROM facecore_log")
    synced(b)
    assert_replicas(a, b)
    assert b.stats() == {"faces": 4, "groups": {f"{APP}/g": 4}}


def test_a_deletion_left_by_a_dead_instance_is_finished_by_the_next_start(
    url: str, tmp_path: Path
) -> None:
    """A marks a group deleted and dies before removing it: B (running) answers 223128 for
    it meanwhile; the next instance to start finishes the deletion, and B follows."""
    rng = np.random.default_rng(6)
    a = open_library(tmp_path / "a", url)
    b = open_library(tmp_path / "b", url)
    try:
        a.face_add_many(APP, "doomed", [(f"u{i}", nf(unit(rng)), None) for i in range(50)])
        a.face_add(APP, "kept", "u", nf(unit(rng)))
        a._start_delete = lambda appid, group: None  # type: ignore[method-assign]  # dies first
        a.group_delete(APP, "doomed")
        a.close()
        synced(b)
        with pytest.raises(GroupDeleting):
            b.user_list(APP, "doomed")
        with open_library(tmp_path / "c", url) as c:  # resumes the deletion
            assert c.wait_deletions(60)
            synced(b)
            assert b.group_list(APP) == c.group_list(APP) == ["kept"]
            assert_replicas(b, c)
    finally:
        b.close()


def test_a_late_deletion_step_spares_a_group_made_again(url: str, tmp_path: Path) -> None:
    """A deletion resumed twice: the second runs after the group was deleted and made again
    under the same name, and must leave the new group's data alone."""
    rng = np.random.default_rng(7)
    with open_library(tmp_path / "a", url) as a:
        a.face_add(APP, "g", "old", nf(unit(rng)))
        a.group_delete(APP, "g")
        assert a.wait_deletions(60)
        a.face_add(APP, "g", "new", nf(unit(rng)))
        a._delete_group(APP, "g")  # a stale step of the old deletion
        assert a.user_list(APP, "g") == ["new"]
        assert a.verify().ok


# ---------------------------------------------------------------------------- tokens and metadata


def test_a_group_verify_adopts_reaches_every_instance_whole(url: str, tmp_path: Path) -> None:
    """A group whose G/ record was lost behind every instance's back: B, started then, does not
    know it. verify --repair on C gives the record back, and B, following, takes the group's
    faces and owners from the database (not an empty group, whose next face would take row 0
    and overwrite a face's row)."""
    rng = np.random.default_rng(7)
    embeddings = [unit(rng) for _ in range(3)]
    with open_library(tmp_path / "a", url) as a:
        added = [
            a.face_add(APP, "g", f"u{i}", nf(e), f"info {i}") for i, e in enumerate(embeddings)
        ]
    with psycopg.connect(url, autocommit=True) as conn:
        gone = codec.group_key(APP, "g").encode()
        conn.execute("DELETE FROM facecore_library WHERE key = %s", (gone,))
    with open_library(tmp_path / "b", url) as b, open_library(tmp_path / "c", url) as c:
        assert b.group_list(APP) == []
        report = c.verify(repair=True)
        assert report.problems == {"group_missing": 1} and report.remaining == {}
        synced(b)
        for i, (e, face) in enumerate(zip(embeddings, added, strict=True)):
            (top,) = b.identify(APP, ["g"], e)
            assert (top.user_id, top.user_info, top.face_token) == (
                f"u{i}",
                f"info {i}",
                face.face_token,
            )
        b.face_add(APP, "g", "u9", nf(unit(rng)))
        assert_replicas(b, c)
        for i, face in enumerate(added):
            listed = c.face_list(APP, "g", f"u{i}")
            assert [f.face_token for f in listed] == [face.face_token]


def test_detected_tokens_and_metadata_are_seen_by_every_instance(trio: list[FaceLibrary]) -> None:
    a, b, c = trio
    token, e = uuid.uuid4().hex, unit(np.random.default_rng(8))
    a.token_put(APP, token, e, {"age": 30})
    got, attrs = b.token_get(APP, token)
    assert np.array_equal(got, e) and attrs == {"age": 30}

    def take(raw: bytes | None) -> bytes:
        if raw == b"used":
            raise LookupError("already used")
        return b"used"

    a.kv_put("h5session", "S1", b"fresh")
    answers: list[str] = []

    def use(lib: FaceLibrary) -> None:
        try:
            lib.kv_update("h5session", "S1", take)
            answers.append("ok")
        except LookupError:
            answers.append("refused")

    threads = [threading.Thread(target=use, args=(lib,)) for lib in (a, b, c, a, b, c)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert sorted(answers) == ["ok"] + ["refused"] * 5  # one use, whichever instance
    assert c.kv_get("h5session", "S1") == b"used"


def test_a_schema_changed_under_an_instance_stops_it_using_the_database(
    trio: list[FaceLibrary], url: str
) -> None:
    """Another FaceCore version migrated the database: B can no longer read it safely. Writes
    answer 222201 and nothing is written; the group list still answers from memory."""
    a, b, _ = trio
    rng = np.random.default_rng(9)
    a.face_add(APP, "g", "u", nf(unit(rng)))
    synced(b)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE facecore_meta SET value = '99' WHERE name = 'schema_version'")
    with pytest.raises(StoreUnavailable, match="schema changed to version 99"):
        b._catch_up()
    with pytest.raises(StoreUnavailable):
        b.face_add(APP, "g", "v", nf(unit(rng)))
    assert b.group_list(APP) == ["g"]
    with pytest.raises(StoreUnavailable, match="schema changed"):  # A, at its next write
        a.face_add(APP, "g", "w", nf(unit(rng)))
    assert a.group_list(APP) == ["g"]


# ---------------------------------------------------------------------------- the database down


def found(lib: FaceLibrary, queries: np.ndarray, user: str | None = None) -> list[Any]:
    """Each query's matches (score >= 80, up to 3 users) as (group, user, user_info, token),
    and their scores apart."""
    out: list[Any] = []
    for r in lib.identify_many(APP, ["ga", "gb"], queries, user, 80, 3):
        if isinstance(r, FaceCoreError):
            out.append((r.code, []))
        else:
            out.append(
                (
                    [(m.group_id, m.user_id, m.user_info, m.face_token) for m in r],
                    [m.score for m in r],
                )
            )
    return out


def test_identify_answers_from_memory_while_the_database_is_down(
    postgres: Cluster, url: str, tmp_path: Path
) -> None:
    """PostgreSQL SIGKILLed: each instance goes on identifying from memory, the same users,
    tokens and user_info as before (each score the int8 index's, within a point of the exact
    one), restricted to one user too, while writes and lists fail at once with
    StoreUnavailable. A detected face's token is kept in memory meanwhile, and stored once the
    database is back. Then both instances write and follow again."""
    with open_library(tmp_path / "a", url) as a, open_library(tmp_path / "b", url) as b:
        queries = base.build_store(a, 7)  # A wrote it all; B followed
        synced(b)
        online = [found(lib, queries) for lib in (a, b)] + [found(a, queries, "u3")]
        assert online[0] == online[1]
        assert sum(1 for users, _ in online[0] if users != 222207) >= 25  # mostly matches
        postgres.kill()
        try:
            for lib in (a, b):
                offline = [found(lib, queries), found(lib, queries, "u3")]
                for now, then in zip(offline, (online[0], online[2])):
                    assert [users for users, _ in now] == [users for users, _ in then]
                    for (_, scores), (_, exact) in zip(now, then):
                        assert scores == pytest.approx(exact, abs=1.0)
                with pytest.raises(StoreUnavailable):
                    lib.face_add(APP, "ga", "late", nf(unit(np.random.default_rng(8))))
                with pytest.raises(StoreUnavailable):
                    lib.user_list(APP, "ga")
                assert lib.group_list(APP) == ["empty", "ga", "gb"]  # memory
            detected = unit(np.random.default_rng(10))
            a.token_put(APP, "d" * 32, detected, {"age": 30})  # kept in A's memory
            assert a.token_get(APP, "d" * 32)[1] == {"age": 30}
            with pytest.raises(StoreUnavailable):
                b.token_get(APP, "d" * 32)
        finally:
            postgres.restart()
        e = unit(np.random.default_rng(9))
        for _ in range(600):  # until B's store has reconnected (its follower probes)
            try:
                b.face_add(APP, "ga", "after", nf(e), "back")
                break
            except StoreUnavailable:
                threading.Event().wait(0.05)
        else:
            pytest.fail("B never wrote again after PostgreSQL came back")
        synced(a)
        a._tokens.flush()  # as A's follower does once the database answers
        emb, attrs = b.token_get(APP, "d" * 32)
        assert attrs == {"age": 30} and np.array_equal(emb, detected)
        (top,) = a.identify(APP, ["ga"], e)
        assert (top.user_id, top.user_info) == ("after", "back")
        assert_replicas(a, b)


class _Scanned(StoreView):
    """A view's scans alone: StoreView's own owned_vectors, by a prefix scan."""

    def __init__(self, view: StoreView) -> None:
        self.view, self.sequence = view, view.sequence

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return self.view.scan(start, end)


def test_the_bulk_load_of_rows_and_owners_matches_a_scan(url: str, tmp_path: Path) -> None:
    """PostgreSQL's one binary COPY of a group's rows (embeddings and who each belongs to) gives
    what a plain scan of the same snapshot gives, damaged records included."""
    with open_library(tmp_path / "a", url) as a:
        base.build_store(a, 11)
        store = a.store
        assert isinstance(store, PostgresStore)
    damaged = {900: b"bad-user", 901: b"", 902: b"x" * 129, 903: b"a\xc3\xa9"}
    with psycopg.connect(url, autocommit=True) as conn:
        for row, user in damaged.items():
            value = unit(np.random.default_rng(row)).tobytes() + bytes(16) + user
            key = codec.row_key(APP, "ga", row).encode()
            conn.execute("INSERT INTO facecore_library VALUES (%s, %s)", (key, value))
        conn.execute(
            "INSERT INTO facecore_library VALUES (%s, %s)",
            (codec.scope("R", APP, "ga") + b"00000000000003zz", bytes(4 * base.DIM + 20)),
        )
    store = PostgresStore(url)
    try:
        with store.view() as view:
            for group in ("ga", "gb"):
                fast = owners.load_group(view, APP, group, base.DIM)
                slow = owners.load_group(_Scanned(view), APP, group, base.DIM)
                assert np.array_equal(fast[0], slow[0]) and np.array_equal(fast[1], slow[1])
                every = np.arange(int(fast[0].max()) + 1)
                assert fast[2].owners(every) == slow[2].owners(every)
                assert fast[2].infos == slow[2].infos
                assert len(fast[2].owners(every)) == len(fast[0]) - (4 if group == "ga" else 0)
    finally:
        store.close()
