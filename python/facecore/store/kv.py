"""The storage interface under the face library and the key store: an ordered key-value store of
bytes, with atomic write batches, prefix scans, point and multi-gets, and a change sequence.

Two implementations: `rocks.RocksStore` (the embedded RocksDB one process owns, the default) and
`postgres.PostgresStore` (a PostgreSQL database that several FaceCore instances share). A store
that others write too (`shared`) also gives, for read-check-write steps, locks that hold across
processes (`locked`), and a change log of the writes to the `followed` key prefixes, in sequence
order, which the other instances apply to what they keep in memory (`changes`).
"""

from __future__ import annotations

import contextlib
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from facecore.store import codec
from facecore.store.ids import MAX_USER_BYTES

PUT, DELETE, DELETE_RANGE = 0, 1, 2


class WriteBatch:
    """Puts, deletes and range deletes ([start, end)), applied by `Store.write` in order, all
    or none. A key both deleted and put in one batch ends as the last of the two left it."""

    __slots__ = ("ops",)

    def __init__(self) -> None:
        self.ops: list[tuple[int, bytes, bytes]] = []

    def put(self, key: bytes, value: bytes) -> None:
        self.ops.append((PUT, key, value))

    def delete(self, key: bytes) -> None:
        self.ops.append((DELETE, key, b""))

    def delete_range(self, start: bytes, end: bytes) -> None:
        self.ops.append((DELETE_RANGE, start, end))

    def __len__(self) -> int:
        return len(self.ops)


@dataclass(frozen=True)
class Change:
    """One write of a shared store's change log: its sequence number and its operations on the
    followed keys ((PUT, key, value), (DELETE, key, b""), (DELETE_RANGE, start, end))."""

    seq: int
    ops: list[tuple[int, bytes, bytes]]


class StoreGap(Exception):
    """The change log no longer holds the changes after the asked sequence number (they were
    pruned, or the store was replaced): whoever follows it must load everything again."""


class StoreView(ABC):
    """A read-only view for loading everything at start-up: of one point in the change log
    (`sequence`) where the store can give one (PostgreSQL: a REPEATABLE READ snapshot)."""

    sequence: int

    @abstractmethod
    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]: ...

    def owned_vectors(
        self, prefix: bytes, dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """The well-formed R/ rows under a group's `prefix` (a damaged one is left out: verify
        reports it), and who each belongs to: (row numbers int64, fp32 embeddings (n, dim),
        tokens (n, 16) uint8, user ids (n, width) uint8, each cut or padded with zero bytes to
        the longest one's length of at most 128 bytes, and each user id's own length int64), in
        row order. The caller checks the user ids (owners.load_group)."""
        width = 4 * dim
        rows: list[int] = []
        vecs: list[bytes] = []
        tokens: list[bytes] = []
        users: list[bytes] = []
        for key, value in self.scan(prefix, codec.end_of(prefix)):
            row = codec.row_of(key[len(prefix) :])
            if row is None or len(value) < width + 16:
                continue  # damaged: verify reports it
            rows.append(row)
            vecs.append(value[:width])
            tokens.append(value[width : width + 16])
            users.append(value[width + 16 :])
        longest = max([1] + [len(u) for u in users if len(u) <= MAX_USER_BYTES])
        n = len(rows)
        padded = b"".join(u[:longest].ljust(longest, b"\0") for u in users)
        # The scan is in key order, which is row order: 16 lowercase hex digits sort as numbers.
        return (
            np.array(rows, np.int64),
            np.frombuffer(b"".join(vecs), np.float32).reshape(n, dim),
            np.frombuffer(b"".join(tokens), np.uint8).reshape(n, 16),
            np.frombuffer(padded, np.uint8).reshape(n, longest),
            np.array([len(u) for u in users], np.int64),
        )

    def user_records(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The U/ records under a group's `prefix` (a store may leave out ones it can tell have
        an empty user_info)."""
        return self.scan(prefix, codec.end_of(prefix))


class _PlainView(StoreView):
    def __init__(self, store: Store) -> None:
        self._store, self.sequence = store, store.sequence()

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return self._store.scan(start, end)


class Store(ABC):
    """An ordered byte-key store. Thread-safe."""

    shared = False  # whether other processes write it too (then: locked, changes)

    @property
    def down(self) -> str | None:
        """Why the store cannot be used now, or None (an embedded store: always usable)."""
        return None

    followed: tuple[bytes, ...] = ()  # key prefixes whose writes the change log carries

    @abstractmethod
    def get(self, key: bytes) -> bytes | None: ...

    @abstractmethod
    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]: ...

    @abstractmethod
    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """(key, value) for start <= key < end (None: to the last key), in key order."""

    @abstractmethod
    def write(self, batch: WriteBatch) -> int:
        """Apply the batch atomically; returns the change sequence number after it."""

    @abstractmethod
    def sequence(self) -> int:
        """The change sequence: it increases with every write that changes a followed key (the
        RocksDB store: with every write), and never goes back."""

    def count(self, start: bytes, end: bytes) -> int:
        return sum(1 for _ in self.scan(start, end))

    def locked(self, names: Sequence[str]) -> contextlib.AbstractContextManager[int]:
        """Hold `names` against every process sharing the store, for a read-check-write step run
        in this thread: its reads see the latest writes, and its write commits and releases them.
        Yields the change sequence as of the locking. A store one process owns needs no such
        lock (the caller's own locks suffice): it yields the current sequence."""
        return contextlib.nullcontext(self.sequence())

    def changes(self, after: int, limit: int = 1000) -> list[Change]:
        """The change log after sequence `after`, oldest first (at most `limit`); StoreGap when
        it no longer starts right after `after`. Only a shared store keeps one."""
        raise NotImplementedError(f"{type(self).__name__} keeps no change log")

    def interrupt(self) -> None:
        """Make a running `wait` return now, where the store can."""

    def prune(self, keep: int, older_than_s: float) -> int:
        """Drop change log entries older than `older_than_s` seconds beyond the last `keep`;
        how many went (a store without a log: none)."""
        return 0

    def view(self) -> contextlib.AbstractContextManager[StoreView]:
        """A view for loading everything (`StoreView`); by default the store itself."""
        return contextlib.nullcontext(_PlainView(self))

    def wait(self, timeout: float) -> int | None:
        """Block until a change is announced, or `timeout` seconds pass; the highest sequence
        number announced, or None (a store no other process writes: just the timeout)."""
        time.sleep(timeout)
        return None

    def flush(self) -> None:
        """Make every acknowledged write durable on disk."""

    @abstractmethod
    def checkpoint(self, path: str | Path) -> None:
        """An online, consistent copy of the store in `path` (which must not exist)."""

    @abstractmethod
    def close(self) -> None: ...

    def describe(self) -> str:
        """Where the store is, for messages (never a password)."""
        return type(self).__name__


def shared_url(store: str) -> str | None:
    """What --store (or $FACECORE_STORE) names, for the server and the command line alike: a
    PostgreSQL URL, or None for the embedded RocksDB ("" or "rocksdb"); ValueError otherwise."""
    if store in ("", "rocksdb"):
        return None
    if store.startswith(("postgresql://", "postgres://")):
        return store
    raise ValueError(
        f"--store must be rocksdb or a postgresql://user@host:port/db URL, got {store!r}"
    )


def scan_prefix(store: Store, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs whose keys start with `prefix` (non-empty), in key order."""
    return store.scan(prefix, codec.end_of(prefix))
