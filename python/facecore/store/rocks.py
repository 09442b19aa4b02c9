"""The embedded store: one RocksDB database (rocksdict, raw bytes mode) that one process opens and
locks. Writes go through the WAL; with `sync_writes` each batch is also fsynced (an acknowledged
write then survives a power cut, not only a killed process). Its change sequence is RocksDB's
latest sequence number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

from rocksdict import Checkpoint, Options, Rdict, WriteOptions
from rocksdict import WriteBatch as RocksBatch

from facecore.store.kv import DELETE, DELETE_RANGE, PUT, Store, WriteBatch


def iter_prefix(db: Rdict, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
    """The (key, value) pairs of a raw-mode store whose keys start with `prefix`, in key order."""
    for key, value in db.items(from_key=prefix):
        assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
        if not key.startswith(prefix):
            return
        yield key, value


class RocksStore(Store):
    """A RocksDB database at `path` (created when missing)."""

    def __init__(self, path: str | Path, sync_writes: bool = False) -> None:
        self.path = Path(path)
        opts = Options(raw_mode=True)
        opts.create_if_missing(True)
        self.db = Rdict(str(self.path), opts)
        self._wopts = WriteOptions()
        self._wopts.sync = sync_writes  # False: survives a process kill, not a power cut

    def get(self, key: bytes) -> bytes | None:
        value: bytes | None = self.db.get(key)
        return value

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        values: list[bytes | None] = self.db.get(list(keys))  # type: ignore[assignment]
        return values

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        for key, value in self.db.items(from_key=start):
            assert isinstance(key, bytes) and isinstance(value, bytes)  # raw mode
            if end is not None and key >= end:
                return
            yield key, value

    def write(self, batch: WriteBatch) -> int:
        native = RocksBatch(raw_mode=True)
        for op, key, value in batch.ops:
            if op == PUT:
                native.put(key, value)
            elif op == DELETE:
                native.delete(key)
            else:
                assert op == DELETE_RANGE
                native.delete_range(key, value)
        self.db.write(native, self._wopts)
        return self.sequence()

    def sequence(self) -> int:
        return int(self.db.latest_sequence_number())

    def flush(self) -> None:
        self.db.flush()

    def checkpoint(self, path: str | Path) -> None:
        """RocksDB's checkpoint: immutable files hard-linked, the rest copied, no reader or
        writer stopped; one point in the write order."""
        Checkpoint(self.db).create_checkpoint(str(path))

    def close(self) -> None:
        self.db.close()

    def describe(self) -> str:
        return f"RocksDB at {self.path}"
