"""Who each row of a group belongs to, kept in memory by an instance of a shared store so that
identify answers while the database is down (docs/storage.md, "The database down").

Per row: its token (16 bytes) and its user id (bytes in one pool, by offset and length); per user
whose user_info is not empty, that user_info. About 25 bytes a row plus its user id's length,
beside the int8 index's 148 bytes a face; no Python object per row. Rows are numbered per group
and never reused, so the arrays are indexed by row number, up to the group's next row.

Writers (a group's writers, the follower) hold the group's lock; identify reads without one. The
arrays and the pool are replaced together when they grow or are compacted, never resized in
place, so a reader that took `_rows` once reads one consistent set; a row's offset is written
last when it is set and first when it is cleared, so a reader sees a whole entry or none.
"""

from __future__ import annotations

import json
import string
from dataclasses import dataclass

import numpy as np

from facecore.store import codec
from facecore.store.ids import MAX_USER_BYTES
from facecore.store.kv import DELETE_RANGE, PUT, StoreView

_ID_BYTES = np.zeros(256, bool)  # the bytes of an id: [A-Za-z0-9_]
_ID_BYTES[
    np.frombuffer(string.ascii_letters.encode() + string.digits.encode() + b"_", np.uint8)
] = True


@dataclass(frozen=True)
class _Rows:
    token: np.ndarray  # (capacity, 16) uint8
    offset: np.ndarray  # (capacity,) int64 into pool; -1: no such row
    length: np.ndarray  # (capacity,) uint8: the user id's bytes
    pool: np.ndarray  # uint8: the user ids, one after another


def _empty(capacity: int, pool: int) -> _Rows:
    return _Rows(
        np.zeros((capacity, 16), np.uint8),
        np.full(capacity, -1, np.int64),
        np.zeros(capacity, np.uint8),
        np.zeros(pool, np.uint8),
    )


class RowOwners:
    """Row -> (token, user) of one group, and its users' non-empty user_info."""

    def __init__(self) -> None:
        self._rows = _empty(0, 0)
        self._used = 0  # bytes of the pool in use
        self._garbage = 0  # of them, the bytes of cleared rows
        self.infos: dict[str, str] = {}

    # ------------------------------------------------------------------ reads (no lock)

    def owners(self, rows: np.ndarray) -> dict[int, tuple[str, str]]:
        """row -> (token hex, user) for those of `rows` (-1 ignored) this group has."""
        r = self._rows
        out: dict[int, tuple[str, str]] = {}
        for row in np.unique(rows[rows >= 0]).tolist():
            if row >= len(r.offset):
                continue
            off = int(r.offset[row])
            if off < 0:
                continue
            user = r.pool[off : off + int(r.length[row])].tobytes().decode()
            out[row] = (r.token[row].tobytes().hex(), user)
        return out

    def rows_of(self, user: str) -> np.ndarray:
        """The rows of `user`, ascending (int64)."""
        r = self._rows
        name = np.frombuffer(user.encode(), np.uint8)
        cand = np.flatnonzero((r.offset >= 0) & (r.length == len(name)))
        start = r.offset[cand]
        for j, byte in enumerate(name):
            keep = r.pool[start + j] == byte
            cand, start = cand[keep], start[keep]
        return cand.astype(np.int64)

    def info(self, user: str) -> str:
        return self.infos.get(user, "")

    def nbytes(self) -> int:
        """Bytes held in arrays (the user_info dict not counted)."""
        r = self._rows
        return r.token.nbytes + r.offset.nbytes + r.length.nbytes + r.pool.nbytes

    # ------------------------------------------------------------------ writes (group lock held)

    def load(
        self,
        rows: np.ndarray,
        tokens: np.ndarray,
        pool: np.ndarray,
        offsets: np.ndarray,
        lengths: np.ndarray,
        infos: dict[str, str],
    ) -> None:
        """Replace everything: `rows` int64, `tokens` (n, 16) uint8, the users' ids as `pool`
        bytes at `offsets` (int64) of `lengths`; `infos` the non-empty user_info by user."""
        capacity = int(rows.max()) + 1 if len(rows) else 0
        new = _empty(capacity, len(pool))
        new.token[rows] = tokens
        new.length[rows] = lengths
        new.pool[:] = pool
        new.offset[rows] = offsets
        self._rows, self._used, self._garbage = new, len(pool), 0
        self.infos = infos

    def put(self, row: int, token: bytes, user: bytes) -> None:
        if len(user) > MAX_USER_BYTES or len(token) != 16:
            return  # damaged: verify reports it
        self._clear(row)
        r = self._room(row, len(user))
        r.token[row] = np.frombuffer(token, np.uint8)
        r.length[row] = len(user)
        r.pool[self._used : self._used + len(user)] = np.frombuffer(user, np.uint8)
        r.offset[row] = self._used  # last: the entry is whole before a reader can see it
        self._used += len(user)

    def drop(self, row: int) -> None:
        self._clear(row)
        if self._garbage > 65536 and self._garbage > self._used // 2:
            self._compact()

    def clear(self) -> None:
        self._rows, self._used, self._garbage = _empty(0, 0), 0, 0

    def apply(self, op: int, key: bytes, value: bytes, dim: int) -> None:
        """One operation of a write (or of the change log) on this group's R/ or U/ keys."""
        if key.startswith(b"R/"):
            if op == DELETE_RANGE:
                self.clear()
                return
            row = codec.row_of(key.rsplit(b"/", 1)[1])
            if row is None:
                return
            width = 4 * dim
            if op == PUT and len(value) >= width + 16:
                self.put(row, value[width : width + 16], value[width + 16 :])
            else:
                self.drop(row)
        elif key.startswith(b"U/"):
            if op == DELETE_RANGE:
                self.infos = {}
                return
            user = key.rsplit(b"/", 1)[1].decode("utf-8", "replace")
            info = _user_info(value) if op == PUT else ""
            if info:
                self.infos[user] = info
            else:
                self.infos.pop(user, None)

    def _clear(self, row: int) -> None:
        r = self._rows
        if row < len(r.offset) and r.offset[row] >= 0:
            r.offset[row] = -1  # first: no reader sees a half-cleared entry
            self._garbage += int(r.length[row])

    def _room(self, row: int, need: int) -> _Rows:
        """The arrays, grown (a new set, swapped in whole) when `row` or `need` more pool bytes
        do not fit."""
        r = self._rows
        capacity = len(r.offset)
        if row < capacity and self._used + need <= len(r.pool):
            return r
        new_capacity = max(capacity, row + 1, capacity + capacity // 2, 64)
        new_pool = max(len(r.pool), self._used + need, len(r.pool) + len(r.pool) // 2, 1024)
        new = _empty(new_capacity, new_pool)
        new.token[:capacity] = r.token
        new.length[:capacity] = r.length
        new.pool[: self._used] = r.pool[: self._used]
        new.offset[:capacity] = r.offset
        self._rows = new
        return new

    def _compact(self) -> None:
        """A new pool with only the live rows' user ids (cleared rows leave theirs behind)."""
        r = self._rows
        live = np.flatnonzero(r.offset >= 0)
        lengths = r.length[live].astype(np.int64)
        starts = np.cumsum(lengths) - lengths
        total = int(lengths.sum())
        source = np.repeat(r.offset[live] - starts, lengths) + np.arange(total)
        new = _Rows(
            r.token.copy(), np.full(len(r.offset), -1, np.int64), r.length.copy(), r.pool[source]
        )
        new.offset[live] = starts
        self._rows, self._used, self._garbage = new, total, 0


def load_group(
    view: StoreView, appid: str, group: str, dim: int
) -> tuple[np.ndarray, np.ndarray, RowOwners]:
    """A group's rows, embeddings and owners as of `view` (start-up, reload), by one read of its
    rows (StoreView.owned_vectors) and one of its users with a user_info."""
    rows, vecs, tokens, users, lengths = view.owned_vectors(codec.scope("R", appid, group), dim)
    used = np.arange(users.shape[1]) < lengths[:, None]
    ok = (
        (lengths >= 1)
        & (lengths <= min(MAX_USER_BYTES, users.shape[1]))
        & (_ID_BYTES[users] | ~used).all(axis=1)  # 1-128 id bytes
    )
    lengths = lengths[ok]
    infos = {}
    prefix = codec.scope("U", appid, group)
    for key, value in view.user_records(prefix):
        info = _user_info(value)
        if info:
            infos[key[len(prefix) :].decode("utf-8", "replace")] = info
    owners = RowOwners()
    offsets = np.cumsum(lengths) - lengths
    owners.load(rows[ok], tokens[ok], users[ok][used[ok]], offsets, lengths.astype(np.uint8), infos)
    return rows, vecs, owners


def _user_info(value: bytes) -> str:
    """A U/ value's user_info ("" when it is not the user's JSON record: verify reports it)."""
    try:
        meta = json.loads(value)
    except ValueError:
        return ""
    info = meta.get("user_info") if isinstance(meta, dict) else None
    return info if isinstance(info, str) else ""
