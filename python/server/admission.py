"""Admission: every request body is admitted before it is read, and model-bound work runs on a fixed
pool of worker threads behind a bounded queue.

A request is admitted (`enter`) from its headers alone, before one byte of its body is read: it
reserves its declared Content-Length (the body limit when it declares none) from a budget of body
bytes held at once, and, for model routes, a place in the queue. When either is exhausted it is
refused with Busy (system busy) at once, so a flood of large bodies is refused in microseconds and
never read into memory. Admitted model work then waits for a worker at most `max_wait` seconds.
Under any load a request therefore either starts within `max_wait` of its body arriving or is
refused quickly, and the bodies held by the server never exceed `max_bytes`.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
from collections.abc import Callable
from typing import Any, TypeVar

from facecore.errors import Busy

T = TypeVar("T")


class Ticket:
    """One admitted request: its reserved body bytes and, for model work, its queue place. Given
    back exactly once (`close`), whatever happens to the request."""

    def __init__(self, gate: Admission, reserved: int, queued: bool) -> None:
        self._gate, self.reserved, self.queued = gate, reserved, queued
        self._open = True

    def shrink(self, size: int) -> None:
        """The body is read and is `size` bytes: give back what was reserved beyond it."""
        if self._open and size < self.reserved:
            self._gate.bytes -= self.reserved - size
            self.reserved = size

    def leave_queue(self) -> None:
        if self._open and self.queued:
            self._gate.waiting -= 1
            self.queued = False

    def close(self) -> None:
        if self._open:
            self.leave_queue()
            self._gate.bytes -= self.reserved
            self._open = False

    def __enter__(self) -> Ticket:  # noqa: PYI034 (final in practice)
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Admission:
    """Single-threaded use from the event loop (counters without locks), work on the pool."""

    def __init__(self, workers: int, max_queue: int, max_wait: float, max_bytes: int) -> None:
        self.workers = workers
        self.max_queue = max_queue
        self.max_wait = max_wait
        self.max_bytes = max_bytes
        self.waiting = 0  # admitted model requests not yet on a worker
        self.running = 0
        self.bytes = 0  # body bytes reserved by admitted requests
        self._slots = asyncio.Semaphore(workers)
        self._pool = concurrent.futures.ThreadPoolExecutor(workers, thread_name_prefix="facecore")

    def enter(self, size: int, model: bool) -> Ticket:
        """Admit a request whose body is at most `size` bytes, or refuse it with Busy now."""
        if model and self.waiting >= self.max_queue:
            raise Busy(f"{self.waiting} requests are already queued; try again shortly")
        if self.bytes + size > self.max_bytes:
            raise Busy(
                f"{self.bytes} bytes of request bodies are already held (limit {self.max_bytes}); "
                "try again shortly",
            )
        self.bytes += size
        if model:
            self.waiting += 1
        return Ticket(self, size, model)

    async def run(self, ticket: Ticket, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(*args)` on a worker once one is free (at most `max_wait` seconds from now)."""
        try:
            await asyncio.wait_for(self._slots.acquire(), self.max_wait)
        except TimeoutError:
            raise Busy(
                f"no worker became free within {self.max_wait:g} s; try again shortly"
            ) from None
        finally:
            ticket.leave_queue()
        self.running += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, fn, *args)
        finally:
            self.running -= 1
            self._slots.release()

    def close(self) -> None:
        self._pool.shutdown(wait=True)
