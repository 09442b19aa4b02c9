"""Admission: model-bound work runs on a fixed pool of worker threads behind a bounded queue.

A request waits for a worker at most `max_wait` seconds, and only when fewer than `max_queue`
requests are already waiting; otherwise it is answered 222901 (system busy) at once. Under any load
a request therefore either starts within `max_wait` or is refused quickly, instead of timing out in
a queue that only grows.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from facecore_server.errors import BUSY, ApiError

T = TypeVar("T")


class Admission:
    def __init__(self, workers: int, max_queue: int, max_wait: float) -> None:
        self.workers = workers
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.waiting = 0
        self.running = 0
        self._slots = asyncio.Semaphore(workers)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="facecore")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        if self.waiting >= self.max_queue:
            raise ApiError(BUSY, f"{self.waiting} requests are already queued; try again shortly")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait)
        except TimeoutError:
            raise ApiError(
                BUSY, f"no worker became free within {self.max_wait:g} s; try again shortly"
            ) from None
        finally:
            self.waiting -= 1
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.running -= 1
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
