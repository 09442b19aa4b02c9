"""Backup, restore and verify (facecore.store.backup, FaceLibrary.verify, `facecore backup/restore/
verify`): a backup taken under write load holds every face acknowledged before it began and
restores into a library that verifies clean and identifies them; verify finds each kind of damage
and repairs what it can; the CLI goes through a running server's admin socket.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facecore.store import backup
from facecore.store.keys import KeyStore
from facecore.store.library import FaceInfo, FaceLibrary, NewFace, iter_prefix

from tests.server.live_server import b64, facecore_cli, lfw, start_server

DIM = 128
APP = "app1"


def unit(rng: np.random.Generator) -> np.ndarray:
    x = rng.standard_normal(DIM).astype(np.float32)
    return (x / np.linalg.norm(x)).astype(np.float32)


def face(rng: np.random.Generator, image: bytes | None = None) -> NewFace:
    return NewFace(uuid.uuid4().hex, unit(rng), (1.0, 2.0, 3.0, 4.0), image)


@pytest.fixture
def lib(tmp_path: Path) -> Iterator[FaceLibrary]:
    library = FaceLibrary(tmp_path / "data")
    try:
        yield library
    finally:
        library.close()


def identifies(lib: FaceLibrary, group: str, user: str, token: str, e: np.ndarray) -> bool:
    (top,) = lib.identify(APP, [group], e)
    return (top.user_id, top.face_token) == (user, token) and top.score == 100.0


# ---------------------------------------------------------------------------- backup and restore


def test_backup_under_write_load_restores_every_acknowledged_face(tmp_path: Path) -> None:
    """Four threads add faces while the backup runs. Every face acknowledged before the backup
    began is in the restored library, which verifies clean, answers identify with it, and holds
    the counts its manifest records; nothing in it is half an operation."""
    data = tmp_path / "data"
    lib = FaceLibrary(data)
    keys = KeyStore(data / "auth")
    info, _ = keys.create(APP, "before the backup")
    acked: list[tuple[str, str, str, np.ndarray]] = []  # group, user, token, embedding
    lock = threading.Lock()
    warm, stop = threading.Event(), threading.Event()
    errors: list[str] = []

    def writer(i: int) -> None:
        rng = np.random.default_rng(i)
        n = 0
        try:
            while not stop.is_set() or n < 50:  # at least 50 each, however fast the backup
                group, user = f"g{n % 3}", f"w{i}_{n % 7}"
                f = face(rng, b"jpeg bytes")
                lib.face_add(APP, group, user, f, f"{user} info")
                with lock:
                    acked.append((group, user, f.face_token, f.embedding))
                    if len(acked) >= 40:
                        warm.set()
                n += 1
        except Exception as e:  # noqa: BLE001 -- reported after the join
            errors.append(repr(e))
            warm.set()

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    assert warm.wait(60)  # some writes land first
    with lock:
        before = list(acked)  # acknowledged before the backup began
    manifest = backup.backup(lib, keys, tmp_path / "bk")
    stop.set()
    for t in threads:
        t.join(60)
    assert not errors, errors
    lib.close()
    keys.close()

    assert manifest["format"] == backup.FORMAT and manifest["keys"]["keys"] == 1
    assert not (tmp_path / "bk.partial").exists()
    restored = tmp_path / "restored"
    assert backup.restore(tmp_path / "bk", restored) == manifest
    with FaceLibrary(restored) as again:
        report = again.verify()
        assert report.ok, (report.problems, report.examples)
        assert backup.counts_match(manifest, report.counts)
        faces = {token for _, _, _, token in again.iter_faces(APP)}
        assert {token for _, _, token, _ in before} <= faces
        assert faces <= {token for _, _, token, _ in acked}  # nothing that was never written
        assert len(faces) == manifest["library"]["faces"]
        for group, user, token, e in before:
            assert identifies(again, group, user, token, e)
            assert again.face_image(APP, group, token) == b"jpeg bytes"
    restored_keys = KeyStore(restored / "auth")
    assert restored_keys.key(info.api_key) == info
    restored_keys.close()


def test_restore_refuses_a_held_or_filled_directory(lib: FaceLibrary, tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    f = face(rng)
    lib.face_add(APP, "g", "u", f)
    backup.backup(lib, None, tmp_path / "bk")
    with pytest.raises(backup.BackupError, match="already exists"):
        backup.backup(lib, None, tmp_path / "bk")
    with pytest.raises(backup.BackupError, match="in use"):
        backup.restore(tmp_path / "bk", lib.path, force=True)  # this process holds it
    other = tmp_path / "other"
    with FaceLibrary(other) as o:
        o.face_add(APP, "g2", "v", face(rng))
    with pytest.raises(backup.BackupError, match="--force"):
        backup.restore(tmp_path / "bk", other)
    backup.restore(tmp_path / "bk", other, force=True)
    assert not (other / "indexes").exists()  # the old snapshot is not taken for the new store
    with FaceLibrary(other) as o:
        assert o.group_list(APP) == ["g"]
        assert identifies(o, "g", "u", f.face_token, f.embedding)
        assert o.verify().ok
    with pytest.raises(backup.BackupError, match="not a FaceCore backup"):
        backup.restore(tmp_path, tmp_path / "third")


def test_a_backup_taken_during_a_group_deletion_finishes_it(
    lib: FaceLibrary, tmp_path: Path
) -> None:
    """The deletion mark is in the backup; the restored library resumes the deletion, and the
    manifest's counts leave the group out, as verify does."""
    rng = np.random.default_rng(2)
    lib.face_add_many(APP, "gone", [(f"u{i}", face(rng), None) for i in range(50)])
    lib.face_add(APP, "kept", "u", face(rng))
    release = threading.Event()
    original = lib._delete_group

    def held(appid: str, group: str) -> None:
        assert release.wait(60)
        original(appid, group)

    lib._delete_group = held  # type: ignore[method-assign]
    lib.group_delete(APP, "gone")
    manifest = backup.backup(lib, None, tmp_path / "bk")
    release.set()
    assert manifest["library"]["groups"] == 1 and manifest["library"]["faces"] == 1
    backup.restore(tmp_path / "bk", tmp_path / "restored")
    with FaceLibrary(tmp_path / "restored") as again:
        assert again.wait_deletions(60)
        assert again.group_list(APP) == ["kept"]
        report = again.verify()
        assert report.ok and backup.counts_match(manifest, report.counts)


# ---------------------------------------------------------------------------- verify and repair


def raw(lib: FaceLibrary) -> Any:
    return lib._db


def key_of(lib: FaceLibrary, prefix: str) -> bytes:
    """The first key under `prefix`."""
    return next(iter_prefix(raw(lib), prefix.encode()))[0]


def drop(prefix: str) -> Callable[[FaceLibrary], None]:
    return lambda lib: raw(lib).delete(key_of(lib, prefix))


def put(key: str, value: bytes) -> Callable[[FaceLibrary], None]:
    return lambda lib: raw(lib).put(key.encode(), value)


def orphan_row(lib: FaceLibrary) -> None:
    token = bytes.fromhex(uuid.uuid4().hex)
    raw(lib).put(
        f"R/{APP}/g/{900:016x}".encode(), unit(np.random.default_rng(3)).tobytes() + token + b"u0"
    )


def duplicate_token(lib: FaceLibrary) -> None:
    """u1 gets a face with u0's first token: its own F/ and R/, T/ still naming u0's."""
    fkey = key_of(lib, f"F/{APP}/g/u0/")
    token = fkey.rsplit(b"/", 1)[1]
    row = lib._groups[(APP, "g")].next_row
    value = raw(lib)[fkey]
    raw(lib).put(f"F/{APP}/g/u1/".encode() + token, row.to_bytes(8, "little") + value[8:])
    emb = unit(np.random.default_rng(4)).tobytes()
    raw(lib).put(f"R/{APP}/g/{row:016x}".encode(), emb + bytes.fromhex(token.decode()) + b"u1")


def ghost_group(lib: FaceLibrary) -> None:
    """A group's data without its G/ record, written as face_add would have, then G/ removed."""
    lib.face_add(APP, "ghost", "gu", face(np.random.default_rng(5)))
    raw(lib).delete(f"G/{APP}/ghost".encode())
    del lib._groups[(APP, "ghost")]


def malformed_keys(lib: FaceLibrary) -> None:
    """A face key without its token, a key that names no group, a row key that is not hex."""
    for key in (f"F/{APP}/g/u0", f"U/{APP}/bad-id", f"R/{APP}/g/zz"):
        raw(lib).put(key.encode(), b"x")


def index_drift(lib: FaceLibrary) -> None:
    g = lib._groups[(APP, "g")]
    g.index.remove(np.array([0], np.int64))


def index_swap(lib: FaceLibrary) -> None:
    """As many rows in the index as in the store, but one of them not the store's."""
    g = lib._groups[(APP, "g")]
    g.index.remove(np.array([0], np.int64))
    g.index.add(np.array([999], np.int64), unit(np.random.default_rng(8))[None])


def detected_without_order(lib: FaceLibrary) -> None:
    raw(lib).delete(key_of(lib, "E/"))


def order_dangling(lib: FaceLibrary) -> None:
    raw(lib).put(f"E/{1:016x}/{APP}/{uuid.uuid4().hex}".encode(), b"")


# Each damage, and what verify must report for it (kind -> count).
DAMAGE: dict[str, tuple[Callable[[FaceLibrary], None], dict[str, int]]] = {
    # The face goes, and with it its T/ entry and image, which now name no face.
    "row deleted": (
        drop(f"R/{APP}/g/"),
        {"face_without_row": 1, "token_dangling": 1, "image_orphan": 1, "index_size": 1},
    ),
    "orphan row": (orphan_row, {"row_orphan": 1, "index_size": 1, "next_row": 1}),
    "token deleted": (drop(f"T/{APP}/g/"), {"token_missing": 1}),
    "dangling token": (put(f"T/{APP}/g/{'ab' * 16}", b"\0" * 8 + b"u0"), {"token_dangling": 1}),
    "orphan image": (put(f"I/{APP}/g/{'cd' * 16}", b"jpeg"), {"image_orphan": 1}),
    "user record deleted": (drop(f"U/{APP}/g/u1"), {"face_without_user": 1}),
    "user without faces": (
        put(f"U/{APP}/g/nobody", b'{"user_info": "", "ctime": 1}'),
        {"user_without_faces": 1},
    ),
    "duplicate token": (duplicate_token, {"duplicate_token": 1, "index_size": 1, "next_row": 1}),
    "group record missing": (ghost_group, {"group_missing": 1}),
    "group record damaged": (put(f"G/{APP}/g", b"not json"), {"group_record": 1}),
    "malformed keys": (malformed_keys, {"malformed_key": 3}),
    "index drift": (index_drift, {"index_size": 1}),
    "index swap": (index_swap, {"index_rows": 1}),
    "detected token without order": (detected_without_order, {"detected_without_order": 1}),
    "order entry without token": (order_dangling, {"order_dangling": 1}),
}


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_verify_finds_and_repairs(lib: FaceLibrary, damage: str) -> None:
    """One kind of damage on a clean library: verify reports exactly it; repair fixes it in
    place (the faces it did not touch still identify themselves) and a reopened library
    verifies clean too."""
    rng = np.random.default_rng(6)
    faces = {}
    for u in ("u0", "u1", "u2"):
        for _ in range(2):
            f = face(rng, b"img")
            lib.face_add(APP, "g", u, f, f"{u} info")
            faces[f.face_token] = (u, f.embedding)
    lib.token_put(APP, uuid.uuid4().hex, unit(rng), {})
    lib.token_put(APP, uuid.uuid4().hex, unit(rng), {})
    assert lib.verify().ok
    corrupt, expected = DAMAGE[damage]
    corrupt(lib)
    report = lib.verify()
    assert report.problems == expected, report.examples
    assert not report.ok and not report.repaired
    fixed = lib.verify(repair=True)
    assert fixed.problems == expected and fixed.repaired
    assert fixed.ok, fixed.remaining
    kept = {t for _, _, _, t in lib.iter_faces(APP)}
    for token, (u, e) in faces.items():
        if token in kept and (APP, "g") in lib._groups:
            (top,) = lib.identify(APP, ["g"], e, user_id=u)
            assert top.face_token == token
    path = lib.path
    lib.close()
    with FaceLibrary(path) as again:
        assert again.verify().ok


def test_repair_keeps_what_it_can(lib: FaceLibrary) -> None:
    """The damages with a choice: a face without its row is dropped (nothing to search it by);
    a user without its record gets one; a group without its record is adopted with its faces;
    of two faces claiming a token, the one T/ names stays; an unknown key is left alone."""
    rng = np.random.default_rng(7)
    a, b = face(rng), face(rng)
    lib.face_add(APP, "g", "u0", a, "u0 info")
    lib.face_add(APP, "g", "u1", b, "u1 info")
    raw(lib).delete(f"U/{APP}/g/u1".encode())
    duplicate_token(lib)
    ghost_group(lib)
    raw(lib).put(b"Zz/not/ours", b"?")
    report = lib.verify(repair=True)
    assert report.remaining == {"unknown_key": 1}
    assert report.examples["unknown_key"] == ["Zz/not/ours"]
    assert lib.user_get(APP, "g", "u1")[0].user_info == ""  # the record is back, its info not
    assert [f.face_token for f in lib.face_list(APP, "g", "u0")] == [a.face_token]
    assert [f.face_token for f in lib.face_list(APP, "g", "u1")] == [b.face_token]
    assert identifies(lib, "g", "u0", a.face_token, a.embedding)
    assert lib.group_list(APP) == ["g", "ghost"]
    assert lib.user_list(APP, "ghost") == ["gu"]
    raw(lib).delete(b"Zz/not/ours")
    assert lib.verify().ok


def test_verify_runs_beside_writers(lib: FaceLibrary) -> None:
    """verify while threads add and delete reports nothing: what a write changes under a screen
    is checked again under the group's lock."""
    stop = threading.Event()
    errors: list[str] = []

    def churn(i: int) -> None:
        rng = np.random.default_rng(10 + i)
        try:
            while not stop.is_set():
                out = lib.face_add_many(
                    APP, f"g{i % 2}", [(f"u{j}", face(rng), None) for j in range(5)]
                )
                for j, r in enumerate(out):
                    assert isinstance(r, FaceInfo)
                    if j % 2:
                        lib.face_delete(APP, f"g{i % 2}", f"u{j}", r.face_token)
        except Exception as e:  # noqa: BLE001 -- reported after the join
            errors.append(repr(e))

    threads = [threading.Thread(target=churn, args=(i,)) for i in range(3)]
    for t in threads:
        t.start()
    try:
        for _ in range(10):
            report = lib.verify()
            assert report.ok, (report.problems, report.examples)
    finally:
        stop.set()
        for t in threads:
            t.join(60)
    assert not errors, errors


# ---------------------------------------------------------------------------- the CLI and a server


@pytest.mark.slow
def test_cli_backup_restore_verify_through_a_running_server(tmp_path: Path) -> None:
    """One live server: `facecore verify` and `backup` go through its admin socket while a
    client keeps adding faces; `restore` refuses its data directory; the backup restores into
    another, which verifies clean and identifies every face acknowledged before the backup."""
    people = ["Aaron_Sorkin", "Abbas_Kiarostami", "Aaron_Patterson", "Abdullah_Gul"]
    late = ["Al_Pacino", "Adam_Sandler", "Abel_Pacheco", "Afton_Smith"]
    (tmp_path / "srv").mkdir()
    server = start_server(tmp_path / "srv")
    data = server.data
    try:
        before = {}
        for person in people:
            body = {"image": b64(lfw(person)), "image_type": "BASE64", "group_id": "g"}
            before[person] = server.ok("face/add", {**body, "user_id": person})["face_token"]
        key = json.loads(
            facecore_cli("keys", "create", "--appid", "test_app", "--data", str(data)).stdout
        )

        out = facecore_cli("verify", "--data", str(data), "--json")
        assert out.returncode == 0, out.stderr
        assert json.loads(out.stdout)["counts"]["faces"] == len(people)
        out = facecore_cli("verify", "--data", str(data), "--repair")
        assert out.returncode == 0 and "nothing remains" in out.stdout, out.stdout + out.stderr

        added: list[str] = []

        def add_late() -> None:
            for person in late:
                body = {"image": b64(lfw(person)), "image_type": "BASE64", "group_id": "g"}
                added.append(server.ok("face/add", {**body, "user_id": person})["face_token"])

        writer = threading.Thread(target=add_late)
        writer.start()
        out = facecore_cli("backup", str(tmp_path / "bk"), "--data", str(data))
        writer.join(120)
        assert out.returncode == 0, out.stderr
        manifest = json.loads(out.stdout)
        assert len(people) <= manifest["library"]["faces"] <= len(people) + len(late)
        assert manifest["keys"]["keys"] == 1

        out = facecore_cli("restore", str(tmp_path / "bk"), "--data", str(data), "--force")
        assert out.returncode == 1 and "server is running" in out.stderr
        assert server.ok("face/list", {"group_id": "g", "user_id": people[0]})
    finally:
        server.stop()

    restored = tmp_path / "restored"
    out = facecore_cli("restore", str(tmp_path / "bk"), "--data", str(restored), "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    report = json.loads(out.stdout)
    assert report["ok"] and report["matches_manifest"]
    out = facecore_cli("verify", "--data", str(restored))
    assert out.returncode == 0 and "no problems found" in out.stdout
    with FaceLibrary(restored) as lib:
        for person, token in before.items():
            embedding, _ = lib.token_get("test_app", token)  # the detected face's own embedding
            (top,) = lib.identify("test_app", ["g"], embedding)
            assert (top.user_id, top.face_token) == (person, token) and top.score > 99.9
    restored_keys = KeyStore(restored / "auth")
    assert restored_keys.key(key["api_key"]) is not None
    restored_keys.close()


def test_cli_verify_exits_1_until_repaired(tmp_path: Path) -> None:
    """Without a server the CLI opens the library itself: verify exits 1 on a damaged store,
    --repair fixes it, and verify then exits 0; backup refuses an existing destination."""
    data = tmp_path / "data"
    rng = np.random.default_rng(9)
    with FaceLibrary(data) as lib:
        lib.face_add(APP, "g", "u", face(rng))
        lib.face_add(APP, "g", "v", face(rng))
        raw(lib).delete(key_of(lib, f"T/{APP}/g/"))
    out = facecore_cli("verify", "--data", str(data))
    assert out.returncode == 1 and "token_missing: 1" in out.stdout, out.stdout + out.stderr
    out = facecore_cli("verify", "--data", str(data), "--repair", "--json")
    assert out.returncode == 0, out.stdout + out.stderr
    assert json.loads(out.stdout)["problems"] == {"token_missing": 1}
    assert facecore_cli("verify", "--data", str(data)).returncode == 0
    out = facecore_cli("backup", str(tmp_path), "--data", str(data))
    assert out.returncode == 1 and "already exists" in out.stderr
