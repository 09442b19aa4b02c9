"""FaceLibrary: every operation, every error code it answers, persistence, appid isolation.

Embeddings are random unit vectors (dim 128) and tokens uuid4 hex, so no model is needed. Every
failing call is checked to leave the store exactly as it was (a full listing before and after).
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import facecore.store.library
import numpy as np
import pytest
from facecore.errors import FaceCoreError, InvalidArgument
from facecore.score import similarity_to_score
from facecore.store.library import FaceInfo, FaceLibrary, Match, NewFace, UserInfo

from tests.conftest import REPO

DIM = 128
APP = "app1"


# ---------------------------------------------------------------------------- helpers


def unit(rng: np.random.Generator, n: int | None = None) -> np.ndarray:
    shape = (DIM,) if n is None else (n, DIM)
    x: np.ndarray = rng.standard_normal(shape).astype(np.float32)
    out: np.ndarray = (x / np.linalg.norm(x, axis=-1, keepdims=True)).astype(np.float32)
    return out


def near(rng: np.random.Generator, e: np.ndarray, noise: float) -> np.ndarray:
    """A unit vector close to `e` (cosine ~ 1 - noise^2 / 2)."""
    x = e + rng.standard_normal(DIM).astype(np.float32) * np.float32(noise / np.sqrt(DIM))
    out: np.ndarray = (x / np.linalg.norm(x)).astype(np.float32)
    return out


def tok() -> str:
    return uuid.uuid4().hex


def nf(e: np.ndarray, token: str | None = None, image: bytes | None = None) -> NewFace:
    return NewFace(token or tok(), e, (1.0, 2.0, 3.0, 4.0), image)


def listing(lib: FaceLibrary, appids: tuple[str, ...] = (APP,)) -> dict[str, Any]:
    """Everything the API can list: groups, users with user_info, faces with tokens, stats."""
    out: dict[str, Any] = {}
    for a in appids:
        groups: dict[str, Any] = {}
        for g in lib.group_list(a, 0, 1000):
            users = {}
            for u in lib.user_list(a, g, 0, 1000):
                (info,) = lib.user_get(a, g, u)
                faces = sorted((f.face_token, f.ctime) for f in lib.face_list(a, g, u))
                users[u] = [info.user_info, info.ctime, faces]
            groups[g] = users
        out[a] = groups
    out["stats"] = lib.stats()
    out["faces"] = sorted(lib.iter_faces())
    normal: dict[str, Any] = json.loads(json.dumps(out))  # tuples -> lists, as in a JSON file
    return normal


def assert_code(exc: object, code: int) -> None:
    assert isinstance(exc, FaceCoreError), repr(exc)
    assert exc.code == code, f"expected {code}, got {exc.code}: {exc}"


def fails(
    lib: FaceLibrary,
    code: int | type[Exception],
    fn: Callable[..., Any],
    *args: Any,
    appids: tuple[str, ...] = (APP,),
    **kwargs: Any,
) -> FaceCoreError:
    """Call fn, expect the error `code` (or exception class), and an unchanged store."""
    before = listing(lib, appids)
    with pytest.raises(FaceCoreError) as info:
        fn(*args, **kwargs)
    if isinstance(code, int):
        assert_code(info.value, code)
    else:
        assert isinstance(info.value, code), repr(info.value)
    after = listing(lib, appids)
    if after != before:
        diff = {k: (before.get(k), after.get(k)) for k in after if before.get(k) != after.get(k)}
        raise AssertionError(f"failed {fn.__name__} changed the store: {str(diff)[:600]}")
    return info.value


@contextmanager
def opened(path: Path, **kwargs: Any) -> Iterator[FaceLibrary]:
    lib = FaceLibrary(path, **kwargs)
    try:
        yield lib
    finally:
        lib.close()


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[FaceLibrary]:
    with opened(tmp_path / "lib") as library:
        yield library


def populate(lib: FaceLibrary, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Two groups of three users, 1-3 faces each; returns token -> embedding."""
    embs: dict[str, np.ndarray] = {}
    for g in ("g1", "g2"):
        for i, u in enumerate(("alice", "bob", "carol")):
            for _ in range(i + 1):
                e = unit(rng)
                f = lib.face_add(APP, g, u, nf(e), f"{u} in {g}")
                embs[f.face_token] = e
    return embs


# ---------------------------------------------------------------------------- groups


def test_group_add_and_list_sorted_paged(lib: FaceLibrary) -> None:
    names = ["g10", "G2", "a", "g1", "Z_9", "g2", "_x"]
    for n in names:
        lib.group_add(APP, n)
    assert lib.group_list(APP) == sorted(names)
    pages = [lib.group_list(APP, s, 3) for s in range(0, 9, 3)]
    assert [n for p in pages for n in p] == sorted(names)
    assert lib.group_list(APP, 2, 2) == sorted(names)[2:4]
    assert lib.group_list(APP, 7, 5) == []
    assert lib.group_list(APP, 100, 1000) == []
    assert lib.group_list(APP, 0, 1) == [min(names)]
    assert lib.group_list("other_app") == []
    assert lib.stats()["groups"] == {f"{APP}/{n}": 0 for n in names}


def test_group_add_existing_is_223101(lib: FaceLibrary) -> None:
    lib.group_add(APP, "g")
    fails(lib, 223101, lib.group_add, APP, "g")
    lib.face_add(APP, "g2", "u", nf(unit(np.random.default_rng(1))))
    fails(lib, 223101, lib.group_add, APP, "g2")  # created by face_add


def test_group_delete_runs_in_background_and_group_is_recreatable(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(2)
    e = unit(rng)
    lib.face_add(APP, "g", "u", nf(e), "info")
    lib.face_add(APP, "keep", "u", nf(e), "kept")
    lib.group_delete(APP, "g")
    assert lib.wait_deletions(timeout=30) is True
    assert lib.group_list(APP) == ["keep"]
    fails(lib, 223100, lib.user_list, APP, "g")
    fails(lib, 223100, lib.group_delete, APP, "g")
    assert [a for a in lib.iter_faces() if a[1] == "g"] == []
    # Re-created, the group is empty: nothing of the old one comes back.
    lib.group_add(APP, "g")
    assert lib.user_list(APP, "g") == []
    fails(lib, 223103, lib.user_get, APP, "g", "u")
    fails(lib, 222207, lib.identify, APP, ["g"], e)
    lib.face_add(APP, "g", "u", nf(e))
    (info,) = lib.user_get(APP, "g", "u")
    assert info.user_info == ""
    assert len(lib.face_list(APP, "g", "u")) == 1
    assert lib.user_get(APP, "keep", "u")[0].user_info == "kept"


# ---------------------------------------------------------------------------- faces


def test_face_add_creates_group_and_user(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(3)
    e = unit(rng)
    t0 = int(time.time())
    f = lib.face_add(APP, "g", "u1", nf(e, image=b"\xff\xd8jpeg"), "hello")
    assert isinstance(f, FaceInfo)
    assert len(f.face_token) == 32
    assert t0 <= f.ctime <= int(time.time()) + 1
    assert lib.group_list(APP) == ["g"]
    assert lib.user_list(APP, "g") == ["u1"]
    (info,) = lib.user_get(APP, "g", "u1")
    assert isinstance(info, UserInfo)
    assert (info.group_id, info.user_id, info.user_info) == ("g", "u1", "hello")
    assert t0 <= info.ctime <= int(time.time()) + 1
    assert lib.face_list(APP, "g", "u1") == [f]
    assert lib.face_image(APP, "g", f.face_token) == b"\xff\xd8jpeg"
    assert lib.stats() == {"faces": 1, "groups": {f"{APP}/g": 1}}
    (m,) = lib.identify(APP, ["g"], e)
    assert isinstance(m, Match)
    assert (m.group_id, m.user_id, m.user_info, m.face_token) == ("g", "u1", "hello", f.face_token)
    assert m.score == pytest.approx(100.0, abs=1e-3)


def test_face_add_second_face_keeps_user_info_when_none(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(4)
    f1 = lib.face_add(APP, "g", "u", nf(unit(rng)), "first")
    f2 = lib.face_add(APP, "g", "u", nf(unit(rng)))
    assert lib.user_get(APP, "g", "u")[0].user_info == "first"
    assert {f.face_token for f in lib.face_list(APP, "g", "u")} == {f1.face_token, f2.face_token}
    # The same token in another group is another face: allowed.
    lib.face_add(APP, "g_other", "u", nf(unit(rng), f1.face_token))
    assert lib.stats()["faces"] == 3


def test_face_image_absent_is_none(lib: FaceLibrary) -> None:
    f = lib.face_add(APP, "g", "u", nf(unit(np.random.default_rng(5))))
    assert lib.face_image(APP, "g", f.face_token) is None


def test_face_add_many_reports_item_errors_and_adds_the_rest(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(6)
    e = unit(rng, 6)
    dup = tok()
    lib.face_add(APP, "g", "old", nf(e[0], dup))
    items: list[tuple[str, NewFace, str | None]] = [
        ("a", nf(e[1]), "A"),
        ("bad-id", nf(e[2]), None),
        ("b", nf(e[3], dup), None),  # token already in the group
        ("c", nf(e[4]), "x" * 257),  # user_info too long
        ("a", nf(e[5]), None),  # second face of a user created in this batch
        ("d", NewFace("Z" * 32, e[2]), None),  # bad token
    ]
    out = lib.face_add_many(APP, "g", items)
    assert len(out) == len(items)
    assert isinstance(out[0], FaceInfo) and isinstance(out[4], FaceInfo)
    assert_code(out[1], 222018)
    assert_code(out[2], 223105)
    assert_code(out[3], 222010)
    assert_code(out[5], 222025)
    assert lib.user_list(APP, "g") == ["a", "old"]
    assert {f.face_token for f in lib.face_list(APP, "g", "a")} == {
        out[0].face_token,
        out[4].face_token,
    }
    assert lib.user_get(APP, "g", "a")[0].user_info == "A"
    assert lib.stats()["faces"] == 3


def test_face_add_many_duplicate_token_inside_one_batch(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(7)
    t = tok()
    out = lib.face_add_many(
        APP, "g", [("a", nf(unit(rng), t), None), ("b", nf(unit(rng), t), None)]
    )
    assert isinstance(out[0], FaceInfo)
    assert_code(out[1], 223105)
    assert lib.user_list(APP, "g") == ["a"]


def test_face_update_replaces_all_faces(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(8)
    old = [lib.face_add(APP, "g", "u", nf(unit(rng)), "before") for _ in range(3)]
    other_e = unit(rng)
    lib.face_add(APP, "g", "v", nf(other_e), "other")
    e_new = unit(rng)
    f = lib.face_update(APP, "g", "u", nf(e_new))
    assert lib.face_list(APP, "g", "u") == [f]
    assert lib.user_get(APP, "g", "u")[0].user_info == "before"  # not given: kept
    assert lib.stats()["faces"] == 2
    assert {t[3] for t in lib.iter_faces()} == {
        f.face_token,
        lib.face_list(APP, "g", "v")[0].face_token,
    }
    (m,) = lib.identify(APP, ["g"], e_new)
    assert (m.user_id, m.face_token) == ("u", f.face_token)
    assert m.score == pytest.approx(100.0, abs=1e-3)
    hits = lib.identify(APP, ["g"], e_new, max_user_num=20)
    assert not {h.face_token for h in hits} & {o.face_token for o in old}
    f2 = lib.face_update(APP, "g", "u", nf(unit(rng)), "after")
    assert lib.user_get(APP, "g", "u")[0].user_info == "after"
    assert lib.face_list(APP, "g", "u") == [f2]
    assert lib.user_get(APP, "g", "v")[0].user_info == "other"


def test_face_update_reusing_the_users_own_token(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(9)
    f1 = lib.face_add(APP, "g", "u", nf(unit(rng)))
    lib.face_add(APP, "g", "u", nf(unit(rng)))
    e = unit(rng)
    f = lib.face_update(APP, "g", "u", nf(e, f1.face_token))
    assert [x.face_token for x in lib.face_list(APP, "g", "u")] == [f1.face_token]
    (m,) = lib.identify(APP, ["g"], e)
    assert m.face_token == f1.face_token and m.score == pytest.approx(100.0, abs=1e-3)
    assert lib.stats()["faces"] == 1
    # The token is still unique in the group and deletable.
    fails(lib, 223105, lib.face_add, APP, "g", "w", nf(unit(rng), f.face_token))
    lib.face_delete(APP, "g", "u", f.face_token)
    assert lib.user_list(APP, "g") == []


def test_face_delete_last_face_removes_the_user(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(10)
    e1, e2 = unit(rng, 2)
    f1 = lib.face_add(APP, "g", "u", nf(e1), "info")
    f2 = lib.face_add(APP, "g", "u", nf(e2))
    lib.face_add(APP, "g", "v", nf(unit(rng)))
    lib.face_delete(APP, "g", "u", f1.face_token)
    assert lib.face_list(APP, "g", "u") == [f2]
    assert lib.identify(APP, ["g"], e1, max_user_num=20)[0].face_token != f1.face_token
    lib.face_delete(APP, "g", "u", f2.face_token)
    assert lib.user_list(APP, "g") == ["v"]
    fails(lib, 223103, lib.user_get, APP, "g", "u")
    fails(lib, 223103, lib.face_list, APP, "g", "u")
    assert lib.group_list(APP) == ["g"]  # the group stays
    assert lib.stats()["faces"] == 1
    # The freed token may be used again; the user comes back without its old user_info.
    lib.face_add(APP, "g", "u", nf(e1, f1.face_token))
    assert lib.user_get(APP, "g", "u")[0].user_info == ""


# ---------------------------------------------------------------------------- users


def test_user_get_all_groups(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(11)
    lib.face_add(APP, "g2", "u", nf(unit(rng)), "in g2")
    lib.face_add(APP, "g1", "u", nf(unit(rng)), "in g1")
    lib.face_add(APP, "g3", "other", nf(unit(rng)))
    got = lib.user_get(APP, "@ALL", "u")
    assert [(x.group_id, x.user_id, x.user_info) for x in got] == [
        ("g1", "u", "in g1"),
        ("g2", "u", "in g2"),
    ]
    assert [x.group_id for x in lib.user_get(APP, "g2", "u")] == ["g2"]
    fails(lib, 223103, lib.user_get, APP, "@ALL", "nobody")
    fails(lib, 223103, lib.user_get, APP, "g3", "u")


def test_user_list_paged_and_sorted(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(12)
    users = [f"user_{i}" for i in rng.permutation(25)]
    lib.face_add_many(APP, "g", [(u, nf(unit(rng)), None) for u in users])
    assert lib.user_list(APP, "g") == sorted(users)
    pages = [lib.user_list(APP, "g", s, 7) for s in range(0, 28, 7)]
    assert [u for p in pages for u in p] == sorted(users)
    assert lib.user_list(APP, "g", 24, 1000) == [sorted(users)[24]]
    assert lib.user_list(APP, "g", 25) == []
    lib.group_add(APP, "empty")
    assert lib.user_list(APP, "empty") == []


def test_user_page_is_user_list_with_each_users_record_and_faces(lib: FaceLibrary) -> None:
    populate(lib, np.random.default_rng(14))
    for start, length in ((0, 100), (0, 2), (1, 1), (2, 5), (3, 5)):
        page = lib.user_page(APP, "g2", start, length)
        assert [info.user_id for info, _ in page] == lib.user_list(APP, "g2", start, length)
        for info, faces in page:
            assert [info] == lib.user_get(APP, "g2", info.user_id)
            assert faces == lib.face_list(APP, "g2", info.user_id)
    assert [len(faces) for _, faces in lib.user_page(APP, "g1")] == [1, 2, 3]
    with pytest.raises(FaceCoreError) as e:
        lib.user_page(APP, "missing")
    assert e.value.code == 223100


def test_user_copy_copies_faces_and_info_skipping_present_faces(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(13)
    e = unit(rng, 3)
    fs = [lib.face_add(APP, "src", "u", nf(e[i], image=b"img%d" % i), "src info") for i in range(3)]
    lib.face_add(APP, "dst", "u", nf(e[0], fs[0].face_token), "dst info")
    lib.face_add(APP, "dst", "x", nf(unit(rng)))
    src_before = listing(lib)[APP]["src"]
    lib.user_copy(APP, "u", "src", "dst")
    assert {f.face_token for f in lib.face_list(APP, "dst", "u")} == {f.face_token for f in fs}
    assert lib.user_get(APP, "dst", "u")[0].user_info == "src info"
    assert listing(lib)[APP]["src"] == src_before
    assert lib.face_image(APP, "dst", fs[2].face_token) == b"img2"
    assert lib.stats()["groups"][f"{APP}/dst"] == 4
    for i in range(3):
        (m,) = lib.identify(APP, ["dst"], e[i])
        assert (m.user_id, m.face_token) == ("u", fs[i].face_token)
    # Copy into a group where the user is new.
    lib.group_add(APP, "dst2")
    lib.user_copy(APP, "u", "src", "dst2")
    assert lib.user_get(APP, "dst2", "u")[0].user_info == "src info"
    assert len(lib.face_list(APP, "dst2", "u")) == 3


def test_user_copy_when_every_face_is_already_there_still_copies_user_info(
    lib: FaceLibrary,
) -> None:
    rng = np.random.default_rng(38)
    e = unit(rng)
    f = lib.face_add(APP, "src", "u", nf(e), "new info")
    lib.face_add(APP, "dst", "u", nf(e, f.face_token), "old info")
    lib.user_copy(APP, "u", "src", "dst")
    assert [x.face_token for x in lib.face_list(APP, "dst", "u")] == [f.face_token]
    assert lib.user_get(APP, "dst", "u")[0].user_info == "new info"


def test_user_copy_of_a_face_another_user_has_there_is_223105_and_copies_nothing(
    lib: FaceLibrary,
) -> None:
    """One face cannot be two people: the copy names the owner and writes nothing, rather than
    answer success for a user that then does not exist or lacks that face."""
    rng = np.random.default_rng(39)
    e = unit(rng, 2)
    fs = [lib.face_add(APP, "src", "u", nf(e[i]), "u info") for i in range(2)]
    lib.face_add(APP, "dst", "other", nf(e[1], fs[1].face_token), "other info")
    err = fails(lib, 223105, lib.user_copy, APP, "u", "src", "dst")
    assert "'other'" in str(err) and fs[1].face_token in str(err)
    # Once the owner lets go of the face, the copy goes through.
    lib.face_add(APP, "dst", "other", nf(unit(rng)))
    lib.face_delete(APP, "dst", "other", fs[1].face_token)
    lib.user_copy(APP, "u", "src", "dst")
    assert {f.face_token for f in lib.face_list(APP, "dst", "u")} == {f.face_token for f in fs}


def test_user_copy_again_or_into_its_own_group_changes_nothing(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(40)
    lib.face_add(APP, "src", "u", nf(unit(rng)), "info")
    lib.group_add(APP, "dst")
    lib.user_copy(APP, "u", "src", "dst")
    before = listing(lib)
    lib.user_copy(APP, "u", "src", "dst")
    lib.user_copy(APP, "u", "src", "src")
    assert listing(lib) == before
    assert lib.verify().ok


def test_user_copy_keeps_the_destination_users_other_faces_and_ctime(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(41)
    f = lib.face_add(APP, "src", "u", nf(unit(rng)), "new info")
    own = lib.face_add(APP, "dst", "u", nf(unit(rng)), "old info")
    ctime = lib.user_get(APP, "dst", "u")[0].ctime
    lib.user_copy(APP, "u", "src", "dst")
    assert {x.face_token for x in lib.face_list(APP, "dst", "u")} == {f.face_token, own.face_token}
    (info,) = lib.user_get(APP, "dst", "u")
    assert (info.user_info, info.ctime) == ("new info", ctime)


def test_face_update_create_registers_a_missing_group_or_user(lib: FaceLibrary) -> None:
    """action_type=REPLACE: update that registers what is missing, in one step."""
    rng = np.random.default_rng(42)
    e = unit(rng, 3)
    f = lib.face_update(APP, "new_group", "u", nf(e[0]), "first", create=True)
    assert [x.face_token for x in lib.face_list(APP, "new_group", "u")] == [f.face_token]
    assert lib.user_get(APP, "new_group", "u")[0].user_info == "first"
    g = lib.face_update(APP, "new_group", "v", nf(e[1]), create=True)
    assert lib.user_get(APP, "new_group", "v")[0].user_info == ""
    h = lib.face_update(APP, "new_group", "u", nf(e[2]), create=True)  # an existing user: replaced
    assert [x.face_token for x in lib.face_list(APP, "new_group", "u")] == [h.face_token]
    assert lib.user_get(APP, "new_group", "u")[0].user_info == "first"
    fails(lib, 223105, lib.face_update, APP, "new_group", "u", nf(e[1], g.face_token), create=True)
    (m,) = lib.identify(APP, ["new_group"], e[2])
    assert (m.user_id, m.face_token) == ("u", h.face_token)
    assert lib.stats()["groups"][f"{APP}/new_group"] == 2
    assert lib.verify().ok


def test_ids_that_prefix_each_other_stay_apart(lib: FaceLibrary) -> None:
    """Keys are prefix-ordered: group "g" must not reach into "g1" or "g_1", user "u" not "u1"."""
    rng = np.random.default_rng(39)
    tokens = {}
    for g in ("g", "g1", "g_1", "G"):
        for u in ("u", "u1", "u_", "U"):
            tokens[(g, u)] = lib.face_add(APP, g, u, nf(unit(rng)), f"{g}.{u}").face_token
    for g in ("g", "g1", "g_1", "G"):
        assert lib.user_list(APP, g) == sorted(["u", "u1", "u_", "U"])
        for u in ("u", "u1", "u_", "U"):
            assert [x.face_token for x in lib.face_list(APP, g, u)] == [tokens[(g, u)]]
            assert lib.user_get(APP, g, u)[0].user_info == f"{g}.{u}"
    lib.user_delete(APP, "g", "u")
    assert lib.user_list(APP, "g") == sorted(["u1", "u_", "U"])
    lib.group_delete(APP, "g")
    assert lib.wait_deletions(30)
    assert lib.group_list(APP) == ["G", "g1", "g_1"]
    for g in ("g1", "g_1", "G"):
        assert len(lib.user_list(APP, g)) == 4
    assert lib.stats()["faces"] == 12
    assert {f[1] for f in lib.iter_faces()} == {"g1", "g_1", "G"}
    lib.face_add(APP, "g", "u1", nf(unit(rng)))
    assert lib.user_list(APP, "g") == ["u1"]


def test_user_delete(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(14)
    e = unit(rng, 3)
    lib.face_add(APP, "g", "u", nf(e[0]))
    lib.face_add(APP, "g", "u", nf(e[1]))
    fv = lib.face_add(APP, "g", "v", nf(e[2]))
    lib.face_add(APP, "g2", "u", nf(e[0]))
    lib.user_delete(APP, "g", "u")
    assert lib.user_list(APP, "g") == ["v"]
    for q in e[:2]:
        assert [m.user_id for m in lib.identify(APP, ["g"], q, max_user_num=20)] == ["v"]
    assert lib.identify(APP, ["g"], e[2])[0].face_token == fv.face_token
    assert lib.user_list(APP, "g2") == ["u"]  # the same user id in another group is untouched
    assert lib.stats()["faces"] == 2


# ---------------------------------------------------------------------------- identify


def test_identify_best_face_per_user_sorted_and_limited(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(15)
    q = unit(rng)
    # alice has three faces at decreasing similarity to q; bob and carol one each.
    faces = {
        "alice": [near(rng, q, 0.3), near(rng, q, 0.6), unit(rng)],
        "bob": [near(rng, q, 0.45)],
        "carol": [near(rng, q, 0.9)],
        "dave": [unit(rng)],
    }
    tokens: dict[str, list[str]] = {}
    for u, es in faces.items():
        tokens[u] = [lib.face_add(APP, "g", u, nf(x), f"info {u}").face_token for x in es]
    best = {u: max(float(np.dot(q, x)) for x in es) for u, es in faces.items()}
    order = sorted(best, key=lambda u: -best[u])
    got = lib.identify(APP, ["g"], q, max_user_num=20)
    assert [m.user_id for m in got] == order
    assert [m.user_info for m in got] == [f"info {u}" for u in order]
    assert got[0].face_token == tokens["alice"][0]
    assert all(a.score >= b.score for a, b in itertools.pairwise(got))
    assert len({m.user_id for m in got}) == len(got)  # one entry per user
    assert [m.user_id for m in lib.identify(APP, ["g"], q)] == order[:1]
    assert [m.user_id for m in lib.identify(APP, ["g"], q, max_user_num=2)] == order[:2]
    # match_threshold prunes: between the 2nd and 3rd score, exactly two remain.
    s = [m.score for m in got]
    thr = (s[1] + s[2]) / 2
    assert [
        m.user_id for m in lib.identify(APP, ["g"], q, match_threshold=thr, max_user_num=20)
    ] == order[:2]
    assert len(lib.identify(APP, ["g"], q, match_threshold=s[0], max_user_num=20)) >= 1
    # user_id restricts the search to that user's faces.
    (m,) = lib.identify(APP, ["g"], q, user_id="carol", max_user_num=20)
    assert (m.user_id, m.face_token) == ("carol", tokens["carol"][0])
    fails(lib, 222207, lib.identify, APP, ["g"], q, user_id="nobody")


def test_identify_merges_several_groups(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(16)
    q = unit(rng)
    e1, e2, e3 = near(rng, q, 0.3), near(rng, q, 0.5), near(rng, q, 0.7)
    lib.face_add(APP, "g1", "u", nf(e1), "u g1")
    lib.face_add(APP, "g2", "u", nf(e2), "u g2")
    lib.face_add(APP, "g3", "w", nf(e3), "w g3")
    lib.group_add(APP, "empty")
    got = lib.identify(APP, ["g3", "g2", "empty", "g1"], q, max_user_num=5)
    assert [(m.group_id, m.user_id, m.user_info) for m in got] == [
        ("g1", "u", "u g1"),
        ("g2", "u", "u g2"),
        ("g3", "w", "w g3"),
    ]
    # Ten groups is the most; a group named twice counts once in the answer.
    gs = [f"h{i}" for i in range(10)]
    cos = {}
    for i, g in enumerate(gs):
        e = near(rng, q, 0.1 * (i + 1))
        lib.face_add(APP, g, f"p{i}", nf(e))
        cos[g] = float(np.dot(q, e))
    got = lib.identify(APP, gs, q, max_user_num=20)
    assert [m.group_id for m in got] == sorted(gs, key=lambda g: -cos[g])
    assert len(lib.identify(APP, ["g1", "g1"], q, max_user_num=20)) == 1


def test_identical_embedding_reaches_match_threshold_100(lib: FaceLibrary) -> None:
    """A stored face's own embedding scores 100 and passes match_threshold=100, whatever the
    float32 rounding of its self-cosine (1 +- 1e-7)."""
    rng = np.random.default_rng(41)
    embs = unit(rng, 50)
    lib.face_add_many(APP, "g", [(f"u{i}", nf(e), None) for i, e in enumerate(embs)])
    for i, e in enumerate(embs):
        (m,) = lib.identify(APP, ["g"], e, match_threshold=100)
        assert m.user_id == f"u{i}" and m.score == 100.0  # not 99.99998749, under the threshold


def test_no_answered_score_is_under_match_threshold(lib: FaceLibrary) -> None:
    """The threshold is compared with the score answered, not with a cosine given slack: a score
    just under it (by float rounding) is not returned."""
    rng = np.random.default_rng(43)
    q = unit(rng)
    lib.face_add_many(
        APP, "g", [(f"u{i}", nf(near(rng, q, 0.1 + 0.02 * i)), None) for i in range(40)]
    )
    for m in lib.identify(APP, ["g"], q, max_user_num=20):
        for threshold in (m.score, np.nextafter(m.score, 101.0)):
            got = lib.identify_many(APP, ["g"], q[None], match_threshold=threshold, max_user_num=20)
            scores = [] if isinstance(got[0], Exception) else [x.score for x in got[0]]
            assert all(x >= threshold for x in scores)
            assert (m.score in scores) == (m.score >= threshold)


def test_identify_many_matches_identify(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(17)
    embs = populate(lib, rng)
    queries = np.stack([near(rng, e, 0.5) for e in list(embs.values())[:5]] + [unit(rng)])
    many = lib.identify_many(APP, ["g1", "g2"], queries, max_user_num=3)
    assert len(many) == len(queries)
    for qv, res in zip(queries, many):
        assert res == lib.identify(APP, ["g1", "g2"], qv, max_user_num=3)
    # A query that matches nothing answers 222207 in its place, the others still answer.
    exact = next(
        e for t, e in embs.items() if t in {f[3] for f in lib.iter_faces(APP) if f[1] == "g1"}
    )
    strict = lib.identify_many(APP, ["g1"], np.stack([exact, queries[5]]), match_threshold=90)
    assert isinstance(strict[0], list) and strict[0][0].score >= 90
    assert_code(strict[1], 222207)


def test_identify_scores_are_exact_fp32_cosines(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(18)
    stored = {}
    q = unit(rng)
    for i in range(40):
        e = near(rng, q, 0.2 + 0.05 * i) if i < 20 else unit(rng)
        stored[lib.face_add(APP, "g", f"u{i}", nf(e)).face_token] = e
    for query in (q, near(rng, q, 0.4), unit(rng)):
        got = lib.identify(APP, ["g"], query, max_user_num=20)
        assert len(got) == 20
        for m in got:
            cos = float(np.dot(query.astype(np.float64), stored[m.face_token].astype(np.float64)))
            assert m.score == pytest.approx(float(similarity_to_score(cos)), abs=1e-6)
        # and the top 20 by exact cosine, in order
        exact = sorted(stored, key=lambda t: -float(np.dot(query, stored[t])))[:20]
        assert [m.face_token for m in got] == exact


def test_identify_many_users_with_many_faces_finds_best_users(lib: FaceLibrary) -> None:
    """One user with many near faces must not crowd the other users out of max_user_num."""
    rng = np.random.default_rng(19)
    q = unit(rng)
    lib.face_add_many(APP, "g", [("crowd", nf(near(rng, q, 0.2)), None) for _ in range(200)])
    others = [near(rng, q, 0.5 + 0.02 * i) for i in range(25)]
    lib.face_add_many(APP, "g", [(f"other{i}", nf(e), None) for i, e in enumerate(others)])
    lib.face_add_many(APP, "g", [(f"far{i}", nf(unit(rng)), None) for i in range(300)])
    got = lib.identify(APP, ["g"], q, max_user_num=20)
    assert [m.user_id for m in got][:1] == ["crowd"]
    order = sorted(range(25), key=lambda i: -float(np.dot(q, others[i])))
    assert [m.user_id for m in got][1:] == [f"other{i}" for i in order[:19]]


# ---------------------------------------------------------------------------- tokens, kv, tools


def test_token_put_get_roundtrip(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(20)
    e = unit(rng)
    t = tok()
    attrs = {"age": 31, "gender": {"type": "female", "probability": 0.9}, "angle": [1.0, 2.0, 3.0]}
    lib.token_put("app", t, e, attrs)
    got, got_attrs = lib.token_get("app", t)
    assert got.dtype == np.float32 and np.array_equal(got, e)
    assert got_attrs == attrs
    # put again: replaced
    e2 = unit(rng)
    lib.token_put("app", t, e2, {"age": 1})
    got, got_attrs = lib.token_get("app", t)
    assert np.array_equal(got, e2) and got_attrs == {"age": 1}


def test_token_eviction_oldest_first(tmp_path: Path) -> None:
    rng = np.random.default_rng(21)
    with opened(tmp_path / "lib", token_capacity=3) as lib:
        ts = [tok() for _ in range(5)]
        for t in ts[:3]:
            lib.token_put("app", t, unit(rng), {})
        lib.token_put("app", ts[0], unit(rng), {"refreshed": True})  # ts[0] is now the newest
        lib.token_put("app", ts[3], unit(rng), {})
        fails(lib, 222209, lib.token_get, "app", ts[1])
        for t in (ts[0], ts[2], ts[3]):
            lib.token_get("app", t)
        lib.token_put("app", ts[4], unit(rng), {})
        fails(lib, 222209, lib.token_get, "app", ts[2])
        assert lib.token_get("app", ts[0])[1] == {"refreshed": True}
    # The count of stored tokens survives a restart: capacity still holds.
    with opened(tmp_path / "lib", token_capacity=3) as lib:
        for t in (ts[0], ts[3], ts[4]):
            lib.token_get("app", t)
        t5 = tok()
        lib.token_put("app", t5, unit(rng), {})
        fails(lib, 222209, lib.token_get, "app", ts[0])
        for t in (ts[3], ts[4], t5):
            lib.token_get("app", t)


def test_token_expiry(tmp_path: Path) -> None:
    rng = np.random.default_rng(22)
    t = tok()
    with opened(tmp_path / "lib") as lib:
        lib.token_put("app", t, unit(rng), {"a": 1})
        assert lib.token_get("app", t)[1] == {"a": 1}
    with opened(tmp_path / "lib", token_days=0) as lib:  # everything already expired
        fails(lib, 222209, lib.token_get, "app", t)


def test_token_errors(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(23)
    fails(lib, 222209, lib.token_get, "app", tok())
    fails(lib, 222025, lib.token_get, "app", "xyz")
    fails(lib, 222014, lib.token_get, "bad appid", tok())
    fails(lib, 222025, lib.token_put, "app", "A" * 32, unit(rng), {})
    fails(lib, InvalidArgument, lib.token_put, "app", tok(), unit(rng)[:64], {})
    fails(lib, InvalidArgument, lib.token_put, "app", tok(), unit(rng).astype(np.float64), {})


def test_tokens_are_per_appid(lib: FaceLibrary) -> None:
    """A token one appid detected is unknown to another, even for the same image (same token)."""
    rng = np.random.default_rng(24)
    t, e = tok(), unit(rng)
    lib.token_put("app", t, e, {"age": 30})
    fails(lib, 222209, lib.token_get, "other", t)
    lib.token_put("other", t, unit(rng), {"age": 50})
    assert np.array_equal(lib.token_get("app", t)[0], e)
    assert lib.token_get("app", t)[1] == {"age": 30} and lib.token_get("other", t)[1] == {"age": 50}


def test_kv(tmp_path: Path) -> None:
    with opened(tmp_path / "lib") as lib:
        assert lib.kv_get("journal", "k") is None
        lib.kv_put("journal", "k", b"v1")
        lib.kv_put("journal", "k", b"v2")
        lib.kv_put("other", "k", b"x")
        assert lib.kv_get("journal", "k") == b"v2"
        assert lib.kv_get("other", "k") == b"x"
        assert lib.kv_get("journal", "k2") is None
        assert listing(lib) == {APP: {}, "stats": {"faces": 0, "groups": {}}, "faces": []}
    with opened(tmp_path / "lib") as lib:
        assert lib.kv_get("journal", "k") == b"v2"


def test_iter_faces_and_stats_agree_with_listing(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(24)
    embs = populate(lib, rng)
    lib.face_add(APP, "g1", "alice", nf(unit(rng)))
    other = lib.face_add("app2", "g1", "alice", nf(unit(rng)))
    faces = sorted(lib.iter_faces())
    assert len(faces) == len(embs) + 2
    assert ("app2", "g1", "alice", other.face_token) in faces
    assert sorted(lib.iter_faces("app2")) == [("app2", "g1", "alice", other.face_token)]
    assert sorted(lib.iter_faces(APP)) == [f for f in faces if f[0] == APP]
    view = listing(lib, (APP, "app2"))
    for a in (APP, "app2"):
        for g, users in view[a].items():
            n = sum(len(v[2]) for v in users.values())
            assert view["stats"]["groups"][f"{a}/{g}"] == n
            assert n == sum(1 for f in faces if f[:2] == (a, g))
    assert view["stats"]["faces"] == len(faces)


def test_set_embedding_reindexes(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(25)
    e_old, e_new = unit(rng, 2)
    f = lib.face_add(APP, "g", "u", nf(e_old))
    lib.face_add(APP, "g", "v", nf(unit(rng)))
    lib.set_embedding(APP, "g", f.face_token, e_new)
    (m,) = lib.identify(APP, ["g"], e_new)
    assert m.face_token == f.face_token and m.score == pytest.approx(100.0, abs=1e-3)
    m = lib.identify(APP, ["g"], e_old, user_id="u")[0]
    cos = float(np.dot(e_old.astype(np.float64), e_new.astype(np.float64)))
    assert m.score == pytest.approx(float(similarity_to_score(cos)), abs=1e-6)
    fails(lib, 223106, lib.set_embedding, APP, "g", tok(), e_new)
    fails(lib, 223100, lib.set_embedding, APP, "nog", f.face_token, e_new)
    fails(lib, InvalidArgument, lib.set_embedding, APP, "g", f.face_token, e_new[:10])


# ---------------------------------------------------------------------------- error codes


BAD_GROUPS = ["", "a-b", "a/b", "a b", "x" * 49, "组", "all", "self", "me", "this", "next", "@ALL"]
BAD_USERS = ["", "a-b", "a/b", "u.v", "x" * 129, "all", "self", "me", "this", "next"]
BAD_APPIDS = ["", "a-b", "a/b", "x" * 65, "all", "next"]
BAD_TOKENS = ["", "0" * 31, "0" * 33, "A" * 32, "g" * 32, "0" * 30 + "/x"]


@pytest.fixture
def filled(lib: FaceLibrary) -> tuple[FaceLibrary, dict[str, np.ndarray]]:
    return lib, populate(lib, np.random.default_rng(99))


def test_id_length_limits_accepted(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(26)
    g, u, a = "G" * 48, "U" * 128, "A" * 48
    lib.face_add(a, g, u, nf(unit(rng)), "\u7ec4" * 85)  # 255 bytes
    lib.face_add(APP, "g", "u", nf(unit(rng)), "é" * 128)  # exactly 256 bytes
    assert lib.user_get(a, g, u)[0].user_info == "\u7ec4" * 85
    assert lib.user_get(APP, "g", "u")[0].user_info == "é" * 128
    assert lib.user_list(a, g) == [u]


@pytest.mark.parametrize("bad", BAD_GROUPS)
def test_group_id_format_222006(
    filled: tuple[FaceLibrary, dict[str, np.ndarray]], bad: str
) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    t = next(iter(embs))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.group_add, (APP, bad)),
        (lib.group_delete, (APP, bad)),
        (lib.user_list, (APP, bad)),
        (lib.face_add, (APP, bad, "alice", nf(e))),
        (lib.face_add_many, (APP, bad, [("alice", nf(e), None)])),
        (lib.face_update, (APP, bad, "alice", nf(e))),
        (lib.face_delete, (APP, bad, "alice", t)),
        (lib.face_list, (APP, bad, "alice")),
        (lib.face_image, (APP, bad, t)),
        (lib.user_delete, (APP, bad, "alice")),
        (lib.user_copy, (APP, "alice", bad, "g1")),
        (lib.user_copy, (APP, "alice", "g1", bad)),
        (lib.identify, (APP, [bad], e)),
        (lib.identify, (APP, ["g1", bad], e)),
        (lib.identify_many, (APP, [bad], e[None])),
        (lib.set_embedding, (APP, bad, t, e)),
    ]
    if bad != "@ALL":
        calls.append((lib.user_get, (APP, bad, "alice")))
    for fn, args in calls:
        fails(lib, 222006, fn, *args)


@pytest.mark.parametrize("bad", BAD_USERS)
def test_user_id_format_222018(filled: tuple[FaceLibrary, dict[str, np.ndarray]], bad: str) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    t = next(iter(embs))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.face_add, (APP, "g1", bad, nf(e))),
        (lib.face_update, (APP, "g1", bad, nf(e))),
        (lib.face_delete, (APP, "g1", bad, t)),
        (lib.face_list, (APP, "g1", bad)),
        (lib.user_get, (APP, "g1", bad)),
        (lib.user_get, (APP, "@ALL", bad)),
        (lib.user_delete, (APP, "g1", bad)),
        (lib.user_copy, (APP, bad, "g1", "g2")),
    ]
    for fn, args in calls:
        fails(lib, 222018, fn, *args)
    fails(lib, 222018, lib.identify, APP, ["g1"], e, user_id=bad)
    # face_add_many reports it per item and adds nothing for it
    before = listing(lib)
    (r,) = lib.face_add_many(APP, "g1", [(bad, nf(e, tok()), None)])
    assert_code(r, 222018)
    assert listing(lib) == before


def test_failed_face_add_creates_no_group(lib: FaceLibrary) -> None:
    """A face_add into a missing group that fails must not leave the group behind."""
    rng = np.random.default_rng(37)
    e = unit(rng)
    fails(lib, 222018, lib.face_add, APP, "new_group", "bad-user", nf(e))
    fails(lib, 222025, lib.face_add, APP, "new_group", "u", NewFace("XYZ", e))
    fails(lib, 222010, lib.face_add, APP, "new_group", "u", nf(e), "x" * 300)
    fails(lib, InvalidArgument, lib.face_add, APP, "new_group", "u", nf(e[:5]))
    before = listing(lib)
    out = lib.face_add_many(APP, "new_group", [("bad-user", nf(e), None)])
    assert_code(out[0], 222018)
    assert listing(lib) == before
    assert lib.group_list(APP) == []


def test_appid_at_most_48_characters(lib: FaceLibrary) -> None:
    """appid is [A-Za-z0-9_]{1,48} (docs/api.md: ids are matched whole)."""
    e = unit(np.random.default_rng(40))
    lib.face_add("A" * 48, "g", "u", nf(e))
    fails(lib, 222014, lib.face_add, "A" * 49, "g", "u", nf(e), appids=("A" * 48,))
    fails(lib, 222014, lib.group_list, "A" * 49, appids=("A" * 48,))


@pytest.mark.parametrize("bad", BAD_APPIDS)
def test_appid_format_222014(filled: tuple[FaceLibrary, dict[str, np.ndarray]], bad: str) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    t = next(iter(embs))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.group_add, (bad, "g")),
        (lib.group_list, (bad,)),
        (lib.group_delete, (bad, "g1")),
        (lib.face_add, (bad, "g1", "alice", nf(e))),
        (lib.face_add_many, (bad, "g1", [("alice", nf(e), None)])),
        (lib.face_update, (bad, "g1", "alice", nf(e))),
        (lib.face_delete, (bad, "g1", "alice", t)),
        (lib.face_list, (bad, "g1", "alice")),
        (lib.face_image, (bad, "g1", t)),
        (lib.user_get, (bad, "g1", "alice")),
        (lib.user_list, (bad, "g1")),
        (lib.user_copy, (bad, "alice", "g1", "g2")),
        (lib.user_delete, (bad, "g1", "alice")),
        (lib.identify, (bad, ["g1"], e)),
        (lib.set_embedding, (bad, "g1", t, e)),
    ]
    for fn, args in calls:
        fails(lib, 222014, fn, *args)
    with pytest.raises(FaceCoreError) as info:
        list(lib.iter_faces(bad))
    assert_code(info.value, 222014)


@pytest.mark.parametrize("bad", BAD_TOKENS)
def test_face_token_format_222025(
    filled: tuple[FaceLibrary, dict[str, np.ndarray]], bad: str
) -> None:
    lib, _ = filled
    e = unit(np.random.default_rng(27))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.face_add, (APP, "g1", "alice", NewFace(bad, e))),
        (lib.face_update, (APP, "g1", "alice", NewFace(bad, e))),
        (lib.face_delete, (APP, "g1", "alice", bad)),
        (lib.face_image, (APP, "g1", bad)),
        (lib.set_embedding, (APP, "g1", bad, e)),
        (lib.token_put, (APP, bad, e, {})),
        (lib.token_get, (APP, bad)),
    ]
    for fn, args in calls:
        fails(lib, 222025, fn, *args)


@pytest.mark.parametrize("info", ["x" * 257, "\u7ec4" * 86, "é" * 129])
def test_user_info_too_long_222010(
    filled: tuple[FaceLibrary, dict[str, np.ndarray]], info: str
) -> None:
    lib, _ = filled
    rng = np.random.default_rng(28)
    fails(lib, 222010, lib.face_add, APP, "g1", "alice", nf(unit(rng)), info)
    fails(lib, 222010, lib.face_add, APP, "g1", "newuser", nf(unit(rng)), info)
    fails(lib, 222010, lib.face_update, APP, "g1", "alice", nf(unit(rng)), info)


def test_paging_ranges_222002_222003(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    pagers: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.group_list, (APP,)),
        (lib.user_list, (APP, "g1")),
    ]
    for fn, args in pagers:
        fails(lib, 222002, fn, *args, start=-1)
        fails(lib, 222002, fn, *args, start=1.5)
        fails(lib, 222003, fn, *args, length=0)
        fails(lib, 222003, fn, *args, length=1001)
        fails(lib, 222003, fn, *args, length=-5)
        assert fn(*args, start=0, length=1000) == fn(*args)


def test_identify_argument_errors(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    fails(lib, 222021, lib.identify, APP, ["g1"], e, max_user_num=0)
    fails(lib, 222021, lib.identify, APP, ["g1"], e, max_user_num=21)
    assert len(lib.identify(APP, ["g1"], e, max_user_num=20)) == 3
    for thr in (-1, 100.5, float("nan")):
        err = fails(lib, FaceCoreError, lib.identify, APP, ["g1"], e, match_threshold=thr)
        assert err.code is not None  # the spec names no code: any 2220xx "param format" code
        assert 222001 <= err.code <= 222026
    fails(lib, 223104, lib.identify, APP, [f"g{i}" for i in range(11)], e)
    fails(lib, 222005, lib.identify, APP, [], e)
    fails(lib, 222005, lib.identify, APP, "g1", e)
    fails(lib, 223100, lib.identify, APP, ["g1", "missing"], e)
    fails(lib, InvalidArgument, lib.identify, APP, ["g1"], e[:64])
    fails(lib, InvalidArgument, lib.identify, APP, ["g1"], e.astype(np.float64))
    fails(lib, InvalidArgument, lib.identify_many, APP, ["g1"], np.zeros((2, 64), np.float32))
    nan = e.copy()
    nan[0] = np.nan
    fails(lib, InvalidArgument, lib.identify, APP, ["g1"], nan)


def test_no_match_222207(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    rng = np.random.default_rng(29)
    fails(lib, 222207, lib.identify, APP, ["g1"], unit(rng), match_threshold=99)
    lib.group_add(APP, "empty")
    fails(lib, 222207, lib.identify, APP, ["empty"], unit(rng))
    fails(lib, 222207, lib.identify, APP, ["g1"], unit(rng), user_id="nobody")


def test_embedding_errors_on_add(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    rng = np.random.default_rng(30)
    bad = [unit(rng)[:100], unit(rng).astype(np.float64), np.full(DIM, np.nan, np.float32)]
    for e in bad:
        fails(lib, InvalidArgument, lib.face_add, APP, "g1", "alice", nf(e))
        fails(lib, InvalidArgument, lib.face_update, APP, "g1", "alice", nf(e))


def test_missing_group_223100(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    t = next(iter(embs))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.group_delete, (APP, "nog")),
        (lib.face_update, (APP, "nog", "alice", nf(e))),
        (lib.face_delete, (APP, "nog", "alice", t)),
        (lib.face_list, (APP, "nog", "alice")),
        (lib.face_image, (APP, "nog", t)),
        (lib.user_get, (APP, "nog", "alice")),
        (lib.user_list, (APP, "nog")),
        (lib.user_delete, (APP, "nog", "alice")),
        (lib.user_copy, (APP, "alice", "nog", "g2")),
        (lib.identify, (APP, ["nog"], e)),
        (lib.identify_many, (APP, ["g1", "nog"], e[None])),
    ]
    for fn, args in calls:
        fails(lib, 223100, fn, *args)


def test_missing_user_223103(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, embs = filled
    e = next(iter(embs.values()))
    calls: list[tuple[Callable[..., Any], tuple[Any, ...]]] = [
        (lib.face_update, (APP, "g1", "nobody", nf(e))),
        (lib.face_list, (APP, "g1", "nobody")),
        (lib.user_get, (APP, "g1", "nobody")),
        (lib.user_get, (APP, "@ALL", "nobody")),
        (lib.user_delete, (APP, "g1", "nobody")),
        (lib.user_copy, (APP, "nobody", "g1", "g2")),
    ]
    for fn, args in calls:
        fails(lib, 223103, fn, *args)


def test_face_exists_223105(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    rng = np.random.default_rng(31)
    alice = lib.face_list(APP, "g1", "alice")[0].face_token
    fails(lib, 223105, lib.face_add, APP, "g1", "alice", nf(unit(rng), alice))
    fails(lib, 223105, lib.face_add, APP, "g1", "bob", nf(unit(rng), alice))
    fails(lib, 223105, lib.face_add, APP, "g1", "newuser", nf(unit(rng), alice), "i")
    fails(lib, 223105, lib.face_update, APP, "g1", "bob", nf(unit(rng), alice))


def test_face_missing_223106(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    alice = lib.face_list(APP, "g1", "alice")[0].face_token
    fails(lib, 223106, lib.face_delete, APP, "g1", "alice", tok())
    fails(lib, 223106, lib.face_delete, APP, "g1", "bob", alice)  # another user's face
    fails(lib, 223106, lib.face_delete, APP, "g2", "alice", alice)  # another group's face


def test_dst_group_missing_223111(filled: tuple[FaceLibrary, dict[str, np.ndarray]]) -> None:
    lib, _ = filled
    fails(lib, 223111, lib.user_copy, APP, "alice", "g1", "nog")
    fails(lib, 223100, lib.user_copy, APP, "alice", "nog", "nog2")  # the source is checked first


# ---------------------------------------------------------------------------- deletion (223128)


def _block_deletions(lib: FaceLibrary) -> threading.Event:
    """Hold the library's background deletion until the returned event is set.

    A real deletion is a few range deletes and ends within milliseconds even for 20k faces, so a
    test cannot otherwise observe the group while it is being deleted.
    """
    release = threading.Event()
    original = lib._delete_group

    def delayed(appid: str, group: str) -> None:
        assert release.wait(60)
        original(appid, group)

    lib._delete_group = delayed  # type: ignore[method-assign]
    return release


def _ops_on(
    lib: FaceLibrary, group: str, token: str, e: np.ndarray
) -> list[tuple[Callable[..., Any], tuple[Any, ...]]]:
    return [
        (lib.group_add, (APP, group)),
        (lib.group_delete, (APP, group)),
        (lib.face_add, (APP, group, "u0", nf(e))),
        (lib.face_add, (APP, group, "brand_new", nf(e))),
        (lib.face_add_many, (APP, group, [("u0", nf(e), None)])),
        (lib.face_update, (APP, group, "u0", nf(e))),
        (lib.face_delete, (APP, group, "u0", token)),
        (lib.face_list, (APP, group, "u0")),
        (lib.face_image, (APP, group, token)),
        (lib.user_get, (APP, group, "u0")),
        (lib.user_list, (APP, group)),
        (lib.user_delete, (APP, group, "u0")),
        (lib.user_copy, (APP, "u0", group, "other")),
        (lib.user_copy, (APP, "u0", "other", group)),
        (lib.identify, (APP, [group], e)),
        (lib.identify, (APP, ["other", group], e)),
        (lib.identify_many, (APP, [group], e[None])),
        (lib.set_embedding, (APP, group, token, e)),
    ]


def _big_group(
    lib: FaceLibrary, group: str, n: int, rng: np.random.Generator
) -> tuple[str, np.ndarray]:
    embs = unit(rng, n)
    out = lib.face_add_many(APP, group, [(f"u{i // 4}", nf(embs[i]), "i") for i in range(n)])
    assert all(isinstance(r, FaceInfo) for r in out)
    return out[0].face_token, embs[0]  # type: ignore[union-attr]


@pytest.mark.slow
def test_group_being_deleted_answers_223128(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(32)
    token, e = _big_group(lib, "big", 20_000, rng)
    lib.face_add(APP, "other", "u0", nf(unit(rng)), "other info")
    release = _block_deletions(lib)
    lib.group_delete(APP, "big")
    assert lib.wait_deletions(timeout=0.2) is False
    assert "big" not in lib.group_list(APP)
    assert f"{APP}/big" not in lib.stats()["groups"]
    for fn, args in _ops_on(lib, "big", token, e):
        fails(lib, 223128, fn, *args)
    assert [u.group_id for u in lib.user_get(APP, "@ALL", "u0")] == ["other"]
    release.set()
    assert lib.wait_deletions(timeout=60) is True
    for fn, args in _ops_on(lib, "big", token, e):
        if fn == lib.group_add or (fn == lib.face_add or fn == lib.face_add_many):
            continue
        code = 223111 if fn == lib.user_copy and args[3] == "big" else 223100
        fails(lib, code, fn, *args)
    assert [f for f in lib.iter_faces() if f[1] == "big"] == []
    lib.group_add(APP, "big")
    assert lib.user_list(APP, "big") == []
    fails(lib, 222207, lib.identify, APP, ["big"], e)
    assert lib.stats() == {"faces": 1, "groups": {f"{APP}/big": 0, f"{APP}/other": 1}}


@pytest.mark.slow
def test_group_deletion_of_20k_faces_completes(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(33)
    token, e = _big_group(lib, "big", 20_000, rng)
    lib.group_delete(APP, "big")
    # Until the deletion is done every answer is 223128; afterwards 223100. A stuck deletion
    # fails the test after a minute instead of hanging the suite.
    deadline = time.monotonic() + 60
    while True:
        assert time.monotonic() < deadline, "the group's deletion did not finish in 60 s"
        try:
            lib.user_list(APP, "big")
        except FaceCoreError as err:
            if err.code == 223128:
                continue
            assert_code(err, 223100)
            break
        raise AssertionError("user_list on a deleted group succeeded")
    assert lib.wait_deletions(timeout=60) is True
    assert list(lib.iter_faces()) == []
    lib.face_add(APP, "big", "u0", nf(e, token))
    assert lib.stats() == {"faces": 1, "groups": {f"{APP}/big": 1}}


def test_close_right_after_group_delete(tmp_path: Path) -> None:
    rng = np.random.default_rng(34)
    with opened(tmp_path / "lib") as lib:
        _big_group(lib, "big", 2000, rng)
        lib.face_add(APP, "keep", "u", nf(unit(rng)))
        lib.group_delete(APP, "big")
    with opened(tmp_path / "lib") as lib:
        assert lib.group_list(APP) == ["keep"]
        fails(lib, 223100, lib.user_list, APP, "big")
        assert {f[1] for f in lib.iter_faces()} == {"keep"}


# ---------------------------------------------------------------------------- persistence


def _child(script: str, tmp_path: Path, *, kill: bool) -> None:
    """Run `script` in a fresh interpreter; with kill=True it must SIGKILL itself at its end."""
    code = textwrap.dedent(script)
    if kill:
        code += "\nimport os, signal\nos.kill(os.getpid(), signal.SIGKILL)\n"
    # The child imports the same facecore as this test (installed, or in-tree with PYTHONPATH).
    package_root = str(Path(facecore.store.library.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([package_root, str(REPO)]))
    proc = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)],
        env=env,
        capture_output=True,
        timeout=240,
        check=False,
    )
    expected = -signal.SIGKILL if kill else 0
    assert proc.returncode == expected, proc.stderr.decode()[-3000:]


_CHILD_PRELUDE = """
import json, sys, uuid
from pathlib import Path
import numpy as np
from facecore.store.library import FaceLibrary, NewFace
from tests.facecore.test_library import listing, answers, build_store, APP
root = Path(sys.argv[1])
"""


def build_store(lib: FaceLibrary, seed: int) -> np.ndarray:
    """A deterministic mix of groups, users, faces, deletions, updates; returns query vectors."""
    rng = np.random.default_rng(seed)
    embs = unit(rng, 300)
    toks = [f"{seed:08x}{i:024x}" for i in range(300)]
    items = [(f"u{i % 40}", NewFace(toks[i], embs[i]), f"info {i % 40}") for i in range(200)]
    lib.face_add_many(APP, "ga", items[:120])
    lib.face_add_many(APP, "gb", items[120:])
    lib.face_add_many(
        "app2", "ga", [(f"u{i % 7}", NewFace(toks[i], embs[i]), None) for i in range(200, 230)]
    )
    lib.group_add(APP, "empty")
    for i in range(0, 60, 7):
        lib.face_delete(APP, "ga", f"u{i % 40}", toks[i])
    lib.user_delete(APP, "gb", "u5")
    lib.face_update(APP, "ga", "u3", NewFace(toks[250], embs[250]), "updated")
    lib.user_copy(APP, "u7", "ga", "gb")
    lib.group_add(APP, "doomed")
    lib.face_add(APP, "doomed", "x", NewFace(toks[260], embs[260]))
    lib.group_delete(APP, "doomed")
    assert lib.wait_deletions(30)
    queries = np.concatenate([embs[:40], unit(rng, 10)])
    return queries


def answers(lib: FaceLibrary, queries: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for appid in (APP, "app2"):
        res = lib.identify_many(appid, lib.group_list(appid), queries, max_user_num=5)
        out.append(
            [[list(m.__dict__.values()) for m in r] if isinstance(r, list) else r.code for r in res]
        )
    normal: list[Any] = json.loads(json.dumps(out))
    return normal


def test_close_and_reopen_is_identical(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    with opened(path) as lib:
        queries = build_store(lib, 1)
        view, ans = listing(lib, (APP, "app2")), answers(lib, queries)
    assert (path / "indexes").exists()
    for _ in range(2):  # the second reopen reads the snapshot written by the first reopen's close
        with opened(path) as lib:
            assert listing(lib, (APP, "app2")) == view
            assert answers(lib, queries) == ans


def test_missing_or_stale_or_corrupt_snapshot_rebuilds(tmp_path: Path) -> None:
    path = tmp_path / "lib"
    with opened(path) as lib:
        queries = build_store(lib, 2)
    stale = tmp_path / "stale_indexes"
    shutil.copytree(path / "indexes", stale)
    rng = np.random.default_rng(35)
    with opened(path) as lib:  # change the store after the snapshot `stale` was taken
        for u in ("u1", "u2"):
            lib.user_delete(APP, "ga", u)
        lib.face_add_many(APP, "ga", [(f"n{i}", nf(unit(rng)), None) for i in range(30)])
        lib.face_update(APP, "gb", "u7", nf(queries[0]))
        view, ans = listing(lib, (APP, "app2")), answers(lib, queries)
    shutil.rmtree(path / "indexes")
    shutil.copytree(stale, path / "indexes")
    with opened(path) as lib:
        assert listing(lib, (APP, "app2")) == view
        assert answers(lib, queries) == ans
    shutil.rmtree(path / "indexes")
    with opened(path) as lib:
        assert listing(lib, (APP, "app2")) == view
        assert answers(lib, queries) == ans
    for f in (path / "indexes").rglob("vectors.npy"):  # truncated: header intact, rows missing
        f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with opened(path) as lib:
        assert listing(lib, (APP, "app2")) == view
        assert answers(lib, queries) == ans
    for f in (path / "indexes").rglob("*"):  # every saved file garbage
        if f.is_file() and f.name != "manifest.json":
            f.write_bytes(b"\0garbage" * 3)
    with opened(path) as lib:
        assert listing(lib, (APP, "app2")) == view
        assert answers(lib, queries) == ans


@pytest.mark.slow
def test_killed_writer_is_recovered_from_rocksdb(tmp_path: Path) -> None:
    # 1: a writer that never closes (SIGKILL): no snapshot at all.
    _child(
        _CHILD_PRELUDE
        + """
lib = FaceLibrary(root / "lib")
q = build_store(lib, 3)
np.save(root / "q.npy", q)
(root / "view.json").write_text(json.dumps([listing(lib, (APP, "app2")), answers(lib, q)]))
""",
        tmp_path,
        kill=True,
    )
    q = np.load(tmp_path / "q.npy")
    view, ans = json.loads((tmp_path / "view.json").read_text())
    with opened(tmp_path / "lib") as lib:
        assert listing(lib, (APP, "app2")) == view
        assert answers(lib, q) == ans
    # 2: the library has a valid snapshot now; a writer changes it and is killed.
    _child(
        _CHILD_PRELUDE
        + """
lib = FaceLibrary(root / "lib")
q = np.load(root / "q.npy")
rng = np.random.default_rng(5)
lib.user_delete(APP, "ga", "u1")
lib.face_add_many(APP, "ga", [(f"k{i}", NewFace(uuid.uuid4().hex, q[i]), "k") for i in range(10)])
lib.face_update(APP, "gb", "u7", NewFace(uuid.uuid4().hex, q[20]))
lib.group_delete(APP, "empty")
assert lib.wait_deletions(30)
(root / "view.json").write_text(json.dumps([listing(lib, (APP, "app2")), answers(lib, q)]))
""",
        tmp_path,
        kill=True,
    )
    view2, ans2 = json.loads((tmp_path / "view.json").read_text())
    assert view2 != view
    with opened(tmp_path / "lib") as lib:
        assert listing(lib, (APP, "app2")) == view2
        assert answers(lib, q) == ans2


@pytest.mark.slow
def test_restart_in_the_middle_of_a_group_deletion(tmp_path: Path) -> None:
    """The process dies right after group_delete recorded the deletion, before the background
    work ran (simulated by not starting it): on reopen the deletion resumes and completes."""
    _child(
        _CHILD_PRELUDE
        + """
from tests.facecore.test_library import _big_group, unit, nf
lib = FaceLibrary(root / "lib")
token, e = _big_group(lib, "big", 20000, np.random.default_rng(6))
lib.face_add(APP, "keep", "u", nf(unit(np.random.default_rng(7))), "kept")
np.save(root / "e.npy", e)
(root / "token").write_text(token)
lib._start_delete = lambda appid, group: None
lib.group_delete(APP, "big")
""",
        tmp_path,
        kill=True,
    )
    e = np.load(tmp_path / "e.npy")
    token = (tmp_path / "token").read_text()
    with opened(tmp_path / "lib") as lib:
        assert lib.group_list(APP) == ["keep"]
        for fn, args in _ops_on(lib, "big", token, e):
            if fn in (lib.group_add, lib.face_add, lib.face_add_many):
                continue
            with pytest.raises(FaceCoreError) as info:
                fn(*args)
            assert info.value.code in (223128, 223100, 223111), info.value
        assert lib.wait_deletions(timeout=60) is True
        fails(lib, 223100, lib.user_list, APP, "big")
        assert {f[1] for f in lib.iter_faces()} == {"keep"}
        lib.group_add(APP, "big")
        assert lib.user_list(APP, "big") == []
    with opened(tmp_path / "lib") as lib:
        assert lib.group_list(APP) == ["big", "keep"]
        assert lib.stats() == {"faces": 1, "groups": {f"{APP}/big": 0, f"{APP}/keep": 1}}


# ---------------------------------------------------------------------------- appid isolation


def test_appids_are_isolated(lib: FaceLibrary) -> None:
    rng = np.random.default_rng(36)
    ea, eb = unit(rng, 2)
    fa = lib.face_add("appA", "g", "u", nf(ea), "A")
    fb = lib.face_add("appB", "g", "u", nf(eb), "B")
    lib.face_add("appA", "onlyA", "u", nf(unit(rng)))
    assert lib.group_list("appA") == ["g", "onlyA"]
    assert lib.group_list("appB") == ["g"]
    assert lib.user_get("appB", "@ALL", "u") == [lib.user_get("appB", "g", "u")[0]]
    assert lib.user_get("appB", "g", "u")[0].user_info == "B"
    assert lib.face_list("appA", "g", "u") == [fa]
    assert lib.face_list("appB", "g", "u") == [fb]
    (m,) = lib.identify("appB", ["g"], ea, max_user_num=20)
    assert (m.face_token, m.user_info) == (fb.face_token, "B")
    fails(lib, 223100, lib.identify, "appB", ["onlyA"], ea, appids=("appA", "appB"))
    # the same token may exist in both appids' group g
    lib.face_add("appB", "g", "u", nf(ea, fa.face_token))
    fails(lib, 223106, lib.face_delete, "appB", "g", "u", tok(), appids=("appA", "appB"))
    lib.face_delete("appB", "g", "u", fa.face_token)
    assert lib.face_list("appA", "g", "u") == [fa]
    lib.user_delete("appA", "g", "u")
    assert lib.face_list("appB", "g", "u") == [fb]
    lib.group_delete("appB", "g")
    assert lib.wait_deletions(30)
    assert lib.group_list("appA") == ["g", "onlyA"]
    assert lib.group_list("appB") == []
    assert lib.user_list("appA", "g") == []
    assert lib.stats()["groups"] == {"appA/g": 0, "appA/onlyA": 1}
    fails(lib, 223100, lib.user_list, "appB", "g", appids=("appA", "appB"))


def test_threads_reach_every_group_index(tmp_path: Path, rng: np.random.Generator) -> None:
    """`threads` (the server's --threads) is the search threads of each group's index: for new
    groups, after a reopen from the snapshot (saved by a library with another setting), and after
    a rebuild from RocksDB."""
    with pytest.raises(InvalidArgument):
        FaceLibrary(tmp_path / "bad", threads=-1)
    lib = FaceLibrary(tmp_path / "lib", threads=1)
    e = unit(rng)
    lib.face_add(APP, "g1", "u1", nf(e))
    lib.group_add(APP, "g2")
    assert {g.index.threads for g in lib._groups.values()} == {1}
    lib.close()
    lib = FaceLibrary(tmp_path / "lib", threads=2)  # from the snapshot saved by threads=1
    assert {g.index.threads for g in lib._groups.values()} == {2}
    lib.close()
    shutil.rmtree(tmp_path / "lib" / "indexes")
    lib = FaceLibrary(tmp_path / "lib", threads=1)  # rebuilt from the store
    assert {g.index.threads for g in lib._groups.values()} == {1}
    assert [m.user_id for m in lib.identify(APP, ["g1"], e)] == ["u1"]
    lib.close()
