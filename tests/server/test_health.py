"""The service starts from its command line and answers GET /health on loopback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import facecore
import httpx
import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Path]]:
    port = free_port()
    data = tmp_path_factory.mktemp("data") / "store"
    env = dict(os.environ, FACECORE_PORT=str(port), FACECORE_DATA=str(data))
    proc = subprocess.Popen(
        [sys.executable, "-m", "facecore_server", "--host", "127.0.0.1", "--threads", "1", "--log-level", "warning"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(url + "/health", timeout=1)
                break
            except httpx.TransportError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    out = proc.stdout.read().decode() if proc.stdout else ""
                    pytest.fail(f"server did not start: {out}")
                time.sleep(0.1)
        yield url, data
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stdout:
            proc.stdout.close()


def test_health(server: tuple[str, Path]) -> None:
    url, data = server
    r = httpx.get(url + "/health")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert body["version"] == facecore.__version__
    assert body["simd_level"] == facecore.simd_level()
    assert body["threads"] == 1
    assert data.is_dir()  # FACECORE_DATA was honoured


def test_unknown_path_and_wrong_method(server: tuple[str, Path]) -> None:
    url, _ = server
    assert httpx.get(url + "/nope").status_code == 404
    assert httpx.post(url + "/health").status_code == 405


def test_bad_port_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facecore_server", "--port", "0"], capture_output=True, text=True, timeout=30, check=False
    )
    assert out.returncode != 0 and "--port must be in 1..65535" in out.stderr
