"""The face library's core, which the operations (crud.py, identify.py, verify.py) build on: the
store and the in-memory groups, opening and closing, the locks a writer holds, the record helpers
every operation shares, and group deletion in the background.

Locks (docs/storage.md, Concurrency): each group's writers hold its lock; an add that creates a
group, group_add and group_delete also hold the meta lock, taken before any group's; locks of
several groups are taken in (appid, group) order. Readers take none.

A shared store (PostgreSQL, several instances): a writer first takes its groups' locks in the
store (`_shared`: held against every instance until its write commits) and applies every change
logged up to then, so what it reads in memory (the group table, row numbers) is current; then it
takes the in-process locks as above. A follower thread applies the other instances' changes, in
sequence order, under the same in-process locks (meta, then the groups'); an instance's own
changes are applied by the writer itself, and the follower skips them. Order of locks: the store's,
the follow lock, the meta lock, the groups'.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from facecore.errors import (
    FaceCoreError,
    GroupDeleting,
    GroupNotFound,
    InvalidArgument,
    StoreUnavailable,
)
from facecore.store import codec, indexes, owners
from facecore.store.indexes import GroupState, Mode
from facecore.store.kv import (
    DELETE_RANGE,
    PUT,
    Change,
    Store,
    StoreGap,
    StoreView,
    WriteBatch,
    scan_prefix,
)
from facecore.store.owners import RowOwners
from facecore.store.rocks import RocksStore
from facecore.store.tokens import DetectedTokens

if TYPE_CHECKING:
    from facecore.store.crud import NewFace

log = logging.getLogger("facecore.store")
STORE_DIR = "rocksdb"  # the embedded store inside the library's directory
POLL_SECONDS = 0.5  # a shared store's follower polls at least this often (NOTIFY wakes it sooner)
LOG_KEEP = 100_000  # a shared store's change log keeps at least this many entries
LOG_KEEP_SECONDS = 3600.0  # and those of the last hour; an instance further behind reloads


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
        self._kv_lock = threading.Lock()  # kv_update's read-change-write
        self._deleters: list[threading.Thread] = []
        self._closed = False
        # A shared store: the last change of its log applied here, the changes this instance
        # wrote and applied itself (the follower skips them), the follower thread.
        self._applied = 0
        self._local_seqs: set[int] = set()
        # Groups a write is creating (under the meta lock), before it registers them.
        self._creating_now: dict[tuple[str, str], GroupState] = {}
        self._follow_lock = threading.Lock()
        self._stop = threading.Event()
        self._follower: threading.Thread | None = None
        if self._store.shared:
            self._store.followed = codec.FOLLOWED
            self._store.wait(0)  # listening before the load: any later change is announced
        self._open()
        self._tokens = DetectedTokens(
            self._store, dim, token_capacity, token_days * 86400, self._embedding, self._write
        )
        if self._store.shared:
            self._follower = threading.Thread(
                target=self._follow, name="facecore-follower", daemon=True
            )
            self._follower.start()

    # ------------------------------------------------------------------ lifecycle

    def _open(self) -> None:
        if self._store.shared:
            self._groups, self._applied = self._load()
        else:
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
        g = GroupState(self.dim, self.index_mode, self.threads)
        if self._store.shared:
            g.owners = RowOwners()
        return g

    def _rebuild(self, appid: str, group: str) -> GroupState:
        """The group's state from the store as it is now: its index, and on a shared store its
        owners too (from one view, as at start-up)."""
        g = self._new_group()
        if not self._store.shared:
            return indexes.rebuild(self._store, appid, group, g, self.dim)
        with self._store.view() as view:
            self._fill(view, g, appid, group)
        return g

    def _fill(self, view: StoreView, g: GroupState, appid: str, group: str) -> None:
        """A shared store: the empty `g` given the group's rows and owners as of `view`."""
        rows, vecs, g.owners = owners.load_group(view, appid, group, self.dim)
        if len(rows):
            g.index.add(rows, vecs)
            g.faces, g.next_row = len(rows), int(rows.max()) + 1

    def _add_rows(self, g: GroupState, rows: list[int], vecs: list[bytes]) -> None:
        indexes.add_rows(g, self.dim, rows, vecs)

    def close(self) -> None:
        """Wait for running group deletions, save the index snapshot (an embedded store: a
        shared one is loaded from the database at every start), close the store."""
        if self._closed:
            return
        self.wait_deletions()
        self._closed = True
        self._stop.set()
        if self._follower is not None:
            self._store.interrupt()
            self._follower.join()
        if not self._store.shared:
            indexes.save_snapshot(self.path, self._groups, self.dim, self._store)
        self._store.close()

    # ------------------------------------------------------------------ the store

    @property
    def store(self) -> Store:
        return self._store

    def store_state(self) -> dict[str, Any]:
        """For /health: which store, whether it answers now, and why not."""
        down = self._store.down
        return {
            "store": self._store.describe(),
            "shared": self._store.shared,
            "reachable": down is None,
            **({"detail": down} if down else {}),
        }

    @property
    def _db(self) -> Any:
        """The embedded store's RocksDB handle (tools and tests that damage it on purpose)."""
        if isinstance(self._store, RocksStore):
            return self._store.db
        raise AttributeError(f"{self._store.describe()} has no RocksDB handle")

    def _write(self, batch: WriteBatch) -> int:
        """Write a batch. A shared store's change number is remembered as applied here: the
        caller changes memory itself, before it releases the locks the follower needs."""
        seq = self._store.write(batch)
        if not self._store.shared:
            return seq
        self._own_owners(batch)
        if seq:
            # Next in the log: this instance is at it now. Otherwise the follower meets it later
            # and skips it. Never waits for the follow lock (its holder may wait for ours).
            if self._follow_lock.acquire(blocking=False):
                try:
                    if self._applied == seq - 1:
                        self._applied = seq
                        return seq
                finally:
                    self._follow_lock.release()
            self._local_seqs.add(seq)
        return seq

    def _own_owners(self, batch: WriteBatch) -> None:
        """A shared store: this instance's own write applied to its groups' owners (the writer
        holds their locks; the group's index changes after this, so a row the index has is
        always found here)."""
        for op, key, value in batch.ops:
            if not key.startswith((b"R/", b"U/")):
                continue
            ids = codec.data_group(key)
            g = None if ids is None else self._groups.get(ids) or self._creating_now.get(ids)
            if g is not None and g.owners is not None:
                g.owners.apply(op, key, value, self.dim)

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

    # ------------------------------------------------------------------ a shared store

    @contextlib.contextmanager
    def _shared(self, appid: str, groups: list[str]) -> Iterator[None]:
        """A shared store: hold the groups' locks in the store (against every instance) and apply
        every change logged up to taking them; the block's write commits and releases them. An
        embedded store: nothing (the in-process locks suffice)."""
        if not self._store.shared:
            yield
            return
        with self._store.locked([codec.group_key(appid, grp) for grp in groups]) as head:
            self._catch_up(head)
            yield

    def _fresh(self) -> None:
        """Before a read that consults memory (the group table, an index): a shared store's
        changes committed so far applied, so that a read on any instance sees every write
        acknowledged before it began (one round trip; with the database down, memory as it
        is). An embedded store: nothing to do."""
        if not self._store.shared:
            return
        try:
            head = self._store.sequence()
            if head > self._applied:
                self._catch_up(head)
        except StoreUnavailable:
            return

    def _load(self) -> tuple[dict[tuple[str, str], GroupState], int]:
        """Every group and its index from one view of the store (a shared store: one snapshot,
        its vectors by bulk reads); and the change sequence the view is at."""
        groups: dict[tuple[str, str], GroupState] = {}
        with self._store.view() as view:
            for key, value in view.scan(b"G/", b"G0"):
                ids = codec.group_ids(key)
                if ids is None:
                    continue  # damaged: verify reports it
                g = groups[ids] = self._new_group()
                g.deleting = codec.group_meta(value).get("deleting") is True
                if not g.deleting:
                    self._fill(view, g, *ids)
            return groups, view.sequence

    def _catch_up(self, target: int | None = None) -> None:
        """Apply the store's logged changes, in order, up to `target` (None: all there are). A
        gap in the log (it was pruned past this instance, or the database was replaced) loads
        everything again."""
        with self._follow_lock:
            while target is None or self._applied < target:
                try:
                    changes = self._store.changes(self._applied)
                except StoreGap as e:
                    log.warning("reloading every group from the store: %s", e)
                    self._reload()
                    continue
                if not changes:
                    return
                for change in changes:
                    self._apply(change)
                    self._applied = change.seq

    def _apply(self, change: Change) -> None:
        """One change of another instance, under the meta lock and its groups' locks; one this
        instance wrote is skipped (its writer applied it, under the same locks)."""
        touched = sorted({ids for _, key, _ in change.ops if (ids := codec.any_group(key))})
        with self._meta_lock, contextlib.ExitStack() as stack:
            for ids in touched:
                g = self._groups.get(ids)
                if g is not None:
                    stack.enter_context(g.lock)
            if change.seq in self._local_seqs:
                self._local_seqs.discard(change.seq)
                return
            adds: dict[tuple[str, str], tuple[list[int], list[bytes]]] = {}

            def flush() -> None:
                for (appid, group), (rows, vecs) in adds.items():
                    g = self._groups.get((appid, group))
                    if g is not None:
                        self._add_rows(g, rows, vecs)
                adds.clear()

            width = 4 * self.dim
            for op, key, value in change.ops:
                ids = codec.any_group(key)
                if ids is None:
                    continue
                if key.startswith(b"G/"):
                    flush()
                    if op == PUT:
                        deleting = codec.group_meta(value).get("deleting") is True
                        g = self._groups.get(ids)
                        if g is None:
                            # New to this instance: its data may predate the record (a group
                            # verify adopts), so it comes from the store, as at start-up. Rows
                            # logged after that are applied again below, which is idempotent.
                            g = self._new_group() if deleting else self._rebuild(*ids)
                            self._groups[ids] = g
                        g.deleting = deleting
                    else:
                        self._groups.pop(ids, None)
                    continue
                g = self._groups.get(ids)
                if g is None:
                    continue
                if g.owners is not None:  # before the index has a new row
                    g.owners.apply(op, key, value, self.dim)
                if not key.startswith(b"R/"):
                    continue  # U/: only the owners keep anything of it
                if op == DELETE_RANGE:  # the group's rows, during its deletion
                    flush()
                    fresh = self._new_group()
                    g.index, g.faces = fresh.index, 0
                    continue
                row = codec.row_of(key.rsplit(b"/", 1)[1])
                if row is None:
                    continue
                if row in g.index:  # deleted, or replaced (set_embedding)
                    flush()
                    g.index.remove(np.array([row], np.int64))
                    g.faces -= 1
                if op == PUT and len(value) >= width + 16:
                    rows, vecs = adds.setdefault(ids, ([], []))
                    rows.append(row)
                    vecs.append(value[:width])
            flush()

    def _reload(self) -> None:
        """Every group loaded again, in place (a writer waiting on a group's lock keeps a valid
        state), with every lock held: writes wait, searches go on with the old indexes."""
        with self._meta_lock, contextlib.ExitStack() as stack:
            for _, g in sorted(self._groups.items()):
                stack.enter_context(g.lock)
            fresh, sequence = self._load()
            for ids, g in list(self._groups.items()):
                if ids not in fresh:
                    g.deleting = True  # gone: a writer still holding it answers GroupDeleting
                    del self._groups[ids]
            for ids, f in fresh.items():
                g = self._groups.setdefault(ids, f)
                g.index, g.faces, g.next_row, g.deleting = f.index, f.faces, f.next_row, f.deleting
                g.owners = f.owners
            self._applied = sequence
            self._local_seqs = {s for s in self._local_seqs if s > sequence}

    def _follow(self) -> None:
        """The follower thread: wake on the store's announcements (at least every POLL_SECONDS),
        apply what changed; now and then prune the change log and recount the token cache."""
        chores = time.monotonic() + 60
        while not self._stop.is_set():
            announced = self._store.wait(POLL_SECONDS)
            if self._stop.is_set():
                return
            if announced is not None and announced <= self._applied:
                continue  # this instance's own write, applied already
            try:
                self._catch_up()
                self._tokens.flush()  # what it kept in memory while the store was down
                if time.monotonic() > chores:
                    chores = time.monotonic() + 60
                    self._store.prune(LOG_KEEP, LOG_KEEP_SECONDS)
                    self._tokens.recount()
            except StoreUnavailable:
                pass  # logged by the store once; its wait() probes until it answers again
            except Exception:
                log.exception("following the shared store failed; retrying")

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
        with self._shared(appid, [grp for grp, _ in groups]):
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
        with self._shared(appid, [group]):
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
                    g = self._creating_now[(appid, group)] = self._new_group()
                try:
                    with g.lock:
                        self._still(g, group)
                        yield g, new
                finally:
                    self._creating_now.pop((appid, group), None)

    # ------------------------------------------------------------------ records

    def _embedding(self, embedding: object) -> np.ndarray:
        e = np.asarray(embedding)
        if e.dtype != np.float32 or e.shape != (self.dim,) or not np.isfinite(e).all():
            raise InvalidArgument(f"embedding must be finite float32 of shape ({self.dim},)")
        return e

    def _user_faces(self, appid: str, group: str, user: str) -> list[tuple[str, int, int]]:
        """(token, row, ctime) of the user's faces in the group, by token."""
        prefix = codec.scope("F", appid, group) + f"{user}/".encode()
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
        """Remove a group marked `deleting`, one kind of its data at a time, then its G/ record.
        On a shared store each step holds the group's lock there and first checks the mark is
        still there: several instances may resume one deletion, and a group of the same name
        made after it must not lose its data to a late step."""
        for kind in codec.GROUP_KINDS:
            with self._shared(appid, [group]):
                if not self._marked(appid, group):
                    return
                prefix = codec.scope(kind, appid, group)
                batch = WriteBatch()
                batch.delete_range(prefix, codec.end_of(prefix))
                self._write(batch)
        with self._shared(appid, [group]), self._meta_lock:
            if not self._marked(appid, group):
                return
            batch = WriteBatch()
            batch.delete(codec.group_key(appid, group).encode())
            self._write(batch)
            self._groups.pop((appid, group), None)

    def _marked(self, appid: str, group: str) -> bool:
        """Whether the group's record still says it is being deleted (always, on an embedded
        store: only this process deletes it)."""
        if not self._store.shared:
            return True
        raw = self._get(codec.group_key(appid, group))
        return raw is not None and codec.group_meta(raw).get("deleting") is True

    def wait_deletions(self, timeout: float | None = None) -> bool:
        """Wait for background group deletions; False if some still run after `timeout`."""
        deadline = None if timeout is None else time.monotonic() + timeout
        for t in list(self._deleters):
            t.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if t.is_alive():
                return False
        self._deleters = [t for t in self._deleters if t.is_alive()]
        return True
