"""A bounded load generator for a live FaceCore server on loopback.

``run_load`` drives ``concurrency`` closed-loop clients (asyncio, one keep-alive HTTP/1.1
connection each) for a fixed number of requests or a fixed duration. Every request is prepared in
advance as the exact bytes sent (request line, headers, JSON body with the BASE64 image already
encoded), so a client only writes bytes and reads the answer. The client is a minimal HTTP/1.1
exchange over asyncio streams (Content-Length or chunked bodies), much leaner than a general HTTP
client: the generator and the server share the machine's cores, and the generator's own CPU time
is measured (``getrusage``) and reported with the server's (``/proc/<pid>/stat``).

Connections are opened, and ``warmup`` requests a client made, before the clock starts. Recorded
per answered request: latency (write of the request to the last byte of the answer), the
envelope's ``error_code``, and the named checks of an optional ``check(envelope, tag)``.
Transport failures (reset, timeout, not an envelope) are counted by kind and the client reconnects.

Standalone, against any running server::

    python bench/_load.py http://127.0.0.1:8300 face/detect --image a.jpg --image b.jpg \\
        --field age,gender --concurrency 8 --duration 10
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import resource
import sys
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
import orjson

BUSY = 222901  # the envelope's "system busy": the admission queue was full or too slow
# check(envelope, tag) -> {check name: passed}, called for every answer with error_code 0
Check = Callable[[dict[str, Any], Any], dict[str, bool]]


@dataclass(frozen=True)
class Prepared:
    """One request as the bytes to send, and a tag its check receives (e.g. the expected user)."""

    raw: bytes
    tag: Any = None


def prepare(host: str, port: int, path: str, body: Any, tag: Any = None) -> Prepared:
    """POST ``path`` (with its query string) carrying ``body`` as JSON, keep-alive."""
    payload = body if isinstance(body, bytes) else orjson.dumps(body)
    head = (
        f"POST {path} HTTP/1.1\r\nHost: {host}:{port}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    return Prepared(head.encode() + payload, tag)


class TransportError(Exception):
    """The answer was not a complete HTTP response carrying an envelope."""


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    parts: list[bytes] = []
    while True:
        size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
        if size == 0:
            while await reader.readuntil(b"\r\n") != b"\r\n":  # trailers
                pass
            return b"".join(parts)
        parts.append(await reader.readexactly(size))
        await reader.readexactly(2)


async def exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, raw: bytes
) -> tuple[int, bytes, bool]:
    """Send one prepared request; (HTTP status, body, server closes the connection)."""
    writer.write(raw)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    parts = lines[0].split(b" ", 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/1."):
        raise TransportError(f"not an HTTP/1.x status line: {lines[0][:80]!r}")
    status = int(parts[1])
    length, chunked, close = None, False, parts[0] == b"HTTP/1.0"
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        if name == b"content-length":
            length = int(value)
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            close = b"close" in value.lower()
    if chunked:
        body = await _read_chunked(reader)
    elif length is not None:
        body = await reader.readexactly(length)
    else:
        body, close = await reader.read(), True
    return status, body, close


@dataclass
class LoadResult:
    """What one load run saw. Latencies and codes are per answered request, in answer order."""

    concurrency: int
    wall_s: float
    latencies: np.ndarray  # seconds
    codes: np.ndarray  # envelope error_code
    checks: dict[str, list[int]]  # name -> [passed, checked]
    failures: Counter[str]  # transport failures by kind
    client_cpu_s: float  # this process (the generator) during the run
    server_cpu_s: float | None  # the server process during the run, when its pid was given
    bad_examples: list[str] = field(default_factory=list)  # first failed checks / failures

    @property
    def answered(self) -> int:
        return int(self.codes.shape[0])

    @property
    def ok(self) -> int:
        return int(np.count_nonzero(self.codes == 0))

    def rate(self, check: str) -> float | None:
        passed, checked = self.checks.get(check, (0, 0))
        return passed / checked if checked else None

    def summary(self) -> dict[str, Any]:
        """Plain numbers (JSON-ready): throughput, latency percentiles, errors, CPU shares."""
        lat_ms = self.latencies * 1000
        ok_ms = lat_ms[self.codes == 0]
        busy_ms = lat_ms[self.codes == BUSY]

        def pct(x: np.ndarray, q: float) -> float | None:
            return float(np.percentile(x, q)) if x.size else None

        wall = max(self.wall_s, 1e-9)
        return {
            "concurrency": self.concurrency,
            "wall_s": self.wall_s,
            "answered": self.answered,
            "ok": self.ok,
            "qps": self.answered / wall,
            "ok_qps": self.ok / wall,
            "p50_ms": pct(lat_ms, 50),
            "p99_ms": pct(lat_ms, 99),
            "max_ms": float(lat_ms.max()) if lat_ms.size else None,
            "ok_p50_ms": pct(ok_ms, 50),
            "ok_p99_ms": pct(ok_ms, 99),
            "ok_max_ms": float(ok_ms.max()) if ok_ms.size else None,
            "busy_max_ms": float(busy_ms.max()) if busy_ms.size else None,
            "errors": {
                str(c): int(n) for c, n in sorted(Counter(self.codes.tolist()).items()) if c
            },
            "failures": dict(self.failures),
            "checks": {k: {"passed": p, "checked": n} for k, (p, n) in self.checks.items()},
            "client_cpu_s": self.client_cpu_s,
            "client_cpu_cores": self.client_cpu_s / wall,
            "client_cpu_us_per_request": 1e6 * self.client_cpu_s / max(self.answered, 1),
            "server_cpu_s": self.server_cpu_s,
            "server_cpu_cores": None if self.server_cpu_s is None else self.server_cpu_s / wall,
        }


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` (all its threads) so far."""
    fields_ = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields_[11]) + int(fields_[12])) / os.sysconf("SC_CLK_TCK")


def process_status(pid: int) -> dict[str, int]:
    """The numeric fields of /proc/<pid>/status (VmRSS, Threads, ...), memory sizes in bytes."""
    out = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        parts = value.split()
        if parts and parts[0].isdigit():
            out[name] = int(parts[0]) * (1024 if parts[1:] == ["kB"] else 1)
    return out


def _self_cpu_s() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


async def run_load(
    host: str,
    port: int,
    requests: Sequence[Prepared],
    concurrency: int,
    *,
    total: int | None = None,
    duration: float | None = None,
    warmup: int = 1,
    check: Check | None = None,
    timeout: float = 30.0,
    server_pid: int | None = None,
) -> LoadResult:
    """``concurrency`` clients send ``requests`` round-robin until ``total`` requests were sent
    or ``duration`` seconds passed (requests in flight then finish and count)."""
    if (total is None) == (duration is None):
        raise ValueError("give exactly one of total= and duration=")
    if not requests or concurrency < 1:
        raise ValueError("need requests and concurrency >= 1")
    latencies: list[float] = []
    codes: list[int] = []
    checks: dict[str, list[int]] = {}
    failures: Counter[str] = Counter()
    bad: list[str] = []
    sent = 0
    go = asyncio.Event()
    ready = 0
    all_ready = asyncio.Event()
    deadline = 0.0

    def next_request() -> Prepared | None:
        nonlocal sent
        if total is not None and sent >= total:
            return None
        if duration is not None and time.perf_counter() >= deadline:
            return None
        sent += 1
        return requests[(sent - 1) % len(requests)]

    async def client(k: int) -> None:
        nonlocal ready
        conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None

        async def connect() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
            return await asyncio.open_connection(host, port, limit=1 << 20)

        async def one(req: Prepared, record: bool) -> None:
            nonlocal conn
            try:
                if conn is None:
                    conn = await connect()
                t0 = time.perf_counter()
                status, body, close = await asyncio.wait_for(
                    exchange(conn[0], conn[1], req.raw), timeout
                )
                elapsed = time.perf_counter() - t0
            except (TimeoutError, OSError, asyncio.IncompleteReadError, TransportError) as e:
                if record:
                    failures[type(e).__name__] += 1
                    if len(bad) < 5:
                        bad.append(f"transport: {e!r}")
                await _close(conn)
                conn = None
                return
            if close:
                await _close(conn)
                conn = None
            try:
                env = orjson.loads(body)
                code = int(env["error_code"])
            except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
                if record:
                    failures[f"http {status}, not an envelope"] += 1
                return
            if not record:
                return
            latencies.append(elapsed)
            codes.append(code)
            if code == 0 and check is not None:
                try:
                    results = check(env, req.tag)
                except (KeyError, IndexError, TypeError, ValueError) as e:
                    results = {"answer_shape": False}
                    if len(bad) < 5:
                        bad.append(f"check raised {e!r}: {body[:300]!r}")
                for name, passed in results.items():
                    c = checks.setdefault(name, [0, 0])
                    c[0] += bool(passed)
                    c[1] += 1
                    if not passed and len(bad) < 5:
                        bad.append(f"{name}: tag {req.tag!r}: {body[:300]!r}")

        try:
            try:
                conn = await connect()
            except OSError as e:
                failures[type(e).__name__] += 1
            for i in range(warmup):
                await one(requests[(k * warmup + i) % len(requests)], record=False)
            ready += 1
            if ready == concurrency:
                all_ready.set()
            await go.wait()
            while (req := next_request()) is not None:
                await one(req, record=True)
        finally:
            await _close(conn)

    tasks = [asyncio.create_task(client(k)) for k in range(concurrency)]
    waiter = asyncio.create_task(all_ready.wait())
    await asyncio.wait([waiter, *tasks], return_when=asyncio.FIRST_COMPLETED)
    if not all_ready.is_set():  # a client died before the start: surface its error
        waiter.cancel()
        go.set()
        await asyncio.gather(*tasks)
        raise RuntimeError("a client ended before the run started")
    cpu0, srv0 = _self_cpu_s(), process_cpu_s(server_pid) if server_pid else None
    t0 = time.perf_counter()
    deadline = t0 + (duration or 0.0)
    go.set()
    await asyncio.gather(*tasks)
    wall = time.perf_counter() - t0
    cpu1, srv1 = _self_cpu_s(), process_cpu_s(server_pid) if server_pid else None
    return LoadResult(
        concurrency=concurrency,
        wall_s=wall,
        latencies=np.asarray(latencies, dtype=np.float64),
        codes=np.asarray(codes, dtype=np.int64),
        checks=checks,
        failures=failures,
        client_cpu_s=cpu1 - cpu0,
        server_cpu_s=None if srv0 is None or srv1 is None else srv1 - srv0,
        bad_examples=bad,
    )


async def _close(conn: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None) -> None:
    if conn is None:
        return
    conn[1].close()
    try:
        await conn[1].wait_closed()
    except OSError:
        pass


def load(
    host: str, port: int, requests: Sequence[Prepared], concurrency: int, **kw: Any
) -> LoadResult:
    """``run_load`` in a fresh event loop (synchronous callers: pytest, the CLI)."""
    return asyncio.run(run_load(host, port, requests, concurrency, **kw))


# --------------------------------------------------------------------------- a table


def fmt(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:,.{digits}f}"


TABLE_HEAD = (
    "| scenario | server | c | answered | ok QPS | p50 (ms) | p99 (ms) | max (ms) | errors "
    "| checks | generator CPU | server CPU | vs in-process |"
)


def table_row(scenario: str, server: str, s: dict[str, Any], ratio: float | None = None) -> str:
    """One markdown row from ``LoadResult.summary()``."""
    errors = ", ".join(f"{c}: {n}" for c, n in s["errors"].items())
    errors += "".join(f", {k}: {n}" for k, n in s["failures"].items())
    checks = ", ".join(f"{k} {v['passed']}/{v['checked']}" for k, v in s["checks"].items())
    server_cpu = "-" if s["server_cpu_cores"] is None else f"{s['server_cpu_cores']:.2f} cores"
    return (
        f"| {scenario} | {server} | {s['concurrency']} | {s['answered']} | {fmt(s['ok_qps'])} "
        f"| {fmt(s['p50_ms'])} | {fmt(s['p99_ms'])} | {fmt(s['max_ms'])} | {errors or '-'} "
        f"| {checks or '-'} | {s['client_cpu_cores']:.2f} cores "
        f"({s['client_cpu_us_per_request']:.0f} us/req) | {server_cpu} "
        f"| {'-' if ratio is None else f'{ratio:.2f}x'} |"
    )


def table(rows: Sequence[str]) -> str:
    sep = "|" + "---|" * (TABLE_HEAD.count("|") - 1)
    return "\n".join([TABLE_HEAD, sep, *rows])


# --------------------------------------------------------------------------- CLI


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description="closed-loop load on a running FaceCore server")
    p.add_argument("url", help="e.g. http://127.0.0.1:8300 (loopback only)")
    p.add_argument("route", help="face/detect, face/match or face/identify")
    p.add_argument("--image", action="append", required=True, type=Path, help="repeatable")
    p.add_argument("--appid", default="bench")
    p.add_argument("--field", default="", help="face_field for face/detect")
    p.add_argument("--group", default="", help="group_id_list for face/identify")
    p.add_argument("--concurrency", "-c", type=int, default=8)
    p.add_argument("--duration", "-d", type=float, default=None)
    p.add_argument("--requests", "-n", type=int, default=None)
    a = p.parse_args(argv)
    u = urlsplit(a.url)
    host, port = u.hostname or "127.0.0.1", u.port or 80
    if host not in ("127.0.0.1", "localhost", "::1"):
        p.error("the load generator only targets a server on loopback")
    images = [base64.b64encode(f.read_bytes()).decode() for f in a.image]
    path = f"/face-api/v3/{a.route}?appid={a.appid}"
    bodies: list[Any]
    if a.route == "face/match":
        bodies = [
            [{"image": x, "image_type": "BASE64"}, {"image": y, "image_type": "BASE64"}]
            for x, y in zip(images, images[1:] + images[:1])
        ]
    else:
        bodies = [{"image": x, "image_type": "BASE64"} for x in images]
        for b in bodies:
            if a.field:
                b["face_field"] = a.field
            if a.group:
                b["group_id_list"] = a.group
    reqs = [prepare(host, port, path, b) for b in bodies]
    if a.duration is None and a.requests is None:
        a.duration = 10.0
    r = load(host, port, reqs, a.concurrency, total=a.requests, duration=a.duration)
    print(table([table_row(a.route, a.url, r.summary())]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
