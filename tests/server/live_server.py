"""Live servers on loopback for the HTTP tests: `start_server(...)` runs `python -m facecore_server`
in a subprocess with its own data directory and port (tests/server/conftest.py turns it into the
module-scoped `server` fixture).

Helpers: `Client.post(route, body, appid)` returns the parsed envelope; `b64(path)` reads an image.
"""

from __future__ import annotations

import base64
import os
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
MISC = SHARED / "misc"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(path: Path | str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def lfw(name: str, index: int = 1) -> Path:
    """LFW image `index` (1-based) of person `name`, e.g. lfw("Aaron_Sorkin", 2)."""
    return LFW / name / f"{name}_{index:04d}.jpg"


@dataclass
class Client:
    url: str
    data: Path
    proc: subprocess.Popen[bytes]
    log: Path
    appid: str = "test_app"

    def post(self, route: str, body: Any, appid: str | None = None, **kw: Any) -> dict[str, Any]:
        """POST /face-api/v3/{route}?appid=...; returns the envelope (asserting HTTP 200)."""
        r = httpx.post(
            f"{self.url}/face-api/v3/{route}",
            params={"appid": appid if appid is not None else self.appid},
            json=body,
            timeout=kw.pop("timeout", 60),
            **kw,
        )
        assert r.status_code == 200, r.text
        envelope: dict[str, Any] = r.json()
        return envelope

    def ok(self, route: str, body: Any, appid: str | None = None) -> Any:
        """POST and return `result`, asserting error_code 0."""
        env = self.post(route, body, appid)
        assert env["error_code"] == 0, env
        return env["result"]

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")


def start_server(
    tmp: Path, *args: str, env: dict[str, str] | None = None, timeout: float = 60
) -> Client:
    port = free_port()
    data = tmp / "data"
    log = tmp / "server.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "facecore_server",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--data",
                str(data),
                "--threads",
                "1",
                *args,
            ],
            env=dict(os.environ, **(env or {})),
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            stop_server(proc)
            pytest.fail(f"server did not start:\n{log.read_text(errors='replace')}")
        time.sleep(0.1)
    return Client(url, data, proc, log)


def stop_server(proc: subprocess.Popen[bytes], timeout: float = 30) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return int(proc.returncode)
