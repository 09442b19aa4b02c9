"""The face library's core, which the operations (crud.py, identify.py, verify.py) build on: the
store and the in-memory groups, opening and closing, the locks a writer holds, the record helpers
every operation shares, and group deletion in the background.

Locks (docs/storage.md, Concurrency): each group's writers hold its lock; an add that creates a
group, group_add and group_delete also hold the meta lock, taken before any group's; locks of
several groups are taken in (appid, group) order. Readers take none.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facecore.errors import FaceCoreError, GroupDeleting, GroupNotFound, InvalidArgument
from facecore.store import codec, indexes
from facecore.store.indexes import GroupState, Mode
from facecore.store.kv import Store, WriteBatch, scan_prefix
from facecore.store.rocks import RocksStore
from facecore.store.tokens import DetectedTokens

if TYPE_CHECKING:
    from facecore.store.crud import NewFace

STORE_DIR = "rocksdb"  # the embedded store inside the library's directory


class LibraryCore:
    """State and shared machinery of a FaceLibrary (see library.py for the whole class)."""

    def __init__(
        self,
        path: str | Path,
        dim: int = 128,
        token_capacity: int = 1_000_000,
        token_days: int = 30,
        sync_writes: bool = False,
        index_mode: Mode = "exact",
        threads: int = 0,
        store: Store | None = None,
    ) -> None:
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
        self._store = store if store is not None else RocksStore(self.path / STORE_DIR, sync_writes)
        self._groups: dict[tuple[str, str], GroupState] = {}
        self._meta_lock = threading.Lock()  # adds (which may create groups) and the group table
        self._deleters: list[threading.Thread] = []
        self._closed = False
        self._open()
        self._tokens = DetectedTokens(
            self._store, dim, token_capacity, token_days * 86400, self._embedding, self._write
        )

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        self._groups.update(
            indexes.load_snapshot(
                self.path, self.dim, self._store.sequence(), self.threads, self._new_group
            )
        )
        for key, value in self._iter_prefix(b"G/"):
            # A damaged key or value is left for verify to report; it must not stop the open.
            ids = codec.group_ids(key)
            if ids is None:
                continue
            deleting = codec.group_meta(value).get("deleting") is True
            if ids not in self._groups:
                # A group being deleted needs no index: its deletion resumes below.
                self._groups[ids] = self._new_group() if deleting else self._rebuild(*ids)
            self._groups[ids].deleting = deleting
        for (appid, group), g in list(self._groups.items()):
            if g.deleting:
                self._start_delete(appid, group)

    def _new_group(self) -> GroupState:
        return GroupState(self.dim, self.index_mode, self.threads)

    def _rebuild(self, appid: str, group: str) -> GroupState:
        return indexes.rebuild(self._store, appid, group, self._new_group(), self.dim)

    def _add_rows(self, g: GroupState, rows: list[int], vecs: list[bytes]) -> None:
        indexes.add_rows(g, self.dim, rows, vecs)

    def close(self) -> None:
        """Wait for running group deletions, save the index snapshot, close the store."""
        if self._closed:
            return
        self.wait_deletions()
        self._closed = True
        indexes.save_snapshot(self.path, self._groups, self.dim, self._store)
        self._store.close()

    # ------------------------------------------------------------------ the store

    @property
    def store(self) -> Store:
        return self._store

    @property
    def _db(self) -> Any:
        """The embedded store's RocksDB handle (tools and tests that damage it on purpose)."""
        if isinstance(self._store, RocksStore):
            return self._store.db
        raise AttributeError(f"{self._store.describe()} has no RocksDB handle")

    def _write(self, batch: WriteBatch) -> int:
        return self._store.write(batch)

    def _get(self, key: str) -> bytes | None:
        return self._store.get(key.encode())

    def _must(self, key: str) -> bytes:
        """A value that the group's own records say exists. Callers hold the group's lock, so a
        missing one is damage to the store (`facecore verify --repair`), never a race."""
        value = self._get(key)
        if value is None:
            raise RuntimeError(f"store inconsistency: {key} is missing (run `facecore verify`)")
        return value

    def _iter_prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_prefix(self._store, prefix)

    # ------------------------------------------------------------------ groups and their locks

    def _group(
        self, appid: str, group: str, *, missing: type[FaceCoreError] = GroupNotFound
    ) -> GroupState:
        g = self._groups.get((appid, group))
        if g is None:
            raise missing(f"group {group!r} does not exist")
        if g.deleting:
            raise GroupDeleting(f"group {group!r} is being deleted")
        return g

    @staticmethod
    def _still(g: GroupState, group: str) -> None:
        """After a lock-free read: GroupDeleting if the group's deletion was marked meanwhile. Its
        data goes only after the mark, so a read that finds no mark afterwards saw all of it."""
        if g.deleting:
            raise GroupDeleting(f"group {group!r} is being deleted")

    @contextlib.contextmanager
    def _writing(
        self, appid: str, *groups: tuple[str, type[FaceCoreError]]
    ) -> Iterator[list[GroupState]]:
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
    def _creating(self, appid: str, group: str) -> Iterator[tuple[GroupState, bool]]:
        """The group's state, its lock held, for a write that creates the group when missing;
        and whether it is new (the caller writes its G/ key and registers it after its write).
        An existing group is locked alone, so adds to different groups run in parallel; a missing
        one is made under the meta lock, held until the caller has registered it, so that two
        adds never both create it."""
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

    # ------------------------------------------------------------------ records

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
            row, ctime = codec.FACE.unpack_from(value)[:2]
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
        batch.put(
            codec.face_key(appid, group, user, token).encode(), codec.FACE.pack(row, now, *box)
        )
        batch.put(
            codec.token_key(appid, group, token).encode(), codec.ROW.pack(row) + user.encode()
        )
        batch.put(codec.row_key(appid, group, row).encode(), codec.row_value(emb, token, user))
        if face.image is not None:
            batch.put(codec.image_key(appid, group, token).encode(), bytes(face.image))

    def _delete_face(
        self, batch: WriteBatch, appid: str, group: str, user: str, token: str, row: int
    ) -> None:
        batch.delete(codec.face_key(appid, group, user, token).encode())
        batch.delete(codec.token_key(appid, group, token).encode())
        batch.delete(codec.row_key(appid, group, row).encode())
        batch.delete(codec.image_key(appid, group, token).encode())

    def _token_owner(self, appid: str, group: str, token: str) -> tuple[int, str] | None:
        value = self._get(codec.token_key(appid, group, token))
        if value is None:
            return None
        return int(codec.ROW.unpack_from(value)[0]), value[codec.ROW.size :].decode()

    def _put_group(self, batch: WriteBatch, appid: str, group: str) -> None:
        batch.put(codec.group_key(appid, group).encode(), codec.group_value())

    # ------------------------------------------------------------------ group deletion

    def _start_delete(self, appid: str, group: str) -> None:
        t = threading.Thread(target=self._delete_group, args=(appid, group), daemon=True)
        self._deleters.append(t)
        t.start()

    def _delete_group(self, appid: str, group: str) -> None:
        for kind in codec.GROUP_KINDS:
            prefix = codec.scope(kind, appid, group)
            batch = WriteBatch()
            batch.delete_range(prefix, codec.end_of(prefix))
            self._write(batch)
        with self._meta_lock:
            batch = WriteBatch()
            batch.delete(codec.group_key(appid, group).encode())
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
