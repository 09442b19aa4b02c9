"""Dynamic batching across threads: concurrent calls of one model share one backend run.

`BatchingBackend` wraps any Backend. The first thread to call a model with a given input shape
becomes the batch's leader; threads that call the same model with the same per-item shape while the
batch is open join it. The leader waits up to `max_wait` seconds for joiners, but only while
`peers()` says other requests are in flight (a lone request never waits), then runs the
concatenated inputs once and hands every joiner its slice of the outputs. A batch closes when it
holds `max_batch` items. Every model of FaceCore takes a dynamic batch as its first axis and
returns batch-major outputs; a model that does not is refused at run time.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

from facecore.errors import InvalidArgument
from facecore.runtime.backend import Backend


class _Batch:
    __slots__ = ("closed", "done", "error", "full", "items", "outputs", "size")

    def __init__(self, feeds: dict[str, np.ndarray], n: int) -> None:
        self.items = [feeds]
        self.size = n
        self.closed = False
        self.full = threading.Event()
        self.done = threading.Event()
        self.outputs: list[list[np.ndarray]] = []
        self.error: BaseException | None = None


def _count(feeds: dict[str, np.ndarray]) -> int:
    return int(next(iter(feeds.values())).shape[0])


class BatchingBackend:
    def __init__(
        self,
        inner: Backend,
        max_batch: int = 8,
        max_wait: float = 0.002,
        peers: Callable[[], int] | None = None,
        on_run: Callable[[str, int, int], None] | None = None,
    ) -> None:
        """`peers()`: requests now in flight (waiting only pays when > 1); `on_run(role, calls,
        items)` observes every backend run (for metrics)."""
        if max_batch < 1 or max_wait < 0:
            raise InvalidArgument("max_batch must be >= 1 and max_wait >= 0")
        self.inner = inner
        self.max_batch = max_batch
        self.max_wait = max_wait
        self.peers = peers or (lambda: 2)
        self.on_run = on_run
        self._open: dict[tuple[object, ...], _Batch] = {}
        self._lock = threading.Lock()

    def has(self, role: str) -> bool:
        return self.inner.has(role)

    def path(self, role: str) -> Path:
        return self.inner.path(role)

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        n = _count(feeds)
        if self.max_batch == 1 or n >= self.max_batch:
            return self._run_alone(role, feeds, n)
        key = (role, *((k, v.shape[1:], v.dtype.str) for k, v in sorted(feeds.items())))
        with self._lock:
            batch = self._open.get(key)
            if batch is not None and batch.size + n <= self.max_batch:
                index = len(batch.items)
                batch.items.append(feeds)
                batch.size += n
                if batch.size >= self.max_batch:
                    batch.full.set()
                leader = False
            else:
                batch = self._open[key] = _Batch(feeds, n)
                leader = True
        if not leader:
            batch.done.wait()
            if batch.error is not None:
                raise batch.error
            return batch.outputs[index]

        if self.max_wait > 0 and self.peers() > 1:
            batch.full.wait(self.max_wait)
        with self._lock:
            batch.closed = True
            if self._open.get(key) is batch:
                del self._open[key]
        try:
            batch.outputs = self._run_merged(role, batch)
        except BaseException as e:
            batch.error = e
            raise
        finally:
            batch.done.set()
        return batch.outputs[0]

    def _run_alone(self, role: str, feeds: dict[str, np.ndarray], n: int) -> list[np.ndarray]:
        out = self.inner.run(role, feeds)
        if self.on_run is not None:
            self.on_run(role, 1, n)
        return out

    def _run_merged(self, role: str, batch: _Batch) -> list[list[np.ndarray]]:
        if len(batch.items) == 1:
            return [self._run_alone(role, batch.items[0], batch.size)]
        merged = {k: np.concatenate([f[k] for f in batch.items]) for k in batch.items[0]}
        outs = self.inner.run(role, merged)
        if self.on_run is not None:
            self.on_run(role, len(batch.items), batch.size)
        if any(o.shape[0] != batch.size for o in outs):
            raise InvalidArgument(f"model {role!r} does not return batch-major outputs")
        bounds = np.cumsum([0] + [_count(f) for f in batch.items])
        return [[o[a:b] for o in outs] for a, b in itertools.pairwise(bounds)]
