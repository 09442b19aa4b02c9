"""The service starts from its command line and answers GET /health on loopback."""

from __future__ import annotations

import subprocess
import sys

import facecore
import httpx
from live_server import Client


def test_health(server: Client) -> None:
    r = httpx.get(server.url + "/health")
    assert r.status_code == 200 and r.headers["content-type"] == "application/json"
    body = r.json()
    assert body["status"] == "ok"
    assert body["version"] == facecore.__version__
    assert body["simd_level"] == facecore.simd_level()
    assert body["threads"] == 1
    assert body["backend"] == {
        "backend": "onnxruntime",
        "runner": "onnxruntime",
        "devices": ["cpu"],
    }
    assert body["store"]["shared"] is False and body["store"]["reachable"] is True
    assert body["store"]["store"].startswith("RocksDB at ")
    assert server.data.is_dir()  # --data was honoured


def test_bad_port_is_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facecore_server", "--port", "0"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0 and "--port must be in 1..65535" in out.stderr


def test_bad_backend_and_gpus_are_refused() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "facecore_server", "--backend", "opencl", "--gpus", "first"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert out.returncode != 0
    assert "--backend must be one of onnxruntime|cuda|tensorrt|torch|auto" in out.stderr
    assert "--gpus must be device numbers like 0,1, got 'first'" in out.stderr
