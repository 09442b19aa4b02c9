"""The face library: appids -> groups -> users -> faces, on RocksDB, with one int8 index per group.

Durability and atomicity: every operation is one RocksDB write batch (WAL on); the in-memory index
of a group changes only after the batch is written, under the group's write lock, so a search sees
either all of an operation or none of it. Searches take no lock: the index is safe for concurrent
search and add, and everything else a search needs is read from RocksDB.

Memory: per face only the group's int8 index (about d + 20 bytes). Who a row belongs to, its token
and its fp32 embedding live in RocksDB and are fetched for the few candidates of a search.

Key layout (docs/storage.md): all keys are UTF-8, fields separated by "/", which no id may contain.
    G/{appid}/{group}                  group: JSON {ctime, deleting}
    U/{appid}/{group}/{user}           user: JSON {user_info, ctime}
    F/{appid}/{group}/{user}/{token}   face: row int64, ctime int64, box 4 x f32
    R/{appid}/{group}/{row:016x}       row: embedding d x f32, token 16 bytes, user id
    T/{appid}/{group}/{token}          token -> row int64 + user id
    I/{appid}/{group}/{token}          registration image bytes (for reindex)
    D/{appid}/{token}                  detected-face token: ts int64, embedding, attributes JSON
    E/{ts:016x}/{appid}/{token}        eviction order of detected-face tokens
    K/{namespace}/{key}                small metadata for tools (the import journal)

On open, each group's index is rebuilt from its R/ keys, or loaded from `indexes/` when the saved
snapshot provably matches the store: the snapshot records RocksDB's latest sequence number at save
time, and any write after it changes that number.

`verify` checks every record against the others and each index against its rows, and repairs
what it safely can; `checkpoint` is the online copy a backup is made of (docs/operations.md).
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import struct
import threading
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal, TypeGuard

import numpy as np
from rocksdict import Checkpoint, Options, Rdict, WriteBatch, WriteOptions

from facecore.errors import (
    BadAppId,
    BadFaceToken,
    BadGroupId,
    BadGroupIdList,
    BadLength,
    BadMatchThreshold,
    BadMaxUserNum,
    BadStart,
    BadUserId,
    BadUserInfo,
    DstGroupNotFound,
    FaceCoreError,
    FaceExists,
    FaceNotFound,
    FaceTokenNotFound,
    GroupDeleting,
    GroupExists,
    GroupNotFound,
    InvalidArgument,
    NoMatch,
    TooManyGroups,
    UserNotFound,
)
from facecore.score import score_to_similarity, similarity_to_score
from facecore.search import VectorIndex

# Matched with fullmatch, never match + "$": "$" also matches before a final newline ("a\n").
_ID = re.compile(r"[A-Za-z0-9_]+")
_TOKEN = re.compile(r"[0-9a-f]{32}")
RESERVED = frozenset({"all", "self", "me", "this", "next"})
MAX_GROUPS_PER_SEARCH = 10
_FACE = struct.Struct("<qq4f")  # F/ value: row, ctime, box
_ROW = struct.Struct("<q")  # T/ value head: row (then the user id)
_SNAPSHOT_FORMAT = 1
STORE_DIR = "rocksdb"  # the RocksDB store inside the library's directory
INDEX_DIR = "indexes"  # the index snapshot beside it (INDEX_DIR + ".tmp" while being written)


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


# What FaceLibrary.verify reports, and what its repair does about each (docs/operations.md).
PROBLEMS: dict[str, str] = {
    "malformed_key": "a key of the library's kinds whose fields or value do not parse: deleted",
    "unknown_key": "a key of no kind the library knows: reported only, not the library's to delete",
    "group_missing": "a group's data without its G/ record: the record is written (data kept)",
    "group_record": "a G/ record that is not the group's JSON: rewritten",
    "face_without_row": "an F/ face whose R/ row is missing or names another face: the face "
    "is dropped (its embedding is gone; add the image again)",
    "duplicate_token": "a token claimed by two faces of one group: the one T/ names is kept",
    "token_missing": "a face whose T/ entry is missing or names another row: rewritten from F/",
    "token_dangling": "a T/ entry naming no face: deleted",
    "row_orphan": "an R/ row that no face names (a search could return it): deleted",
    "image_orphan": "an I/ image of no face: deleted",
    "user_without_faces": "a U/ user with no face: deleted, as deleting its last face would",
    "face_without_user": "faces of a user without its U/ record: written, with empty user_info",
    "index_size": "a group's index holds another number of faces than its rows: rebuilt",
    "index_rows": "a group's index holds other rows than its R/ rows: rebuilt",
    "next_row": "a group's next row number is not above its rows: raised (rebuilt)",
    "detected_without_order": "a D/ detected-face token without its E/ eviction entry: written",
    "order_dangling": "an E/ eviction entry of no D/ token: deleted",
}


@dataclass
class VerifyReport:
    """FaceLibrary.verify's answer. `counts`: groups, users, faces, rows, images, detected
    tokens, groups being deleted (after the repair, when one ran). `problems`: how many of each
    PROBLEMS kind were found, `examples` a few keys of each; `remaining`: what a check after the
    repair still found (the same as `problems` without a repair)."""

    counts: dict[str, int]
    problems: dict[str, int]
    examples: dict[str, list[str]]
    repaired: bool
    remaining: dict[str, int]

    @property
    def ok(self) -> bool:
        return not self.remaining

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


class _Findings:
    """One verify pass's problems, with a few example keys of each kind, and (when fixing) the
    write batch that repairs them."""

    EXAMPLES = 10

    def __init__(self, fix: bool) -> None:
        self.problems: dict[str, int] = {}
        self.examples: dict[str, list[str]] = {}
        self.batch = WriteBatch(raw_mode=True) if fix else None
        self.rows_changed = False  # an R/ row deleted: the group's index must be rebuilt

    def add(
        self,
        kind: str,
        key: bytes,
        *,
        delete: Sequence[bytes] = (),
        put: Sequence[tuple[bytes, bytes]] = (),
    ) -> None:
        assert kind in PROBLEMS, kind
        self.problems[kind] = self.problems.get(kind, 0) + 1
        shown = self.examples.setdefault(kind, [])
        if len(shown) < self.EXAMPLES:
            shown.append(key.decode("utf-8", "backslashreplace"))
        if self.batch is not None:
            for k in delete:
                self.batch.delete(k)
            for k, v in put:  # after the deletes: a key both deleted and put ends up put
                self.batch.put(k, v)
        self.rows_changed |= any(k.startswith(b"R/") for k in delete)

    def merge(self, other: _Findings) -> None:
        for kind, n in other.problems.items():
            self.problems[kind] = self.problems.get(kind, 0) + n
            shown = self.examples.setdefault(kind, [])
            shown.extend(other.examples[kind][: self.EXAMPLES - len(shown)])

    def flush(self, lib: FaceLibrary) -> None:
        if self.batch is not None and len(self.batch):
            lib._write(self.batch)
            self.batch = WriteBatch(raw_mode=True)


def _user_meta_ok(raw: bytes | None) -> bool:
    """Whether a U/ value is the user's JSON {user_info, ctime}."""
    if raw is None:
        return False
    try:
        meta = json.loads(raw)
    except ValueError:
        return False
    return (
        isinstance(meta, dict)
        and isinstance(meta.get("user_info"), str)
        and isinstance(meta.get("ctime"), int)
    )


def _show(value: object) -> str:
    """A rejected value for an error message: never all of a long one (it may be an image)."""
    text = repr(value)
    return text if len(text) <= 70 else f"{text[:64]}... ({len(text)} characters)"


def is_id(value: object) -> TypeGuard[str]:
    """Whether `value` is, whole, 1+ characters of [A-Za-z0-9_] (ASCII only)."""
    return isinstance(value, str) and _ID.fullmatch(value) is not None


def check_id(value: object, name: str, max_bytes: int, error: type[FaceCoreError]) -> str:
    if not is_id(value) or len(value) > max_bytes:
        raise error(f"{name} must be 1-{max_bytes} characters of [A-Za-z0-9_], got {_show(value)}")
    if value.lower() in RESERVED:
        raise error(f"{name} {value!r} is a reserved word")
    return value


def iter_prefix(db: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of a raw-mode store whose keys start with `prefix`, in key order."""
    for key, value in db.items(from_key=prefix):
        assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
        if not key.startswith(prefix):
            return
        yield key, value


def check_appid(appid: object) -> str:
    return check_id(appid, "appid", 48, BadAppId)


def check_group(group_id: object) -> str:
    return check_id(group_id, "group_id", 48, BadGroupId)


def check_user(user_id: object) -> str:
    return check_id(user_id, "user_id", 128, BadUserId)


def check_token(token: object) -> str:
    if not isinstance(token, str) or not _TOKEN.fullmatch(token):
        raise BadFaceToken(f"face_token must be 32 lowercase hex characters, got {_show(token)}")
    return token


def check_user_info(user_info: object) -> str | None:
    if user_info is None:
        return None
    if not isinstance(user_info, str) or len(user_info.encode("utf-8")) > 256:
        raise BadUserInfo("user_info must be a string of at most 256 UTF-8 bytes")
    return user_info


def check_page(start: object, length: object) -> tuple[int, int]:
    if not isinstance(start, int) or isinstance(start, bool) or start < 0:
        raise BadStart(f"start must be an integer >= 0, got {start!r}")
    if not isinstance(length, int) or isinstance(length, bool) or not 1 <= length <= 1000:
        raise BadLength(f"length must be an integer in 1..1000, got {length!r}")
    return start, length


def _group_key(key: bytes) -> tuple[str, str] | None:
    """(appid, group) of a well-formed G/ key, else None."""
    parts = key.decode("utf-8", "replace").split("/")
    if len(parts) != 3 or not is_id(parts[1]) or not is_id(parts[2]):
        return None
    return parts[1], parts[2]


def _group_meta(value: bytes) -> dict[str, Any]:
    """A G/ value's JSON object; {} when it is not one."""
    try:
        meta = json.loads(value)
    except ValueError:
        return {}
    return meta if isinstance(meta, dict) else {}


def _row_of(field: bytes) -> int | None:
    """The row number of an R/ key's last field (16 lowercase hex digits), else None."""
    if len(field) != 16 or field.strip(b"0123456789abcdef"):
        return None
    return int(field, 16)


def _end(prefix: bytes) -> bytes:
    """The first key after every key that starts with `prefix` (which ends with "/")."""
    return prefix[:-1] + b"0"  # "0" follows "/"


class _Group:
    """In-memory state of one (appid, group). Writers hold `lock`; readers take none."""

    def __init__(
        self, dim: int, mode: Literal["exact", "auto", "hnsw"] = "exact", threads: int = 0
    ) -> None:
        self.index = VectorIndex(dim, kind="i8", mode=mode, threads=threads)
        self.lock = threading.Lock()
        self.next_row = 0  # rows are assigned in order and never reused
        self.faces = 0
        self.deleting = False


class FaceLibrary:
    """A persistent face library under `path` (created when missing). Thread-safe."""

    def __init__(
        self,
        path: str | Path,
        dim: int = 128,
        token_capacity: int = 1_000_000,
        token_days: int = 30,
        sync_writes: bool = False,
        index_mode: Literal["exact", "auto", "hnsw"] = "exact",
        threads: int = 0,
    ) -> None:
        """`index_mode` is each group's VectorIndex mode. "exact" (default): int8 scans, about
        d + 20 bytes a face, ~10 ms at 1M faces on one core. "auto" adds an HNSW graph to groups
        from 500k faces (faster searches, ~800 more bytes a face, and the add that crosses the
        threshold builds the graph, minutes at 1M). `threads`: cores one search (and an HNSW
        build) uses; 0 = all."""
        if index_mode not in ("exact", "auto", "hnsw"):
            raise InvalidArgument(f"index_mode must be exact, auto or hnsw, got {index_mode!r}")
        self.index_mode = index_mode
        if isinstance(threads, bool) or not isinstance(threads, int) or threads < 0:
            raise InvalidArgument(
                f"threads must be an integer >= 0 (0 = all cores), got {threads!r}"
            )
        self.threads = threads
        if not isinstance(dim, int) or dim < 1:
            raise InvalidArgument(f"dim must be a positive int, got {dim!r}")
        self.path = Path(path)
        self.path.mkdir(parents=True, exist_ok=True)
        self.dim = dim
        self.token_capacity = token_capacity
        self.token_seconds = token_days * 86400
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self._db = Rdict(str(self.path / STORE_DIR), opts)
        self._wopts = WriteOptions()
        self._wopts.sync = sync_writes  # False: survives a process kill, not a power cut
        self._groups: dict[tuple[str, str], _Group] = {}
        self._meta_lock = threading.Lock()  # adds (which may create groups) and the group table
        self._token_lock = threading.Lock()
        self._deleters: list[threading.Thread] = []
        self._closed = False
        self._open()
        self._token_count = sum(1 for _ in self._iter_prefix(b"E/"))

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        self._load_snapshot()
        for key, value in self._iter_prefix(b"G/"):
            # A damaged key or value is left for verify to report; it must not stop the open.
            ids = _group_key(key)
            if ids is None:
                continue
            appid, group = ids
            deleting = _group_meta(value).get("deleting") is True
            if (appid, group) not in self._groups:
                if deleting:
                    g = self._new_group()  # its deletion resumes below; no index needed
                else:
                    g = self._rebuild(appid, group)
                self._groups[(appid, group)] = g
            self._groups[(appid, group)].deleting = deleting
        for (appid, group), g in list(self._groups.items()):
            if g.deleting:
                self._start_delete(appid, group)

    def _new_group(self) -> _Group:
        return _Group(self.dim, self.index_mode, self.threads)

    def _rebuild(self, appid: str, group: str) -> _Group:
        """A group's index from its R/ records (one sequential scan, in row order)."""
        g = self._new_group()
        prefix = f"R/{appid}/{group}/".encode()
        width = 4 * self.dim
        rows: list[int] = []
        vecs: list[bytes] = []
        for key, value in self._iter_prefix(prefix):
            row = _row_of(key[len(prefix) :])
            if row is None or len(value) < width + 16:
                continue  # damaged: verify reports it
            rows.append(row)
            vecs.append(value[:width])
            if len(rows) == 65536:
                self._add_rows(g, rows, vecs)
                rows, vecs = [], []
        if rows:
            self._add_rows(g, rows, vecs)
        return g

    def _add_rows(self, g: _Group, rows: list[int], vecs: list[bytes]) -> None:
        emb = np.frombuffer(b"".join(vecs), np.float32).reshape(len(rows), self.dim)
        g.index.add(np.array(rows, np.int64), emb)
        g.faces += len(rows)
        g.next_row = max(g.next_row, rows[-1] + 1)

    def _snapshot_dir(self) -> Path:
        return self.path / INDEX_DIR

    def _load_snapshot(self) -> None:
        d = self._snapshot_dir()
        manifest = d / "manifest.json"
        if not manifest.exists():
            return
        try:
            m = json.loads(manifest.read_text())
            if m.get("format") != _SNAPSHOT_FORMAT or m.get("dim") != self.dim:
                return
            if m.get("sequence") != self._db.latest_sequence_number():
                return  # the store changed after the snapshot: rebuild
            groups = {}
            for entry in m["groups"]:
                g = self._new_group()
                if entry["index"] is not None:
                    g.index = VectorIndex.load(str(d / entry["index"]))
                    g.index.threads = self.threads  # this library's setting, not the saver's
                g.next_row, g.faces = int(entry["next_row"]), int(entry["faces"])
                if len(g.index) != g.faces:
                    return
                groups[(entry["appid"], entry["group"])] = g
        except (OSError, ValueError, KeyError, FaceCoreError):
            return
        self._groups.update(groups)

    def _save_snapshot(self) -> None:
        d = self._snapshot_dir()
        tmp = self.path / f"{INDEX_DIR}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        entries = []
        for i, ((appid, group), g) in enumerate(sorted(self._groups.items())):
            if g.deleting:
                continue
            if g.faces:  # empty groups need no file (saving each one costs an fsync)
                g.index.save(str(tmp / f"{i}.idx"))
            entries.append(
                {
                    "appid": appid,
                    "group": group,
                    "index": f"{i}.idx" if g.faces else None,
                    "next_row": g.next_row,
                    "faces": g.faces,
                }
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
        """Wait for running group deletions, save the index snapshot, close the store."""
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
        """A value that the group's own records say exists. Callers hold the group's lock, so a
        missing one is damage to the store (`facecore verify --repair`), never a race."""
        value = self._get(key)
        if value is None:
            raise RuntimeError(f"store inconsistency: {key} is missing (run `facecore verify`)")
        return value

    def _iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return iter_prefix(self._db, prefix)

    def _group(
        self, appid: str, group: str, *, missing: type[FaceCoreError] = GroupNotFound
    ) -> _Group:
        g = self._groups.get((appid, group))
        if g is None:
            raise missing(f"group {group!r} does not exist")
        if g.deleting:
            raise GroupDeleting(f"group {group!r} is being deleted")
        return g

    @staticmethod
    def _still(g: _Group, group: str) -> None:
        """After a lock-free read: GroupDeleting if the group's deletion was marked meanwhile. Its data
        goes only after the mark, so a read that finds no mark afterwards saw all of it."""
        if g.deleting:
            raise GroupDeleting(f"group {group!r} is being deleted")

    @contextlib.contextmanager
    def _writing(
        self, appid: str, *groups: tuple[str, type[FaceCoreError]]
    ) -> Iterator[list[_Group]]:
        """The (group, code when missing) groups' states, their locks held, for a write that
        reads and changes them as one step. Missing groups are reported in argument order; locks
        are taken in (appid, group) order, the one global order, so two writers locking the same
        pair cannot deadlock; `deleting` is checked again under the lock (group_delete sets it
        under the same lock)."""
        states = [self._group(appid, grp, missing=error) for grp, error in groups]
        by_name = {grp: g for (grp, _), g in zip(groups, states)}  # a group named twice: once
        with contextlib.ExitStack() as stack:
            for grp in sorted(by_name):
                stack.enter_context(by_name[grp].lock)
            for (grp, _), g in zip(groups, states):
                self._still(g, grp)
            yield states

    @contextlib.contextmanager
    def _creating(self, appid: str, group: str) -> Iterator[tuple[_Group, bool]]:
        """The group's state, its lock held, for a write that creates the group when missing; and
        whether it is new (the caller writes its G/ key and registers it after its write). An
        existing group is locked alone, so adds to different groups run in parallel; a missing one
        is made under the meta lock, held until the caller has registered it, so that two adds
        never both create it."""
        g = self._groups.get((appid, group))
        if g is not None:
            with g.lock:
                self._still(g, group)
                yield g, False
            return
        with self._meta_lock:
            g = self._groups.get((appid, group))
            new = g is None
            if g is None:
                g = self._new_group()
            with g.lock:
                self._still(g, group)
                yield g, new

    def _embedding(self, embedding: object) -> np.ndarray:
        e = np.asarray(embedding)
        if e.dtype != np.float32 or e.shape != (self.dim,) or not np.isfinite(e).all():
            raise InvalidArgument(f"embedding must be finite float32 of shape ({self.dim},)")
        return e

    def _user_faces(self, appid: str, group: str, user: str) -> list[tuple[str, int, int]]:
        """(token, row, ctime) of the user's faces in the group, by token."""
        prefix = f"F/{appid}/{group}/{user}/".encode()
        out = []
        for key, value in self._iter_prefix(prefix):
            row, ctime = _FACE.unpack_from(value)[:2]
            out.append((key[len(prefix) :].decode(), int(row), int(ctime)))
        return out

    def _put_face(
        self,
        batch: WriteBatch,
        appid: str,
        group: str,
        user: str,
        row: int,
        now: int,
        face: NewFace,
    ) -> None:
        token = face.face_token
        box = [float(v) for v in face.box]
        emb = self._embedding(face.embedding)
        batch.put(f"F/{appid}/{group}/{user}/{token}".encode(), _FACE.pack(row, now, *box))
        batch.put(f"T/{appid}/{group}/{token}".encode(), _ROW.pack(row) + user.encode())
        batch.put(
            f"R/{appid}/{group}/{row:016x}".encode(),
            emb.tobytes() + bytes.fromhex(token) + user.encode(),
        )
        if face.image is not None:
            batch.put(f"I/{appid}/{group}/{token}".encode(), bytes(face.image))

    def _delete_face(
        self, batch: WriteBatch, appid: str, group: str, user: str, token: str, row: int
    ) -> None:
        batch.delete(f"F/{appid}/{group}/{user}/{token}".encode())
        batch.delete(f"T/{appid}/{group}/{token}".encode())
        batch.delete(f"R/{appid}/{group}/{row:016x}".encode())
        batch.delete(f"I/{appid}/{group}/{token}".encode())

    def _token_owner(self, appid: str, group: str, token: str) -> tuple[int, str] | None:
        value = self._get(f"T/{appid}/{group}/{token}")
        if value is None:
            return None
        return int(_ROW.unpack_from(value)[0]), value[_ROW.size :].decode()

    # ------------------------------------------------------------------ groups

    def group_add(self, appid: str, group_id: str) -> None:
        appid, group = check_appid(appid), check_group(group_id)
        with self._meta_lock:
            g = self._groups.get((appid, group))
            if g is not None:
                if g.deleting:
                    raise GroupDeleting(f"group {group!r} is being deleted")
                raise GroupExists(f"group {group!r} already exists")
            batch = WriteBatch(raw_mode=True)
            self._put_group(batch, appid, group)
            self._write(batch)
            self._groups[(appid, group)] = self._new_group()

    def _put_group(self, batch: WriteBatch, appid: str, group: str) -> None:
        meta = {"ctime": int(time.time()), "deleting": False}
        batch.put(f"G/{appid}/{group}".encode(), json.dumps(meta).encode())

    def group_list(self, appid: str, start: int = 0, length: int = 100) -> list[str]:
        appid = check_appid(appid)
        start, length = check_page(start, length)
        names = sorted(
            grp for (a, grp), g in list(self._groups.items()) if a == appid and not g.deleting
        )
        return names[start : start + length]

    def group_delete(self, appid: str, group_id: str) -> None:
        """Mark the group deleted and remove its data in the background (GroupDeleting until done)."""
        appid, group = check_appid(appid), check_group(group_id)
        with self._meta_lock:
            g = self._group(appid, group)
            with g.lock:
                key = f"G/{appid}/{group}"
                meta = json.loads(self._must(key))
                meta["deleting"] = True
                batch = WriteBatch(raw_mode=True)
                batch.put(key.encode(), json.dumps(meta).encode())
                self._write(batch)
                g.deleting = True
        self._start_delete(appid, group)

    def _start_delete(self, appid: str, group: str) -> None:
        t = threading.Thread(target=self._delete_group, args=(appid, group), daemon=True)
        self._deleters.append(t)
        t.start()

    def _delete_group(self, appid: str, group: str) -> None:
        for kind in ("R", "F", "T", "I", "U"):
            prefix = f"{kind}/{appid}/{group}/".encode()
            batch = WriteBatch(raw_mode=True)
            batch.delete_range(prefix, _end(prefix))
            self._write(batch)
        with self._meta_lock:
            batch = WriteBatch(raw_mode=True)
            batch.delete(f"G/{appid}/{group}".encode())
            self._write(batch)
            self._groups.pop((appid, group), None)

    def wait_deletions(self, timeout: float | None = None) -> bool:
        """Wait for background group deletions; False if some still run after `timeout`."""
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
        """Add a face; creates the group and the user when missing. FaceExists if already there."""
        result = self.face_add_many(appid, group_id, [(user_id, face, user_info)])[0]
        if isinstance(result, FaceCoreError):
            raise result
        return result

    def face_add_many(
        self, appid: str, group_id: str, items: Sequence[tuple[str, NewFace, str | None]]
    ) -> list[FaceInfo | FaceCoreError]:
        """Add faces to one group in one write batch; a bad item is reported, not raised."""
        appid, group = check_appid(appid), check_group(group_id)
        with self._creating(appid, group) as (g, new_group):
            batch = WriteBatch(raw_mode=True)
            if new_group:
                self._put_group(batch, appid, group)
            out: list[FaceInfo | FaceCoreError] = []
            now = int(time.time())
            row = g.next_row
            rows: list[int] = []
            vecs: list[bytes] = []
            seen: set[str] = set()
            users: dict[str, dict[str, Any] | None] = {}  # staged user records
            for user_id, face, user_info in items:
                try:
                    user = check_user(user_id)
                    info = check_user_info(user_info)
                    token = check_token(face.face_token)
                    emb = self._embedding(face.embedding)
                    if token in seen or self._token_owner(appid, group, token) is not None:
                        raise FaceExists(f"face {token} already exists in group {group!r}")
                except FaceCoreError as e:
                    out.append(e)
                    continue
                seen.add(token)
                if user not in users:
                    raw = self._get(f"U/{appid}/{group}/{user}")
                    users[user] = json.loads(raw) if raw is not None else None
                meta = users[user]
                if meta is None or info is not None:
                    meta = meta or {"user_info": "", "ctime": now}
                    if info is not None:
                        meta["user_info"] = info
                    users[user] = meta
                    batch.put(f"U/{appid}/{group}/{user}".encode(), json.dumps(meta).encode())
                self._put_face(batch, appid, group, user, row, now, face)
                rows.append(row)
                vecs.append(emb.tobytes())
                out.append(FaceInfo(token, now))
                row += 1
            if rows:  # nothing is written, not even a new group, when every item failed
                self._write(batch)
                if new_group:
                    self._groups[(appid, group)] = g
                self._add_rows(g, rows, vecs)
        return out

    def face_update(
        self,
        appid: str,
        group_id: str,
        user_id: str,
        face: NewFace,
        user_info: str | None = None,
        *,
        create: bool = False,
    ) -> FaceInfo:
        """Replace all of the user's faces in the group with `face` (UserNotFound if no such user).
        `create` (action_type=REPLACE): a missing group or user is registered instead, in the same
        step, so two concurrent REPLACEs of a new user leave one face, not both."""
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        info = check_user_info(user_info)
        token = check_token(face.face_token)
        emb = self._embedding(face.embedding)
        with contextlib.ExitStack() as stack:
            if create:
                g, new_group = stack.enter_context(self._creating(appid, group))
            else:
                g, new_group = (
                    stack.enter_context(self._writing(appid, (group, GroupNotFound)))[0],
                    False,
                )
            ukey = f"U/{appid}/{group}/{user}"
            raw = None if new_group else self._get(ukey)
            if raw is None and not create:
                raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
            owner = None if new_group else self._token_owner(appid, group, token)
            if owner is not None and owner[1] != user:
                raise FaceExists(f"face {token} already belongs to another user of {group!r}")
            now = int(time.time())
            old = self._user_faces(appid, group, user) if raw is not None else []
            batch = WriteBatch(raw_mode=True)
            if new_group:
                self._put_group(batch, appid, group)
            for t, r, _ in old:
                self._delete_face(batch, appid, group, user, t, r)
            row = g.next_row
            self._put_face(batch, appid, group, user, row, now, face)
            if raw is None or info is not None:
                meta = json.loads(raw) if raw is not None else {"user_info": "", "ctime": now}
                if info is not None:
                    meta["user_info"] = info
                batch.put(ukey.encode(), json.dumps(meta).encode())
            self._write(batch)
            if new_group:
                self._groups[(appid, group)] = g
            self._add_rows(g, [row], [emb.tobytes()])
            if old:
                g.index.remove(np.array([r for _, r, _ in old], np.int64))
                g.faces -= len(old)
        return FaceInfo(token, now)

    def face_delete(self, appid: str, group_id: str, user_id: str, face_token: str) -> None:
        """Remove one face of the user (FaceNotFound if not the user's); the last face takes the user."""
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        token = check_token(face_token)
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            owner = self._token_owner(appid, group, token)
            if owner is None or owner[1] != user:
                raise FaceNotFound(f"face {token} of user {user!r} does not exist in {group!r}")
            row = owner[0]
            batch = WriteBatch(raw_mode=True)
            self._delete_face(batch, appid, group, user, token, row)
            if len(self._user_faces(appid, group, user)) == 1:
                batch.delete(f"U/{appid}/{group}/{user}".encode())
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.faces -= 1

    def face_list(self, appid: str, group_id: str, user_id: str) -> list[FaceInfo]:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        g = self._group(appid, group)
        faces = self._user_faces(appid, group, user)  # one iterator: one consistent view
        self._still(g, group)
        if not faces:
            raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
        return sorted((FaceInfo(t, c) for t, _, c in faces), key=lambda f: (f.ctime, f.face_token))

    def face_image(self, appid: str, group_id: str, face_token: str) -> bytes | None:
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        g = self._group(appid, group)
        image = self._get(f"I/{appid}/{group}/{token}")
        self._still(g, group)
        return image

    # ------------------------------------------------------------------ users

    def user_get(self, appid: str, group_id: str, user_id: str) -> list[UserInfo]:
        """The user in one group, or in every group of the appid with group_id "@ALL"."""
        appid, user = check_appid(appid), check_user(user_id)
        if group_id == "@ALL":
            groups = sorted(
                (grp, g)
                for (a, grp), g in list(self._groups.items())
                if a == appid and not g.deleting
            )
        else:
            group = check_group(group_id)
            groups = [(group, self._group(appid, group))]
        found = [(grp, g, self._get(f"U/{appid}/{grp}/{user}")) for grp, g in groups]
        if group_id != "@ALL":
            self._still(groups[0][1], groups[0][0])
        out = []
        for group, g, raw in found:
            if raw is not None and not g.deleting:  # a group whose deletion began is gone
                meta = json.loads(raw)
                out.append(UserInfo(group, user, meta["user_info"], meta["ctime"]))
        if not out:
            raise UserNotFound(f"user {user!r} does not exist")
        return out

    def user_list(self, appid: str, group_id: str, start: int = 0, length: int = 100) -> list[str]:
        """User ids of the group in sorted order, `length` of them from `start`."""
        appid, group = check_appid(appid), check_group(group_id)
        start, length = check_page(start, length)
        g = self._group(appid, group)
        prefix = f"U/{appid}/{group}/".encode()
        out: list[str] = []
        for i, (key, _) in enumerate(self._iter_prefix(prefix)):
            if i >= start:
                out.append(key[len(prefix) :].decode())
                if len(out) == length:
                    break
        self._still(g, group)
        return out

    def user_copy(self, appid: str, user_id: str, src_group_id: str, dst_group_id: str) -> None:
        """Copy the user's faces and user_info from one group to another that exists (DstGroupNotFound).

        All or nothing, one write batch, with both groups locked: it cannot interleave with an
        add, delete or another copy on either group. Faces the user already has in the
        destination are skipped, so copying again (or concurrently) succeeds and changes nothing
        but user_info. A face that belongs to another user of the destination answers FaceExists
        (naming that user) and nothing is copied: one face cannot be two people, and a copy that
        left the user without it would answer success for a user who cannot be found by that
        face. The destination user keeps its other faces and its ctime; its user_info becomes
        the source's. Copying a user into its own group changes nothing."""
        appid, user = check_appid(appid), check_user(user_id)
        src, dst = check_group(src_group_id), check_group(dst_group_id)
        with self._writing(appid, (src, GroupNotFound), (dst, DstGroupNotFound)) as (_, gd):
            raw = self._get(f"U/{appid}/{src}/{user}")
            faces = self._user_faces(appid, src, user)
            if raw is None or not faces:
                raise UserNotFound(f"user {user!r} does not exist in group {src!r}")
            if src == dst:
                return
            info = json.loads(raw)["user_info"]
            now = int(time.time())
            batch = WriteBatch(raw_mode=True)
            row = gd.next_row
            rows: list[int] = []
            vecs: list[bytes] = []
            for token, src_row, _ in faces:
                owner = self._token_owner(appid, dst, token)
                if owner is not None and owner[1] == user:
                    continue  # already there
                if owner is not None:
                    raise FaceExists(
                        f"face {token} of user {user!r} already belongs to user {owner[1]!r} "
                        f"of group {dst!r}; nothing was copied",
                    )
                rec = self._must(f"R/{appid}/{src}/{src_row:016x}")
                emb = np.frombuffer(rec, np.float32, self.dim).copy()
                fkey = f"F/{appid}/{src}/{user}/{token}"
                x1, y1, x2, y2 = _FACE.unpack_from(self._must(fkey))[2:]
                image = self._get(f"I/{appid}/{src}/{token}")
                face = NewFace(token, emb, (x1, y1, x2, y2), image)
                self._put_face(batch, appid, dst, user, row, now, face)
                rows.append(row)
                vecs.append(emb.tobytes())
                row += 1
            ukey = f"U/{appid}/{dst}/{user}"
            raw_dst = self._get(ukey)
            meta = json.loads(raw_dst) if raw_dst is not None else {"ctime": now}
            if rows or meta.get("user_info") != info:
                meta["user_info"] = info
                batch.put(ukey.encode(), json.dumps(meta).encode())
                self._write(batch)
            if rows:
                self._add_rows(gd, rows, vecs)

    def user_delete(self, appid: str, group_id: str, user_id: str) -> None:
        appid, group, user = check_appid(appid), check_group(group_id), check_user(user_id)
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            faces = self._user_faces(appid, group, user)
            if not faces:
                raise UserNotFound(f"user {user!r} does not exist in group {group!r}")
            batch = WriteBatch(raw_mode=True)
            for t, r, _ in faces:
                self._delete_face(batch, appid, group, user, t, r)
            batch.delete(f"U/{appid}/{group}/{user}".encode())
            self._write(batch)
            g.index.remove(np.array([r for _, r, _ in faces], np.int64))
            g.faces -= len(faces)

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
        """Users best matching `embedding` (best face per user, score descending); NoMatch if none
        reaches `match_threshold`."""
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
        """identify for each row of `embeddings`, one scan per group for all of them."""
        appid = check_appid(appid)
        if isinstance(group_ids, str) or not isinstance(group_ids, Sequence) or not group_ids:
            raise BadGroupIdList("group_id_list must be a non-empty list of group ids")
        if len(group_ids) > MAX_GROUPS_PER_SEARCH:
            raise TooManyGroups(f"at most {MAX_GROUPS_PER_SEARCH} groups per search")
        groups = list(dict.fromkeys(check_group(gid) for gid in group_ids))
        user = check_user(user_id) if user_id is not None else None
        if (
            not isinstance(max_user_num, int)
            or isinstance(max_user_num, bool)
            or not 1 <= max_user_num <= 20
        ):
            raise BadMaxUserNum(f"max_user_num must be an integer in 1..20, got {max_user_num!r}")
        if (
            isinstance(match_threshold, bool)
            or not isinstance(match_threshold, (int, float))
            or not 0 <= match_threshold <= 100
        ):
            raise BadMatchThreshold(
                f"match_threshold must be a number in 0..100, got {match_threshold!r}"
            )
        return self.identify_checked(appid, groups, embeddings, user, match_threshold, max_user_num)

    def identify_checked(
        self,
        appid: str,
        groups: Sequence[str],
        embeddings: np.ndarray,
        user: str | None,
        match_threshold: float,
        max_user_num: int,
    ) -> list[list[Match] | FaceCoreError]:
        """identify_many for arguments its caller has checked already, as the server does where
        a request comes in: `appid`, `user` and each of `groups` valid ids, the groups without
        duplicates and at most 10, `match_threshold` a number in 0..100, `max_user_num` an int in
        1..20. They are not checked again."""
        q = np.asarray(embeddings)
        if q.dtype != np.float32 or q.ndim != 2 or q.shape[1] != self.dim:
            raise InvalidArgument(f"embeddings must be float32 of shape (m, {self.dim})")
        states = [(grp, self._group(appid, grp)) for grp in groups]
        # Candidates come from the int8 index, exact scores from the stored fp32 embeddings. The
        # int8 score is within ~0.01 of the exact one, so this margin keeps every true match.
        threshold_cos = score_to_similarity(float(match_threshold))
        floor = threshold_cos - 0.02 if match_threshold > 0 else -2.0
        best: list[dict[tuple[str, str], tuple[float, str]]] = [{} for _ in range(len(q))]
        for grp, g in states:
            self._search_group(appid, grp, g, q, user, max_user_num, floor, best)
        out: list[list[Match] | FaceCoreError] = []
        # Compared as the scores answered, so no returned score is below match_threshold (an
        # identical face scores 100: similarity_to_score forgives float32 rounding at cosine 1).
        for per_user in best:
            scored = [
                (grp, u, float(similarity_to_score(c)), tok)
                for (grp, u), (c, tok) in per_user.items()
            ]
            matches = sorted(
                (Match(grp, u, "", s, tok) for grp, u, s, tok in scored if s >= match_threshold),
                key=lambda m: (-m.score, m.group_id, m.user_id),
            )[:max_user_num]
            if not matches:
                out.append(NoMatch("no user matches the face"))
                continue
            out.append([self._with_info(appid, m) for m in matches])
        for grp, g in states:
            self._still(g, grp)
        return out

    def _search_group(
        self,
        appid: str,
        group: str,
        g: _Group,
        q: np.ndarray,
        user: str | None,
        max_user_num: int,
        floor: float,
        best: list[dict[tuple[str, str], tuple[float, str]]],
    ) -> None:
        n = len(g.index)
        if n == 0:
            return
        allow = None
        if user is not None:
            allow = np.array(
                sorted(r for _, r, _ in self._user_faces(appid, group, user)), np.int64
            )
            if len(allow) == 0:
                return
        k = min(n, max(4 * max_user_num, 16))
        while True:
            hits = g.index.search(q, k=k, filter=allow)
            records = self._rows(appid, group, hits.ids)
            if k >= n or allow is not None:
                break
            # Widen while some query has fewer distinct users above the floor than asked for and
            # its k-th hit is still above the floor (more matches may hide behind it).
            short = False
            for ids, scores in zip(hits.ids, hits.scores):
                users = {
                    records[int(r)][2]
                    for r, s in zip(ids, scores)
                    if s >= floor and int(r) in records
                }
                if len(users) < max_user_num and scores[-1] >= floor:
                    short = True
            if not short:
                break
            k = min(n, 4 * k)
        for qi, ids in enumerate(hits.ids):
            for r in ids:
                rec = records.get(int(r))
                if rec is None:
                    continue  # a miss, or removed since the scan
                vec, token, name = rec
                cos = float(np.dot(q[qi].astype(np.float64), vec.astype(np.float64)))
                key = (group, name)
                if key not in best[qi] or cos > best[qi][key][0]:
                    best[qi][key] = (cos, token)

    def _rows(
        self, appid: str, group: str, ids: np.ndarray
    ) -> dict[int, tuple[np.ndarray, str, str]]:
        """row -> (fp32 embedding, token, user) for the rows in `ids`, in one multi-get."""
        rows = [int(r) for r in np.unique(ids[ids >= 0])]
        if not rows:
            return {}
        keys = [f"R/{appid}/{group}/{r:016x}".encode() for r in rows]
        values: list[bytes | None] = self._db.get(keys)  # type: ignore[arg-type,assignment]
        width = 4 * self.dim
        out = {}
        for r, v in zip(rows, values):
            if v is not None:
                vec = np.frombuffer(v, np.float32, self.dim)
                out[r] = (vec, v[width : width + 16].hex(), v[width + 16 :].decode())
        return out

    def _with_info(self, appid: str, m: Match) -> Match:
        raw = self._get(f"U/{appid}/{m.group_id}/{m.user_id}")
        info = json.loads(raw)["user_info"] if raw is not None else ""
        return Match(m.group_id, m.user_id, info, m.score, m.face_token)

    # ------------------------------------------------------------------ detected-face tokens

    def token_put(
        self, appid: str, face_token: str, embedding: np.ndarray, attributes: dict[str, Any]
    ) -> None:
        """Remember a face detected for `appid`, for image_type=FACE_TOKEN (evicting the oldest).
        Tokens are per appid: the same image seen by another appid is that appid's own entry."""
        key = f"{check_appid(appid)}/{check_token(face_token)}"
        emb = self._embedding(embedding)
        now = time.time_ns()
        with self._token_lock:
            batch = WriteBatch(raw_mode=True)
            old = self._db.get(f"D/{key}".encode())
            if old is not None:
                batch.delete(f"E/{struct.unpack_from('<q', old)[0]:016x}/{key}".encode())
            else:
                self._token_count += 1
            value = struct.pack("<q", now) + emb.tobytes() + json.dumps(attributes).encode()
            batch.put(f"D/{key}".encode(), value)
            batch.put(f"E/{now:016x}/{key}".encode(), b"")
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

    def token_get(self, appid: str, face_token: str) -> tuple[np.ndarray, dict[str, Any]]:
        appid, token = check_appid(appid), check_token(face_token)
        value = self._db.get(f"D/{appid}/{token}".encode())
        horizon = time.time_ns() - self.token_seconds * 1_000_000_000
        if value is None or struct.unpack_from("<q", value)[0] < horizon:
            raise FaceTokenNotFound(f"face_token {token} does not exist or has expired")
        emb = np.frombuffer(value, np.float32, self.dim, 8).copy()
        attrs: dict[str, Any] = json.loads(value[8 + 4 * self.dim :])
        return emb, attrs

    # ------------------------------------------------------------------ tools

    def kv_get(self, namespace: str, key: str) -> bytes | None:
        return self._get(f"K/{check_id(namespace, 'namespace', 64, InvalidArgument)}/{key}")

    def kv_put(self, namespace: str, key: str, value: bytes) -> None:
        check_id(namespace, "namespace", 64, InvalidArgument)
        batch = WriteBatch(raw_mode=True)
        batch.put(f"K/{namespace}/{key}".encode(), bytes(value))
        self._write(batch)

    def iter_faces(self, appid: str | None = None) -> Iterator[tuple[str, str, str, str]]:
        """(appid, group, user, token) of every stored face (of one appid)."""
        prefix = b"F/" if appid is None else f"F/{check_appid(appid)}/".encode()
        for key, _ in self._iter_prefix(prefix):
            _, a, group, user, token = key.decode().split("/")
            yield a, group, user, token

    def set_embedding(
        self, appid: str, group_id: str, face_token: str, embedding: np.ndarray
    ) -> None:
        """Replace a stored face's embedding (facecore reindex)."""
        appid, group, token = check_appid(appid), check_group(group_id), check_token(face_token)
        emb = self._embedding(embedding)
        # Under the lock with `deleting` checked: a write after the deletion's range deletes
        # would leave a row that a later group of the same name would take for its own.
        with self._writing(appid, (group, GroupNotFound)) as (g,):
            owner = self._token_owner(appid, group, token)
            if owner is None:
                raise FaceNotFound(f"face {token} does not exist in {group!r}")
            row = owner[0]
            key = f"R/{appid}/{group}/{row:016x}"
            value = bytearray(self._must(key))
            value[: 4 * self.dim] = emb.tobytes()
            batch = WriteBatch(raw_mode=True)
            batch.put(key.encode(), bytes(value))
            self._write(batch)
            g.index.remove(np.array([row], np.int64))
            g.index.add(np.array([row], np.int64), emb[None])

    def stats(self) -> dict[str, Any]:
        """Faces in total and per "appid/group"."""
        groups = {
            f"{a}/{grp}": g.faces for (a, grp), g in sorted(self._groups.items()) if not g.deleting
        }
        return {"faces": sum(groups.values()), "groups": groups}

    # ------------------------------------------------------------------ verify and backup

    def checkpoint(self, path: str | Path) -> None:
        """An online copy of the store in `path` (which must not exist), through RocksDB's
        checkpoint: its immutable files hard-linked, the rest copied, no reader or writer
        stopped. Every write acknowledged before the call is in it; one running meanwhile is in
        it whole or not at all (one write batch per operation). The index snapshot is not: the
        copy rebuilds its indexes when first opened."""
        Checkpoint(self._db).create_checkpoint(str(path))

    def verify(self, repair: bool = False) -> VerifyReport:
        """Check every record against the others and every group's index against its rows
        (PROBLEMS lists what is found, and what a repair does about it); with `repair`, fix what
        can be fixed without guessing (one write batch per group, under its lock), then check
        again: `remaining` is what that second check found.

        Runs beside readers and writers. Each group is screened without its lock; one that
        shows a problem is checked again under its lock, so a write racing the screen is never
        reported; the index check holds the lock (a group's writes wait for a scan of its row
        keys). Groups being deleted are skipped."""
        report = self._verify(repair)
        if repair:
            after = self._verify(False)
            report.counts, report.remaining, report.repaired = after.counts, after.problems, True
        return report

    def _verify(self, fix: bool) -> VerifyReport:
        found = _Findings(fix)
        counts = dict.fromkeys(("groups", "users", "faces", "rows", "images"), 0)
        counts["deleting_groups"] = 0
        for appid, group in self._scan_keyspace(found):
            if fix:
                self._adopt(appid, group)
        if fix:
            found.flush(self)  # the malformed keys no group owns
        for (appid, group), g in sorted(self._groups.items()):
            if g.deleting:
                counts["deleting_groups"] += 1
                continue
            group_counts = self._verify_group(appid, group, g, found, fix)
            if group_counts is None:  # its deletion began meanwhile
                counts["deleting_groups"] += 1
                continue
            counts["groups"] += 1
            for k, v in group_counts.items():
                counts[k] += v
        counts["detected_tokens"] = self._verify_detected(found, fix)
        return VerifyReport(counts, dict(found.problems), found.examples, False, found.problems)

    def _scan_keyspace(self, found: _Findings) -> set[tuple[str, str]]:
        """One pass over the whole store (one iterator: one consistent view), skipping over each
        group's range per kind: keys that name no valid group or kind, and groups that have data
        but no G/ record (which no operation leaves: a group's G/ record is written with its
        first data and deleted after its last). Returns those groups."""
        it = self._db.iter()
        it.seek_to_first()
        records: set[tuple[str, str]] = set()
        data: set[tuple[str, str]] = set()
        while it.valid():
            key = it.key()
            assert isinstance(key, bytes)  # raw mode
            kind = key[:2]
            if kind in (b"D/", b"E/", b"K/"):  # detected tokens: _verify_detected; K/: tools'
                it.seek(key[:1] + b"0")
                continue
            if kind == b"G/":
                ids = _group_key(key)
                if ids is None:
                    found.add("malformed_key", key, delete=[key])
                else:
                    records.add(ids)
                it.next()
                continue
            if kind not in (b"U/", b"F/", b"R/", b"T/", b"I/"):
                found.add("unknown_key", key)
                it.next()
                continue
            parts = key.split(b"/", 3)
            ids = _group_key(b"G/" + b"/".join(parts[1:3])) if len(parts) == 4 else None
            if ids is None:
                found.add("malformed_key", key, delete=[key])
                it.next()
                continue
            data.add(ids)
            it.seek(_end(b"/".join(parts[:3]) + b"/"))
        orphans = {ids for ids in data - records if ids not in self._groups}
        for appid, group in sorted(orphans):
            found.add("group_missing", f"G/{appid}/{group}".encode())
        return orphans

    def _adopt(self, appid: str, group: str) -> None:
        """Give data without a G/ record its record back and index it, rather than delete what
        may be the only copy of those faces; the caller checks the group next."""
        with self._meta_lock:
            if (appid, group) in self._groups or self._get(f"G/{appid}/{group}") is not None:
                return  # created meanwhile
            batch = WriteBatch(raw_mode=True)
            self._put_group(batch, appid, group)
            self._write(batch)
            self._groups[(appid, group)] = self._rebuild(appid, group)

    def _verify_group(
        self, appid: str, group: str, g: _Group, found: _Findings, fix: bool
    ) -> dict[str, int] | None:
        """Screen the group's records without its lock; if that shows a problem, check (and fix)
        them again under the lock, where nothing races; then the index, under the lock."""
        screen = _Findings(False)
        counts = self._check_records(appid, group, screen)
        confirmed = _Findings(fix)
        with g.lock:
            if g.deleting:
                return None
            if screen.problems:
                counts = self._check_records(appid, group, confirmed)
                found.merge(confirmed)
            # The index against the rows as they are, so that a repair reports what verify does.
            rows, missing, last = 0, 0, -1
            for key, _ in self._iter_prefix(f"R/{appid}/{group}/".encode()):
                row = _row_of(key.rsplit(b"/", 1)[1])
                if row is not None:
                    rows, last = rows + 1, row  # in key order: ascending
                    missing += row not in g.index
            name = f"{appid}/{group}".encode()
            stale = True
            if len(g.index) != rows or g.faces != rows:
                found.add("index_size", name)
            elif missing:  # as many, but not the same
                found.add("index_rows", name)
            else:
                stale = False
            if g.next_row <= last:
                found.add("next_row", name)
                stale = True
            if fix:
                confirmed.flush(self)
            if fix and (stale or confirmed.rows_changed):
                fresh = self._rebuild(appid, group)
                g.index, g.faces = fresh.index, fresh.faces
                g.next_row = max(g.next_row, fresh.next_row)
        return counts

    def _check_records(self, appid: str, group: str, found: _Findings) -> dict[str, int]:
        """Every record of one group against the others (docs/storage.md): G/, then F/ merged
        with U/ (both in user order), R/, T/ and I/, each by a prefix scan with point reads.
        Memory stays constant whatever the group's size. Returns the group's counts."""
        base = f"{appid}/{group}/"
        width = 4 * self.dim
        counts = dict.fromkeys(("users", "faces", "rows", "images"), 0)

        gkey = f"G/{appid}/{group}".encode()
        graw = self._db.get(gkey)
        if graw is None:
            found.add("group_missing", gkey, put=[(gkey, self._group_value({}))])
        else:
            meta = _group_meta(graw)
            if not isinstance(meta.get("ctime"), int) or meta.get("deleting") is not False:
                found.add("group_record", gkey, put=[(gkey, self._group_value(meta))])

        def good(user: bytes, token: bytes, row: int) -> bool:
            """Whether F/ user/token names `row` and R/ row names that face back."""
            f = self._db.get(f"F/{base}".encode() + user + b"/" + token)
            if f is None or len(f) != _FACE.size or _FACE.unpack_from(f)[0] != row:
                return False
            r = self._db.get(f"R/{base}{row:016x}".encode())
            return r is not None and r[width:] == bytes.fromhex(token.decode()) + user

        # F/ merged with U/: a face needs its row and its user record; a user needs a face.
        claimed: dict[bytes, tuple[int, bytes]] = {}  # tokens whose T/ this pass rewrites
        uprefix = f"U/{base}".encode()
        users = self._iter_prefix(uprefix)
        pending = next(users, None)

        def users_before(user: bytes | None) -> Iterator[tuple[bytes, bytes]]:
            """The U/ records up to `user` (all of them for None), consumed in order."""
            nonlocal pending
            while pending is not None and (user is None or pending[0][len(uprefix) :] <= user):
                yield pending[0][len(uprefix) :], pending[1]
                pending = next(users, None)

        def user_done(user: bytes, kept: int, first_ctime: int, record: bytes | None) -> None:
            ukey = uprefix + user
            if kept == 0 and record is not None:
                found.add("user_without_faces", ukey, delete=[ukey])
            elif kept and not _user_meta_ok(record):
                value = json.dumps({"user_info": "", "ctime": first_ctime}).encode()
                found.add("face_without_user", ukey, put=[(ukey, value)])
            if kept:
                counts["users"] += 1

        fprefix = f"F/{base}".encode()
        current: bytes | None = None
        kept, first_ctime, record = 0, 0, None
        for key, value in self._iter_prefix(fprefix):
            rest = key[len(fprefix) :].split(b"/")
            if (
                len(rest) != 2
                or not is_id(rest[0].decode("utf-8", "replace"))
                or not _TOKEN.fullmatch(rest[1].decode("utf-8", "replace"))
                or len(value) != _FACE.size
            ):
                found.add("malformed_key", key, delete=[key])
                continue
            user, token = rest
            if user != current:
                if current is not None:
                    user_done(current, kept, first_ctime, record)
                record = None
                for name, raw in users_before(user):
                    if name == user:
                        record = raw
                    else:  # a user record with no face at all
                        user_done(name, 0, 0, raw)
                current, kept, first_ctime = user, 0, 0
            row, ctime = (int(v) for v in _FACE.unpack_from(value)[:2])
            rkey = f"R/{base}{row:016x}".encode()
            r = self._db.get(rkey)
            tbin = bytes.fromhex(token.decode())
            if r is None or r[width:] != tbin + user:
                found.add("face_without_row", key, delete=[key])
                continue
            tkey = f"T/{base}".encode() + token
            t = self._db.get(tkey)
            mine = _ROW.pack(row) + user
            if t != mine:
                owner = claimed.get(token)
                if owner is None and t is not None and len(t) > _ROW.size:
                    other = (int(_ROW.unpack_from(t)[0]), t[_ROW.size :])
                    if good(other[1], token, other[0]):
                        owner = other
                if owner is not None:  # another user's face has this token: keep that one
                    found.add("duplicate_token", key, delete=[key, rkey])
                    continue
                found.add("token_missing", tkey, put=[(tkey, mine)])
                claimed[token] = (row, user)
            kept += 1
            counts["faces"] += 1
            first_ctime = ctime if kept == 1 else min(first_ctime, ctime)
        if current is not None:
            user_done(current, kept, first_ctime, record)
        for name, raw in users_before(None):
            user_done(name, 0, 0, raw)

        # R/: a row needs its face (a search would otherwise return a face that is not there).
        rprefix = f"R/{base}".encode()
        for key, value in self._iter_prefix(rprefix):
            number = _row_of(key[len(rprefix) :])
            user = value[width + 16 :]
            if (
                number is None
                or len(value) <= width + 16
                or not is_id(user.decode("utf-8", "replace"))
            ):
                found.add("malformed_key", key, delete=[key])
                continue
            counts["rows"] += 1
            f = self._db.get(fprefix + user + b"/" + value[width : width + 16].hex().encode())
            if f is None or len(f) != _FACE.size or _FACE.unpack_from(f)[0] != number:
                found.add("row_orphan", key, delete=[key])

        # T/: an entry needs the face it names (unless this pass rewrites it).
        tprefix = f"T/{base}".encode()
        for key, value in self._iter_prefix(tprefix):
            token = key[len(tprefix) :]
            if token in claimed:
                continue
            if not _TOKEN.fullmatch(token.decode("utf-8", "replace")) or len(value) <= _ROW.size:
                found.add("malformed_key", key, delete=[key])
                continue
            if not good(value[_ROW.size :], token, int(_ROW.unpack_from(value)[0])):
                found.add("token_dangling", key, delete=[key])

        # I/: an image needs its face.
        iprefix = f"I/{base}".encode()
        for key, _ in self._iter_prefix(iprefix):
            token = key[len(iprefix) :]
            if not _TOKEN.fullmatch(token.decode("utf-8", "replace")):
                found.add("malformed_key", key, delete=[key])
                continue
            t = None if token in claimed else self._db.get(tprefix + token)
            if token not in claimed and (
                t is None
                or len(t) <= _ROW.size
                or not good(t[_ROW.size :], token, int(_ROW.unpack_from(t)[0]))
            ):
                found.add("image_orphan", key, delete=[key])
                continue
            counts["images"] += 1
        return counts

    @staticmethod
    def _group_value(meta: dict[str, Any]) -> bytes:
        ctime = meta.get("ctime")
        return json.dumps(
            {"ctime": ctime if isinstance(ctime, int) else int(time.time()), "deleting": False}
        ).encode()

    def _verify_detected(self, found: _Findings, fix: bool) -> int:
        """D/ detected-face tokens against their E/ eviction entries: screened without the token
        lock, confirmed (and fixed) under it. Returns the number of tokens."""
        screen = _Findings(False)
        count = self._check_detected(screen)
        if not screen.problems:
            return count
        with self._token_lock:
            confirmed = _Findings(fix)
            count = self._check_detected(confirmed)
            found.merge(confirmed)
            if fix:
                confirmed.flush(self)
                self._token_count = sum(1 for _ in self._iter_prefix(b"E/"))
        return count

    def _check_detected(self, found: _Findings) -> int:
        width = 8 + 4 * self.dim
        count = 0
        for key, value in self._iter_prefix(b"D/"):
            parts = key.decode("utf-8", "replace").split("/")
            if len(parts) != 3 or not is_id(parts[1]) or not _TOKEN.fullmatch(parts[2]):
                found.add("malformed_key", key, delete=[key])
                continue
            if len(value) < width:
                found.add("malformed_key", key, delete=[key])
                continue
            count += 1
            ekey = f"E/{struct.unpack_from('<q', value)[0]:016x}/{parts[1]}/{parts[2]}".encode()
            if self._db.get(ekey) is None:
                found.add("detected_without_order", key, put=[(ekey, b"")])
        for key, _ in self._iter_prefix(b"E/"):
            parts = key.decode("utf-8", "replace").split("/")
            if len(parts) != 4 or _row_of(parts[1].encode()) is None:
                found.add("malformed_key", key, delete=[key])
                continue
            d = self._db.get(f"D/{parts[2]}/{parts[3]}".encode())
            if d is None or len(d) < 8 or struct.unpack_from("<q", d)[0] != int(parts[1], 16):
                found.add("order_dangling", key, delete=[key])
        return count
