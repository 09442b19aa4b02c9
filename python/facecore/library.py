"""The face library: appids -> groups -> users -> faces, on RocksDB, with one int8 index per group.

Durability and atomicity: every operation is one RocksDB write batch (WAL on); in-memory state (the
per-group VectorIndex and its row table) changes only after the batch is written, under the group's
write lock, so a search sees either all of an operation or none of it. Searches take no lock: they
read the index (itself safe for concurrent search and add) and the row table, whose entries for a
row are complete before the row is added to the index.

Key layout (docs/storage.md): all keys are UTF-8, fields separated by "/", which no id may contain.
    G/{appid}/{group}                  group: JSON {ctime, next_row, deleting}
    U/{appid}/{group}/{user}           user: JSON {user_info, ctime}
    F/{appid}/{group}/{user}/{token}   face: row int64, ctime int64, box 4 x f32, embedding d x f32
    T/{appid}/{group}/{token}          token -> user (uniqueness inside a group, delete by token)
    I/{appid}/{group}/{token}          registration image bytes (for reindex)
    D/{token}                          detected-face token: ts int64, embedding, attributes JSON
    E/{ts:016x}/{token}                eviction order of detected-face tokens
    K/{namespace}/{key}                small metadata for tools (the import journal)

On open, each group's index is rebuilt from its F/ keys, or loaded from `indexes/` when the saved
snapshot provably matches the store: the snapshot records RocksDB's latest sequence number at save
time, and any write after it changes that number.
"""

from __future__ import annotations

import json
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from rocksdict import Options, Rdict, WriteBatch, WriteOptions

from facecore.errors import FaceCoreError, InvalidArgument
from facecore.score import score_to_similarity, similarity_to_score
from facecore.search import VectorIndex

_ID = re.compile(r"^[A-Za-z0-9_]+$")
_TOKEN = re.compile(r"^[0-9a-f]{32}$")
RESERVED = frozenset({"all", "self", "me", "this", "next"})
MAX_GROUPS_PER_SEARCH = 10
_FACE_HEAD = struct.Struct("<qq4f")  # row, ctime, box
_SNAPSHOT_FORMAT = 1


@dataclass(frozen=True)
class NewFace:
    face_token: str
    embedding: np.ndarray
    box: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    image: bytes | None = None


@dataclass(frozen=True)
class FaceInfo:
    face_token: str
    ctime: int


@dataclass(frozen=True)
class UserInfo:
    group_id: str
    user_id: str
    user_info: str
    ctime: int


@dataclass(frozen=True)
class Match:
    group_id: str
    user_id: str
    user_info: str
    score: float
    face_token: str


def _err(code: int, message: str) -> FaceCoreError:
    return FaceCoreError(message, code)


def check_id(value: object, name: str, max_bytes: int, code: int) -> str:
    if not isinstance(value, str) or not _ID.match(value) or len(value) > max_bytes:
        raise _err(code, f"{name} must be 1-{max_bytes} characters of [A-Za-z0-9_], got {value!r}")
    if value.lower() in RESERVED:
        raise _err(code, f"{name} {value!r} is a reserved word")
    return value


def check_appid(appid: object) -> str:
    return check_id(appid, "appid", 64, 222014)


def check_group(group_id: object) -> str:
    return check_id(group_id, "group_id", 48, 222006)


def check_user(user_id: object) -> str:
    return check_id(user_id, "user_id", 128, 222018)


def check_token(token: object) -> str:
    if not isinstance(token, str) or not _TOKEN.match(token):
        raise _err(222025, f"face_token must be 32 lowercase hex characters, got {token!r}")
    return token


def check_user_info(user_info: object) -> str | None:
    if user_info is None:
        return None
    if not isinstance(user_info, str) or len(user_info.encode("utf-8")) > 256:
        raise _err(222010, "user_info must be a string of at most 256 UTF-8 bytes")
    return user_info


def check_page(start: object, length: object) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise _err(222002, f"start must be an integer >= 0, got {start!r}")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 1000:
        raise _err(222003, f"length must be an integer in 1..1000, got {length!r}")
    return start, length


class _Group:
    """In-memory state of one (appid, group): the index and the row table.

    Rows are assigned in order and never reused; `users[row]` / `tokens[row]` describe row `row`
    (an index into `user_names`, -1 for a removed row). Writers hold `lock`; readers take none.
    """

    def __init__(self, dim: int) -> None:
        self.index = VectorIndex(dim, kind="i8")
        self.lock = threading.Lock()
        self.user_rows: dict[str, set[int]] = {}
        self.user_ids: dict[str, int] = {}
        self.user_names: list[str] = []
        self.users = np.full(1024, -1, np.int32)
        self.tokens = np.zeros((1024, 16), np.uint8)
        self.token_rows: dict[str, int] = {}
        self.next_row = 0
        self.deleting = False

    def set_row(self, row: int, user: str, token: str) -> None:
        if row >= len(self.users):
            grow = max(row + 1, 2 * len(self.users))
            users = np.full(grow, -1, np.int32)
            users[: len(self.users)] = self.users
            tokens = np.zeros((grow, 16), np.uint8)
            tokens[: len(self.tokens)] = self.tokens
            self.tokens, self.users = tokens, users  # readers see old or new arrays, both valid
        uid = self.user_ids.get(user)
        if uid is None:
            uid = len(self.user_names)
            self.user_names.append(user)
            self.user_ids[user] = uid
        self.tokens[row] = np.frombuffer(bytes.fromhex(token), np.uint8)
        self.users[row] = uid
        self.next_row = max(self.next_row, row + 1)
        self.user_rows.setdefault(user, set()).add(row)
        self.token_rows[token] = row

    def clear_row(self, row: int, user: str, token: str) -> None:
        self.users[row] = -1
        rows = self.user_rows.get(user)
        if rows is not None:
            rows.discard(row)
            if not rows:
                del self.user_rows[user]
        self.token_rows.pop(token, None)

    def faces(self) -> int:
        return len(self.token_rows)


class FaceLibrary:
    """A persistent face library under `path` (created when missing). Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        dim: int = 128,
        token_capacity: int = 1_000_000,
        token_days: int = 30,
        sync_writes: bool = False,
    ) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise InvalidArgument(f"dim must be a positive int, got {dim!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.token_capacity = token_capacity
        self.token_seconds = token_days * 86400
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(self.path / "rocksdb"), opts)
        self._wopts = WriteOptions()
        self._wopts.sync = sync_writes  # False: survives a process kill, not a power cut
        self._groups: dict[tuple[str, str], _Group] = {}
        self._meta_lock = threading.Lock()  # group creation/removal and the group table
        self._token_lock = threading.Lock()
        self._deleters: list[threading.Thread] = []
        self._closed = False
        self._open()
        self._token_count = sum(1 for _ in self._iter_prefix(b"E/"))

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        loaded = self._load_snapshot()
        for key, value in self._iter_prefix(b"G/"):
            _, appid, group = key.decode().split("/")
            meta = json.loads(value)
            if (appid, group) in self._groups:
                self._groups[(appid, group)].deleting = meta.get("deleting", False)
                continue
            if meta.get("deleting", False):
                g = _Group(self.dim)  # its deletion resumes below; no index needed
                g.deleting = True
            else:
                g = self._rebuild(appid, group)
            self._groups[(appid, group)] = g
        del loaded
        for (appid, group), g in list(self._groups.items()):
            if g.deleting:
                self._start_delete(appid, group)

    def _rebuild(self, appid: str, group: str) -> _Group:
        g = _Group(self.dim)
        prefix = f"F/{appid}/{group}/".encode()
        rows, vecs = [], []
        for key, value in self._iter_prefix(prefix):
            _, _, _, user, token = key.decode().split("/")
            row = _FACE_HEAD.unpack_from(value)[0]
            g.set_row(row, user, token)
            rows.append(row)
            vecs.append(np.frombuffer(value, np.float32, self.dim, _FACE_HEAD.size))
            if len(rows) == 65536:
                g.index.add(np.array(rows, np.int64), np.stack(vecs))
                rows, vecs = [], []
        if rows:
            g.index.add(np.array(rows, np.int64), np.stack(vecs))
        return g

    def _snapshot_dir(self) -> Path:
        return self.path / "indexes"

    def _load_snapshot(self) -> bool:
        d = self._snapshot_dir()
        manifest = d / "manifest.json"
        if not manifest.exists():
            return False
        try:
            m = json.loads(manifest.read_text())
            if m.get("format") != _SNAPSHOT_FORMAT or m.get("dim") != self.dim:
                return False
            if m.get("sequence") != self._db.latest_sequence_number():
                return False  # the store changed after the snapshot: rebuild
            groups = {}
            for entry in m["groups"]:
                g = _Group(self.dim)
                g.index = VectorIndex.load(str(d / entry["index"]))
                table = np.load(d / entry["table"], allow_pickle=False)
                g.user_names = [str(u) for u in table["user_names"]]
                g.user_ids = {u: i for i, u in enumerate(g.user_names)}
                g.users = table["users"].copy()
                g.tokens = table["tokens"].copy()
                g.next_row = int(table["next_row"][0])
                for row in np.nonzero(g.users >= 0)[0]:
                    user = g.user_names[g.users[row]]
                    g.user_rows.setdefault(user, set()).add(int(row))
                    g.token_rows[bytes(g.tokens[row]).hex()] = int(row)
                groups[(entry["appid"], entry["group"])] = g
        except (OSError, ValueError, KeyError, FaceCoreError):
            return False
        self._groups.update(groups)
        return True

    def _save_snapshot(self) -> None:
        d = self._snapshot_dir()
        tmp = self.path / "indexes.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        entries = []
        for i, ((appid, group), g) in enumerate(sorted(self._groups.items())):
            if g.deleting:
                continue
            g.index.save(str(tmp / f"{i}.idx"))
            np.savez(
                tmp / f"{i}.npz",
                user_names=np.array(g.user_names, dtype=str),
                users=g.users,
                tokens=g.tokens,
                next_row=np.array([g.next_row], np.int64),
            )
            entries.append(
                {"appid": appid, "group": group, "index": f"{i}.idx", "table": f"{i}.npz"}
            )
        self._db.flush()
        manifest = {
            "format": _SNAPSHOT_FORMAT,
            "dim": self.dim,
            "sequence": self._db.latest_sequence_number(),
            "groups": entries,
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest))
        shutil.rmtree(d, ignore_errors=True)
        tmp.rename(d)

    def close(self) -> None:
        if self._closed:
            return
        self.wait_deletions()
        self._closed = True
        self._save_snapshot()
        self._db.close()

    def __enter__(self) -> FaceLibrary:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ helpers

    def _write(self, batch: WriteBatch) -> None:
        self._db.write(batch, self._wopts)

    def _get(self, key: str) -> bytes | None:
        value: bytes | None = self._db.get(key.encode())
        return value

    def _must(self, key: str) -> bytes:
        value = self._get(key)
        if value is None:
            raise RuntimeError(f"store inconsistency: {key} is missing")
        return value

    def _group(self, appid: str, group: str, *, missing: int = 223100) -> _Group:
        g = self._groups.get((appid, group))
        if g is None:
            raise _err(missing, f"group {group!r} does not exist")
        if g.deleting:
            raise _err(223128, f"group {group!r} is being deleted")
        return g

    def _embedding(self, embedding: object) -> np.ndarray:
        e = np.asarray(embedding)
        if e.dtype != np.float32 or e.shape != (self.dim,) or not np.isfinite(e).all():
            raise InvalidArgument(f"embedding must be finite float32 of shape ({self.dim},)")
        return e

    def _face_value(self, row: int, ctime: int, face: NewFace) -> bytes:
        box = [float(v) for v in face.box]
        return _FACE_HEAD.pack(row, ctime, *box) + self._embedding(face.embedding).tobytes()

    def _create_group(self, appid: str, group: str, batch: WriteBatch) -> _Group:
        """A new group's state, its G/ key put in `batch` (registered once the batch is written)."""
        g = _Group(self.dim)
        batch.put(
            f"G/{appid}/{group}".encode(),
            json.dumps({"ctime": int(time.time()), "deleting": False}).encode(),
        )
        return g

    # ------------------------------------------------------------------ groups

    def group_add(self, appid: str, group_id: str) -> None:
        appid, group = check_appid(appid), check_group(group_id)
        with self._meta_lock:
            g = self._groups.get((appid, group))
            if g is not None:
                if g.deleting:
                    raise _err(223128, f"group {group!r} is being deleted")
                raise _err(223101, f"group {group!r} already exists")
            batch = WriteBatch(raw_mode=True)
            g = self._create_group(appid, group, batch)
            self._write(batch)
            self._groups[(appid, group)] = g

    def group_list(self, appid: str, start: int = 0, length: int = 100) -> list[str]:
        appid = check_appid(appid)
        start, length = check_page(start, length)
        names = sorted(grp for (a, grp), g in self._groups.items() if a == appid and not g.deleting)
        return names[start : start + length]

    def group_delete(self, appid: str, group_id: str) -> None:
        appid, group = check_appid(appid), check_group(group_id)
        with self._meta_lock:
            g = self._group(appid, group)
            with g.lock:
                key = f"G/{appid}/{group}".encode()
                meta = json.loads(self._must(key.decode()))
                meta["deleting"] = True
                batch = WriteBatch(raw_mode=True)
                batch.put(key, json.dumps(meta).encode())
                self._write(batch)
                g.deleting = True
        self._start_delete(appid, group)

    def _start_delete(self, appid: str, group: str) -> None:
        t = threading.Thread(target=self._delete_group, args=(appid, group), daemon=True)
        self._deleters.append(t)
        t.start()

    def _delete_group(self, appid: str, group: str) -> None:
        """Remove every key of the group, prefix by prefix, then the group itself."""
        for kind in ("F", "T", "I", "U"):
            start = f"{kind}/{appid}/{group}/".encode()
            end = start[:-1] + b"0"  # "/" + 1: the first key after the prefix
            batch = WriteBatch(raw_mode=True)
            batch.delete_range(start, end)
            self._write(batch)
        with self._meta_lock:
            batch = WriteBatch(raw_mode=True)
            batch.delete(f"G/{appid}/{group}".encode())
            self._write(batch)
            self._groups.pop((appid, group), None)

    def wait_deletions(self, timeout: float | None = None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._deleters):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        self._deleters = [t for t in self._deleters if t.is_alive()]
        return True

    # ------------------------------------------------------------------ faces

    def face_add(
        self,
        appid: str,
        group_id: str,
        user_id: str,
        face: NewFace,
        user_info: str | None = None,
    ) -> FaceInfo:
        result = self.face_add_many(appid, group_id, [(user_id, face, user_info)])[0]
        if isinstance(result, FaceCoreError):
            raise result
        return result

    def face_add_many(
        self, appid: str, group_id: str, items: Sequence[tuple[str, NewFace, str | None]]
    ) -> list[FaceInfo | FaceCoreError]:
        """Add faces to one group in one write batch; a bad item is reported, not raised."""
        appid, group = check_appid(appid), check_group(group_id)
        with self._meta_lock:
            g = self._groups.get((appid, group))
            new_group = g is None
            if g is not None and g.deleting:
                raise _err(223128, f"group {group!r} is being deleted")
            batch = WriteBatch(raw_mode=True)
            if g is None:
                g = self._create_group(appid, group, batch)
            with g.lock:
                out: list[FaceInfo | FaceCoreError] = []
                now = int(time.time())
                row = g.next_row
                staged: list[tuple[int, str, str, np.ndarray]] = []
                seen: set[str] = set()
                new_users: dict[str, str] = {}
                for user_id, face, user_info in items:
                    try:
                        user = check_user(user_id)
                        info = check_user_info(user_info)
                        token = check_token(face.face_token)
                        emb = self._embedding(face.embedding)
                        if token in g.token_rows or token in seen:
                            raise _err(223105, f"face {token} already exists in group {group!r}")
                    except FaceCoreError as e:
                        out.append(e)
                        continue
                    seen.add(token)
                    ukey = f"U/{appid}/{group}/{user}".encode()
                    if user not in g.user_rows and user not in new_users:
                        old = self._db.get(ukey)
                        if old is None:
                            new_users[user] = info or ""
                            batch.put(
                                ukey, json.dumps({"user_info": info or "", "ctime": now}).encode()
                            )
                        elif info is not None:
                            meta = json.loads(old)
                            meta["user_info"] = info
                            batch.put(ukey, json.dumps(meta).encode())
                    elif info is not None:
                        old = self._db.get(ukey)
                        meta = json.loads(old) if old is not None else {"ctime": now}
                        meta["user_info"] = info
                        batch.put(ukey, json.dumps(meta).encode())
                    batch.put(
                        f"F/{appid}/{group}/{user}/{token}".encode(),
                        self._face_value(row, now, face),
                    )
                    batch.put(f"T/{appid}/{group}/{token}".encode(), user.encode())
                    if face.image is not None:
                        batch.put(f"I/{appid}/{group}/{token}".encode(), bytes(face.image))
                    staged.append((row, user, token, emb))
                    out.append(FaceInfo(token, now))
                    row += 1
                if staged or new_group:
                    self._write(batch)
                if new_group:
                    self._groups[(appid, group)] = g
                for r, user, token, _ in staged:
                    g.set_row(r, user, token)
                if staged:
                    g.index.add(
                        np.array([s[0] for s in staged], np.int64), np.stack([s[3] for s in staged])
                    )
        return out

    def face_update(
        self,
        appid: str,
        group_id: str,
        user_id: str,
        face: NewFace,
        user_info: str | None = None,
    ) -> FaceInfo:
        """Replace all of the user's faces in the group with `face`."""
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        info = check_user_info(user_info)
        token = check_token(face.face_token)
        emb = self._embedding(face.embedding)
        g = self._group(appid, group)
        with g.lock:
            if g.deleting:
                raise _err(223128, f"group {group!r} is being deleted")
            if user not in g.user_rows:
                raise _err(223103, f"user {user!r} does not exist in group {group!r}")
            other = g.token_rows.get(token)
            if other is not None and g.user_names[g.users[other]] != user:
                raise _err(223105, f"face {token} already belongs to another user of {group!r}")
            now = int(time.time())
            batch = WriteBatch(raw_mode=True)
            old_rows = sorted(g.user_rows[user])
            old_tokens = [bytes(g.tokens[r]).hex() for r in old_rows]
            for t in old_tokens:
                batch.delete(f"F/{appid}/{group}/{user}/{t}".encode())
                batch.delete(f"T/{appid}/{group}/{t}".encode())
                batch.delete(f"I/{appid}/{group}/{t}".encode())
            row = g.next_row
            batch.put(
                f"F/{appid}/{group}/{user}/{token}".encode(), self._face_value(row, now, face)
            )
            batch.put(f"T/{appid}/{group}/{token}".encode(), user.encode())
            if face.image is not None:
                batch.put(f"I/{appid}/{group}/{token}".encode(), bytes(face.image))
            if info is not None:
                ukey = f"U/{appid}/{group}/{user}".encode()
                meta = json.loads(self._must(ukey.decode()))
                meta["user_info"] = info
                batch.put(ukey, json.dumps(meta).encode())
            self._write(batch)
            g.set_row(row, user, token)
            g.index.add(np.array([row], np.int64), emb[None])
            for r, t in zip(old_rows, old_tokens):
                g.clear_row(r, user, t)
            g.index.remove(np.array(old_rows, np.int64))
            # The new row took the token's slot when the token was re-used: restore it.
            g.token_rows[token] = row
            g.user_rows.setdefault(user, set()).add(row)
        return FaceInfo(token, now)

    def face_delete(self, appid: str, group_id: str, user_id: str, face_token: str) -> None:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        token = check_token(face_token)
        g = self._group(appid, group)
        with g.lock:
            if g.deleting:
                raise _err(223128, f"group {group!r} is being deleted")
            row = g.token_rows.get(token)
            if row is None or g.user_names[g.users[row]] != user:
                raise _err(223106, f"face {token} of user {user!r} does not exist in {group!r}")
            batch = WriteBatch(raw_mode=True)
            batch.delete(f"F/{appid}/{group}/{user}/{token}".encode())
            batch.delete(f"T/{appid}/{group}/{token}".encode())
            batch.delete(f"I/{appid}/{group}/{token}".encode())
            last = len(g.user_rows.get(user, ())) == 1
            if last:
                batch.delete(f"U/{appid}/{group}/{user}".encode())
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.clear_row(row, user, token)

    def face_list(self, appid: str, group_id: str, user_id: str) -> list[FaceInfo]:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        g = self._group(appid, group)
        if user not in g.user_rows:
            raise _err(223103, f"user {user!r} does not exist in group {group!r}")
        prefix = f"F/{appid}/{group}/{user}/".encode()
        out = []
        for key, value in self._iter_prefix(prefix):
            out.append(FaceInfo(key.decode().rsplit("/", 1)[1], _FACE_HEAD.unpack_from(value)[1]))
        return sorted(out, key=lambda f: (f.ctime, f.face_token))

    def face_image(self, appid: str, group_id: str, face_token: str) -> bytes | None:
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        self._group(appid, group)
        return self._get(f"I/{appid}/{group}/{token}")

    # ------------------------------------------------------------------ users

    def user_get(self, appid: str, group_id: str, user_id: str) -> list[UserInfo]:
        appid, user = check_appid(appid), check_user(user_id)
        if group_id == "@ALL":
            groups = sorted(
                grp for (a, grp), g in self._groups.items() if a == appid and not g.deleting
            )
        else:
            groups = [check_group(group_id)]
            self._group(appid, groups[0])
        out = []
        for group in groups:
            raw = self._get(f"U/{appid}/{group}/{user}")
            if raw is not None:
                meta = json.loads(raw)
                out.append(UserInfo(group, user, meta["user_info"], meta["ctime"]))
        if not out:
            raise _err(223103, f"user {user!r} does not exist")
        return out

    def user_list(self, appid: str, group_id: str, start: int = 0, length: int = 100) -> list[str]:
        appid, group = check_appid(appid), check_group(group_id)
        start, length = check_page(start, length)
        g = self._group(appid, group)
        return sorted(g.user_rows)[start : start + length]

    def user_copy(self, appid: str, user_id: str, src_group_id: str, dst_group_id: str) -> None:
        appid, user = check_appid(appid), check_user(user_id)
        src, dst = check_group(src_group_id), check_group(dst_group_id)
        gs = self._group(appid, src)
        gd = self._group(appid, dst, missing=223111)
        if user not in gs.user_rows:
            raise _err(223103, f"user {user!r} does not exist in group {src!r}")
        meta = json.loads(self._must(f"U/{appid}/{src}/{user}"))
        items = []
        prefix = f"F/{appid}/{src}/{user}/".encode()
        for key, value in self._iter_prefix(prefix):
            token = key.decode().rsplit("/", 1)[1]
            if token in gd.token_rows:
                continue  # already in the destination: skipped
            _, _, x1, y1, x2, y2 = _FACE_HEAD.unpack_from(value)
            emb = np.frombuffer(value, np.float32, self.dim, _FACE_HEAD.size).copy()
            image = self._get(f"I/{appid}/{src}/{token}")
            items.append((user, NewFace(token, emb, (x1, y1, x2, y2), image), meta["user_info"]))
        if not items:
            return  # every face is already in the destination
        errors = [r for r in self.face_add_many(appid, dst, items) if isinstance(r, FaceCoreError)]
        if errors:
            raise errors[0]

    def user_delete(self, appid: str, group_id: str, user_id: str) -> None:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        g = self._group(appid, group)
        with g.lock:
            if g.deleting:
                raise _err(223128, f"group {group!r} is being deleted")
            rows = sorted(g.user_rows.get(user, ()))
            if not rows:
                raise _err(223103, f"user {user!r} does not exist in group {group!r}")
            tokens = [bytes(g.tokens[r]).hex() for r in rows]
            batch = WriteBatch(raw_mode=True)
            for t in tokens:
                batch.delete(f"F/{appid}/{group}/{user}/{t}".encode())
                batch.delete(f"T/{appid}/{group}/{t}".encode())
                batch.delete(f"I/{appid}/{group}/{t}".encode())
            batch.delete(f"U/{appid}/{group}/{user}".encode())
            self._write(batch)
            g.index.remove(np.array(rows, np.int64))
            for r, t in zip(rows, tokens):
                g.clear_row(r, user, t)

    # ------------------------------------------------------------------ search

    def identify(
        self,
        appid: str,
        group_ids: Sequence[str],
        embedding: np.ndarray,
        user_id: str | None = None,
        match_threshold: float = 0.0,
        max_user_num: int = 1,
    ) -> list[Match]:
        result = self.identify_many(
            appid, group_ids, np.asarray(embedding)[None], user_id, match_threshold, max_user_num
        )[0]
        if isinstance(result, FaceCoreError):
            raise result
        return result

    def identify_many(
        self,
        appid: str,
        group_ids: Sequence[str],
        embeddings: np.ndarray,
        user_id: str | None = None,
        match_threshold: float = 0.0,
        max_user_num: int = 1,
    ) -> list[list[Match] | FaceCoreError]:
        """Best face per user for each query, users by score descending, across the groups."""
        appid = check_appid(appid)
        if isinstance(group_ids, str) or not isinstance(group_ids, Sequence) or not group_ids:
            raise _err(222005, "group_id_list must be a non-empty list of group ids")
        if len(group_ids) > MAX_GROUPS_PER_SEARCH:
            raise _err(223104, f"at most {MAX_GROUPS_PER_SEARCH} groups per search")
        groups = list(dict.fromkeys(check_group(gid) for gid in group_ids))
        user = check_user(user_id) if user_id is not None else None
        if (
            not isinstance(max_user_num, int)
            or isinstance(max_user_num, bool)
            or not 1 <= max_user_num <= 20
        ):
            raise _err(222021, f"max_user_num must be an integer in 1..20, got {max_user_num!r}")
        if (
            isinstance(match_threshold, bool)
            or not isinstance(match_threshold, (int, float))
            or not 0 <= match_threshold <= 100
        ):
            raise _err(
                222001, f"match_threshold must be a number in 0..100, got {match_threshold!r}"
            )
        q = np.asarray(embeddings)
        if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidArgument(f"embeddings must be float32 of shape (m, {self.dim})")
        states = [(grp, self._group(appid, grp)) for grp in groups]
        # Candidates come from the int8 index; exact scores from the stored fp32 embeddings.
        # The int8 score is within ~0.01 of the exact one, so a margin keeps every true match.
        floor = score_to_similarity(float(match_threshold)) - 0.02 if match_threshold > 0 else -2.0
        per_query: list[dict[tuple[str, str], tuple[float, str]]] = [{} for _ in range(len(q))]
        for grp, g in states:
            n = len(g.index)
            if n == 0:
                continue
            flt = None
            if user is not None:
                rows = g.user_rows.get(user)
                if not rows:
                    continue
                flt = np.sort(np.fromiter(rows, np.int64))
            k = min(n, max(4 * max_user_num, 16)) if flt is None else min(len(flt), 64)
            while True:
                hits = g.index.search(q, k=k, filter=flt)
                users = g.users
                done = True
                for qi in range(len(q)):
                    seen = {
                        int(users[r])
                        for r, s in zip(hits.ids[qi], hits.scores[qi])
                        if r >= 0 and s >= floor
                    }
                    seen.discard(-1)
                    if (
                        len(seen) < max_user_num
                        and k < n
                        and hits.scores[qi][-1] >= floor
                        and flt is None
                    ):
                        done = False
                if done or k >= n:
                    break
                k = min(n, 4 * k)
            self._rescore(appid, grp, g, q, hits.ids, per_query)
        out: list[list[Match] | FaceCoreError] = []
        for qi, best in enumerate(per_query):
            matches = sorted(
                (
                    Match(grp, u, "", similarity_to_score(c).item(), tok)
                    for (grp, u), (c, tok) in best.items()
                ),
                key=lambda m: (-m.score, m.group_id, m.user_id),
            )
            matches = [m for m in matches if m.score >= match_threshold][:max_user_num]
            if not matches:
                out.append(_err(222207, "no user matches the face"))
                continue
            out.append([self._with_info(appid, m) for m in matches])
        return out

    def _rescore(
        self,
        appid: str,
        group: str,
        g: _Group,
        q: np.ndarray,
        ids: np.ndarray,
        per_query: list[dict[tuple[str, str], tuple[float, str]]],
    ) -> None:
        users, tokens, names = g.users, g.tokens, g.user_names
        wanted: dict[int, bytes] = {}
        for r in np.unique(ids[ids >= 0]):
            u = int(users[r])
            if u < 0:
                continue  # removed since the search
            wanted[int(r)] = f"F/{appid}/{group}/{names[u]}/{bytes(tokens[r]).hex()}".encode()
        if not wanted:
            return
        keys = list(wanted.values())
        values: list[bytes | None] = self._db.get(keys)  # type: ignore[arg-type,assignment]
        vecs: dict[int, np.ndarray] = {}
        for r, v in zip(wanted, values):
            if v is not None:
                vecs[r] = np.frombuffer(v, np.float32, self.dim, _FACE_HEAD.size)
        for qi in range(len(q)):
            best = per_query[qi]
            for r in ids[qi]:
                vec = vecs.get(int(r))
                if vec is None:
                    continue
                cos = float(np.dot(q[qi].astype(np.float64), vec.astype(np.float64)))
                key = (group, names[int(users[r])])
                token = bytes(tokens[r]).hex()
                if key not in best or cos > best[key][0]:
                    best[key] = (cos, token)

    def _with_info(self, appid: str, m: Match) -> Match:
        raw = self._get(f"U/{appid}/{m.group_id}/{m.user_id}")
        info = json.loads(raw)["user_info"] if raw is not None else ""
        return Match(m.group_id, m.user_id, info, m.score, m.face_token)

    # ------------------------------------------------------------------ detected-face tokens

    def token_put(self, face_token: str, embedding: np.ndarray, attributes: dict[str, Any]) -> None:
        token = check_token(face_token)
        emb = self._embedding(embedding)
        now = time.time_ns()
        with self._token_lock:
            batch = WriteBatch(raw_mode=True)
            old = self._db.get(f"D/{token}".encode())
            if old is not None:
                batch.delete(f"E/{struct.unpack_from('<q', old)[0]:016x}/{token}".encode())
            else:
                self._token_count += 1
            value = struct.pack("<q", now) + emb.tobytes() + json.dumps(attributes).encode()
            batch.put(f"D/{token}".encode(), value)
            batch.put(f"E/{now:016x}/{token}".encode(), b"")
            self._write(batch)
            self._evict_tokens()

    def _evict_tokens(self) -> None:
        """Drop the oldest tokens beyond capacity, and any older than token_days (oldest first)."""
        horizon = time.time_ns() - self.token_seconds * 1_000_000_000
        excess = self._token_count - self.token_capacity
        batch = WriteBatch(raw_mode=True)
        dropped = 0
        for key, _ in self._iter_prefix(b"E/"):
            if dropped >= excess and int(key[2:18], 16) >= horizon:
                break
            batch.delete(key)
            batch.delete(b"D/" + key[19:])
            dropped += 1
        if dropped:
            self._write(batch)
            self._token_count -= dropped

    def token_get(self, face_token: str) -> tuple[np.ndarray, dict[str, Any]]:
        token = check_token(face_token)
        value = self._db.get(f"D/{token}".encode())
        horizon = time.time_ns() - self.token_seconds * 1_000_000_000
        if value is None or struct.unpack_from("<q", value)[0] < horizon:
            raise _err(222209, f"face_token {token} does not exist or has expired")
        emb = np.frombuffer(value, np.float32, self.dim, 8).copy()
        attrs: dict[str, Any] = json.loads(value[8 + 4 * self.dim :])
        return emb, attrs

    # ------------------------------------------------------------------ tools

    def _iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self._db.items(from_key=prefix):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if not key.startswith(prefix):
                return
            yield key, value

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self._get(f"K/{namespace}/{key}")

    def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        batch = WriteBatch(raw_mode=True)
        batch.put(f"K/{namespace}/{key}".encode(), bytes(value))
        self._write(batch)

    def iter_faces(self, appid: str | None = None) -> Iterator[tuple[str, str, str, str]]:
        prefix = b"F/" if appid is None else f"F/{check_appid(appid)}/".encode()
        for key, _ in self._iter_prefix(prefix):
            _, a, group, user, token = key.decode().split("/")
            yield a, group, user, token

    def set_embedding(
        self, appid: str, group_id: str, face_token: str, embedding: np.ndarray
    ) -> None:
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        emb = self._embedding(embedding)
        g = self._group(appid, group)
        with g.lock:
            row = g.token_rows.get(token)
            if row is None:
                raise _err(223106, f"face {token} does not exist in {group!r}")
            user = g.user_names[g.users[row]]
            key = f"F/{appid}/{group}/{user}/{token}".encode()
            value = bytearray(self._must(key.decode()))
            value[_FACE_HEAD.size :] = emb.tobytes()
            batch = WriteBatch(raw_mode=True)
            batch.put(key, bytes(value))
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.index.add(np.array([row], np.int64), emb[None])

    def stats(self) -> dict[str, Any]:
        groups = {
            f"{a}/{grp}": g.faces()
            for (a, grp), g in sorted(self._groups.items())
            if not g.deleting
        }
        return {"faces": sum(groups.values()), "groups": groups}
