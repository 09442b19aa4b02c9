"""The detected-face token cache: what `detect` saw, so that a later request can name the face by
its face_token (image_type=FACE_TOKEN) instead of sending the image again.

    D/{appid}/{token}             ts int64 (ns), embedding d x f32, attributes JSON
    E/{ts:016x}/{appid}/{token}   empty: the tokens in age order, for eviction
Tokens are per appid. Each put evicts the oldest entries beyond `capacity` and those older than
`seconds`, oldest first: the cost is proportional to what is evicted. On a shared store every
instance reads and evicts the same entries; the capacity is then kept approximately (each
instance counts its own puts between recounts of the whole, every minute).

A shared store that is down: a put is kept in this instance's memory instead (the newest
PENDING_MAX of them), where `get` finds it, and written to the store once it answers again (by
the next put, or by the library's follower), so a face_token answered during an outage names its
face on this instance at once and on every instance afterwards.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import numpy as np

from facecore.errors import FaceTokenNotFound, StoreUnavailable
from facecore.store import codec
from facecore.store.ids import check_appid, check_token
from facecore.store.kv import Store, WriteBatch, scan_prefix

PENDING_MAX = 10_000  # tokens kept in memory while a shared store is down (the newest)


class DetectedTokens:
    """Thread-safe. `check` validates an embedding (the library's dim and dtype)."""

    def __init__(
        self,
        store: Store,
        dim: int,
        capacity: int,
        seconds: int,
        check: Callable[[object], np.ndarray],
        write: Callable[[WriteBatch], int],
    ) -> None:
        self._store, self.dim, self.capacity, self.seconds = store, dim, capacity, seconds
        self._check, self._write = check, write
        self.lock = threading.Lock()
        self.count = self.stored()
        self._pending: OrderedDict[str, bytes] = OrderedDict()  # "appid/token" -> D/ value

    def put(
        self, appid: str, face_token: str, embedding: np.ndarray, attributes: dict[str, Any]
    ) -> None:
        key = f"{check_appid(appid)}/{check_token(face_token)}"
        emb = self._check(embedding)
        value = codec.TS.pack(time.time_ns()) + emb.tobytes() + json.dumps(attributes).encode()
        with self.lock:
            try:
                self._flush()
                self._put(key, value)
                self._evict()
            except StoreUnavailable:
                if not self._store.shared:
                    raise
                self._pending[key] = value
                self._pending.move_to_end(key)
                while len(self._pending) > PENDING_MAX:
                    self._pending.popitem(last=False)

    def flush(self) -> None:
        """Write the tokens kept in memory while the store was down (if it answers now)."""
        if not self._pending:
            return
        with self.lock, contextlib.suppress(StoreUnavailable):
            self._flush()

    def _flush(self) -> None:
        while self._pending:
            key, value = next(iter(self._pending.items()))
            self._put(key, value)
            del self._pending[key]

    def _put(self, key: str, value: bytes) -> None:
        now = codec.TS.unpack_from(value)[0]
        # A shared store: the token's lock there, so that two instances storing one token
        # leave one E/ entry for it (an embedded store: self.lock is enough).
        with self._store.locked([f"D/{key}"]):
            batch = WriteBatch()
            old = self._store.get(f"D/{key}".encode())
            if old is not None:
                batch.delete(f"E/{codec.TS.unpack_from(old)[0]:016x}/{key}".encode())
            else:
                self.count += 1
            batch.put(f"D/{key}".encode(), value)
            batch.put(f"E/{now:016x}/{key}".encode(), b"")
            self._write(batch)

    def recount(self) -> None:
        """Count the tokens again: on a shared store the other instances add and evict too, so
        `count` (this instance's view, which eviction goes by) drifts between recounts."""
        with self.lock:
            self.count = self.stored()

    def stored(self) -> int:
        """The tokens in the store (its E/ eviction entries), every instance's."""
        return self._store.count(b"E/", b"E0")

    def _evict(self) -> None:
        """Drop the oldest tokens beyond capacity, and any older than `seconds` (oldest first)."""
        horizon = time.time_ns() - self.seconds * 1_000_000_000
        excess = self.count - self.capacity
        batch = WriteBatch()
        dropped = 0
        for key, _ in scan_prefix(self._store, b"E/"):
            if dropped >= excess and int(key[2:18], 16) >= horizon:
                break
            batch.delete(key)
            batch.delete(b"D/" + key[19:])
            dropped += 1
        if dropped:
            self._write(batch)
            self.count -= dropped

    def get(self, appid: str, face_token: str) -> tuple[np.ndarray, dict[str, Any]]:
        appid, token = check_appid(appid), check_token(face_token)
        value = self._pending.get(f"{appid}/{token}")
        if value is None:
            value = self._store.get(f"D/{appid}/{token}".encode())
        horizon = time.time_ns() - self.seconds * 1_000_000_000
        if value is None or codec.TS.unpack_from(value)[0] < horizon:
            raise FaceTokenNotFound(f"face_token {token} does not exist or has expired")
        emb = np.frombuffer(value, np.float32, self.dim, 8).copy()
        attrs: dict[str, Any] = json.loads(value[8 + 4 * self.dim :])
        return emb, attrs
