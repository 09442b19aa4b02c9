"""Overload with large bodies: how fast a flood is refused, and what it costs the server's memory,
by body size. 120 clients each send one detect request at once to a 2-worker server (queue 4,
48 MiB of bodies held at once): a small face image, padded with an ignored field to 1 KB (the
baseline) or to 9 MB (the probe's case). Admission happens from the headers, before a body is
read, so the 9 MB flood should be refused about as fast as the 1 KB one; the ratio of their
refusal latencies is what we quote, with the server's resident-memory growth during each flood.

Every answer is checked: 0 with one face found, or 222901; nothing else, no transport failure.
"""

from __future__ import annotations

import base64
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _load
import numpy as np
import pytest

from tests.server.live_server import Client, start_server

LFW_IMAGES = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw" / "images"
PHOTO = LFW_IMAGES / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg"  # one face
CLIENTS = 120
MIB = 1 << 20
SIZES = {"1KB": 1_000, "9MB": 9_000_000}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    flags = ("--workers", "2", "--max-queue", "4", "--max-inflight-bytes", str(48 * MIB))
    s = start_server(tmp_path_factory.mktemp("admission"), *flags, threads=0)
    try:
        yield s
    finally:
        s.stop()


def detect_request(server: Client, size: int) -> _load.Prepared:
    image = base64.b64encode(PHOTO.read_bytes())
    face = json.dumps({"image": image.decode(), "image_type": "BASE64"})
    padding = max(0, size - len(face) - len(', "padding": ""'))
    body = (face[:-1] + ', "padding": "' + "x" * padding + '"}').encode()
    return _load.prepare(server.host, server.port, "/face-api/v3/face/detect?appid=flood", body)


def check(env: dict[str, Any], _: Any) -> dict[str, bool]:
    return {"one face": env["result"]["face_num"] == 1}


@pytest.mark.parametrize("size", list(SIZES))
def test_flood(benchmark: Any, server: Client, size: str) -> None:
    request = detect_request(server, SIZES[size])
    pid = server.proc.pid
    runs: list[tuple[_load.LoadResult, int]] = []

    def flood() -> None:
        base, peak, done = _load.process_status(pid)["VmRSS"], [0], threading.Event()

        def sample() -> None:
            while not done.wait(0.01):
                peak[0] = max(peak[0], _load.process_status(pid)["VmRSS"])

        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            result = _load.load(
                server.host,
                server.port,
                [request],
                CLIENTS,
                total=CLIENTS,
                warmup=0,
                check=check,
                timeout=120,
                server_pid=pid,
            )
        finally:
            done.set()
            sampler.join()
        runs.append((result, max(peak[0], base) - base))

    benchmark.pedantic(flood, rounds=3, iterations=1, warmup_rounds=0)
    busy_ms, growth = [], []
    for result, grown in runs:
        codes = set(result.codes.tolist())
        assert codes <= {0, _load.BUSY} and not result.failures, (codes, result.failures)
        assert result.rate("one face") == 1.0
        busy_ms.append(float(np.median(result.latencies[result.codes == _load.BUSY])) * 1000)
        growth.append(grown / MIB)
    benchmark.extra_info.update(
        {
            "clients": CLIENTS,
            "body_bytes": SIZES[size],
            "busy_p50_ms_per_round": busy_ms,
            "ok_per_round": [r.ok for r, _ in runs],
            "rss_growth_mib_per_round": growth,
        }
    )
