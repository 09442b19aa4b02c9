"""The face library: appids -> groups -> users -> faces, with one int8 index per group, over a
storage interface (kv.py) whose default is the embedded RocksDB (rocks.py).

Durability and atomicity: every operation is one write batch of the store; the in-memory index of
a group changes only after the batch is written, under the group's write lock, so a search sees
either all of an operation or none of it. Searches take no lock: the index is safe for concurrent
search and add, and everything else a search needs is read from the store.

Memory: per face only the group's int8 index (about d + 20 bytes). Who a row belongs to, its token
and its fp32 embedding live in the store and are fetched for the few candidates of a search. On a
shared store each instance also keeps who each row belongs to (`owners`, about 25 bytes a row plus
the user id), so that identify answers while the database is down.

The rooms: `ids` (id checks), `codec` (keys and record formats, docs/storage.md), `kv` (the
storage interface) and `rocks` (RocksDB), `indexes` (in-memory groups, rebuild, snapshot), `core`
(state, locks, shared helpers, group deletion), `owners` (a shared store's rows' tokens and users
in memory), `crud` (groups, faces, users), `identify`
(search), `tokens` (the detected-face token cache), `verify` (check and repair). This module
assembles them and keeps every name callers import from it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facecore.store.core import STORE_DIR
from facecore.store.crud import Crud, FaceInfo, NewFace, UserInfo
from facecore.store.identify import MAX_GROUPS_PER_SEARCH, Identify, Match
from facecore.store.ids import (
    RESERVED,
    check_appid,
    check_group,
    check_id,
    check_page,
    check_token,
    check_user,
    check_user_info,
    is_id,
)
from facecore.store.indexes import INDEX_DIR
from facecore.store.rocks import iter_prefix
from facecore.store.verify import PROBLEMS, Verify, VerifyReport


class FaceLibrary(Crud, Identify, Verify):
    """A persistent face library under `path` (created when missing). Thread-safe.

    `index_mode` is each group's VectorIndex mode. "exact" (default): int8 scans, about d + 20
    bytes a face, ~10 ms at 1M faces on one core. "auto" adds an HNSW graph to groups from 500k
    faces (faster searches, ~800 more bytes a face, and the add that crosses the threshold builds
    the graph, minutes at 1M). `threads`: cores one search (and an HNSW build) uses; 0 = all.
    `store`: where the records are kept; None is the embedded RocksDB under `path`/rocksdb
    (`sync_writes` fsyncs each of its batches). The index snapshot is kept under `path`."""

    def __enter__(self) -> FaceLibrary:  # noqa: PYI034
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ detected-face tokens

    def token_put(
        self, appid: str, face_token: str, embedding: np.ndarray, attributes: dict[str, Any]
    ) -> None:
        """Remember a face detected for `appid`, for image_type=FACE_TOKEN (evicting the oldest).
        Tokens are per appid: the same image seen by another appid is that appid's own entry."""
        self._tokens.put(appid, face_token, embedding, attributes)

    def token_get(self, appid: str, face_token: str) -> tuple[np.ndarray, dict[str, Any]]:
        return self._tokens.get(appid, face_token)

    # ------------------------------------------------------------------ backup

    def checkpoint(self, path: str | Path) -> None:
        """An online copy of the store in `path` (which must not exist), through RocksDB's
        checkpoint: its immutable files hard-linked, the rest copied, no reader or writer
        stopped. Every write acknowledged before the call is in it; one running meanwhile is in
        it whole or not at all (one write batch per operation). The index snapshot is not: the
        copy rebuilds its indexes when first opened."""
        self._store.checkpoint(path)


__all__ = [
    "INDEX_DIR",
    "MAX_GROUPS_PER_SEARCH",
    "PROBLEMS",
    "RESERVED",
    "STORE_DIR",
    "FaceInfo",
    "FaceLibrary",
    "Match",
    "NewFace",
    "UserInfo",
    "VerifyReport",
    "check_appid",
    "check_group",
    "check_id",
    "check_page",
    "check_token",
    "check_user",
    "check_user_info",
    "is_id",
    "iter_prefix",
]
