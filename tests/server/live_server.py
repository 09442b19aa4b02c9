"""Live servers on loopback, for the HTTP tests and the benches: `start_server(home, *flags)` runs
`python -m facecore_server` in a subprocess on a free port over `home`/data, its output in
`home`/server.log, and returns a `Client` once /health answers. tests/server/conftest.py turns it
into the module-scoped `server` fixture; bench/ imports this module as `tests.server.live_server`.

Helpers: `Client.post(route, body, appid)` returns the parsed envelope; `b64(path)` reads an image.
Licensing: `Vendor` makes keys, a shared secret and licences; `start_authd` runs authd beside them.
"""

from __future__ import annotations

import base64
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from typing_extensions import Self

SHARED = Path(__file__).resolve().parents[2].parent / "shared" / "data"
LFW = SHARED / "lfw" / "images"
MISC = SHARED / "misc"
MANIFEST = Path(__file__).resolve().parents[2] / "models" / "onnx" / "manifest.json"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def b64(path: Path | str) -> str:
    return base64.b64encode(Path(path).read_bytes()).decode()


def photos(name: str) -> list[Path]:
    """The person's LFW images, in name order (the data set is a subset: indices have gaps)."""
    return sorted((LFW / name).glob("*.jpg"))


def lfw(name: str, index: int = 1) -> Path:
    """LFW image `index` (1-based) of person `name`, e.g. lfw("Aaron_Sorkin", 2)."""
    return LFW / name / f"{name}_{index:04d}.jpg"


@dataclass
class Process:
    """A process the tests started, listening on 127.0.0.1:`port`."""

    proc: subprocess.Popen[bytes]
    port: int

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, a SIGKILL after `timeout` seconds; the exit status (0: a clean shutdown)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return int(self.proc.returncode)

    def kill(self) -> None:
        """SIGKILL: a crash."""
        self.proc.kill()
        self.proc.wait()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@dataclass
class Client(Process):
    """A server process on 127.0.0.1, and the v3 calls a test makes to it."""

    data: Path
    log: Path
    appid: str = "test_app"
    host: str = "127.0.0.1"

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

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

    def health(self) -> dict[str, Any]:
        """GET /health (raises httpx.TransportError while the server is not listening)."""
        answer: dict[str, Any] = httpx.get(self.url + "/health", timeout=5).json()
        return answer

    def server_log(self) -> str:
        return self.log.read_text(errors="replace")


def facecore_cli(*args: str) -> subprocess.CompletedProcess[str]:
    """Run the `facecore` command line (python -m facecore.cli)."""
    return subprocess.run(
        [sys.executable, "-m", "facecore.cli", *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
    )


def create_key(data: Path, appid: str, name: str = "") -> dict[str, Any]:
    """`facecore keys create`: {api_key, secret_key, appid, ...}; through the admin socket when a
    server runs on `data`, on the store directly otherwise."""
    out = facecore_cli("keys", "create", "--appid", appid, "--name", name, "--data", str(data))
    assert out.returncode == 0, out.stderr
    key: dict[str, Any] = json.loads(out.stdout)
    return key


def get_token(url: str, key: dict[str, Any]) -> str:
    """An access token for a key, from the server's /oauth/2.0/token."""
    r = httpx.get(
        url + "/oauth/2.0/token",
        params={
            "grant_type": "client_credentials",
            "client_id": key["api_key"],
            "client_secret": key["secret_key"],
        },
        timeout=30,
    )
    assert r.status_code == 200, r.text
    token: str = r.json()["access_token"]
    return token


def aip_face(url: str, api_key: str, secret_key: str) -> Any:
    """Baidu's SDK client (aip.AipFace, PyPI baidu-aip) with its URLs, token and API, pointed at
    `url` instead of Baidu's cloud: they are name-mangled attributes, set here on the instance."""
    from aip import AipFace

    client = AipFace("appid-unused-by-the-sdk", api_key, secret_key)
    client._AipBase__accessTokenUrl = url + "/oauth/2.0/token"
    for name, value in vars(AipFace).items():
        if name.startswith("_AipFace__") and name.endswith("Url"):
            setattr(client, name, value.replace("https://aip.baidubce.com", url))
    return client


def server_command(data: Path, port: int, *flags: str, threads: int = 1) -> list[str]:
    """`python -m facecore_server` on 127.0.0.1:`port` over `data`, `threads` search threads."""
    return [
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
        str(threads),
        *flags,
    ]


def start_server(
    home: Path,
    *flags: str,
    log: Path | None = None,
    env: dict[str, str] | None = None,
    threads: int = 1,
    timeout: float = 120,
) -> Client:
    """A server over `home`/data with extra `flags`, its output in `log` (`home`/server.log by
    default). One search thread keeps a test off the cores its neighbours use; the benches pass
    threads=0 (all cores, the server's default). Returns once /health says ok; raises RuntimeError
    with the log's end when the process exits first or `timeout` seconds pass."""
    port = free_port()
    log = log or home / "server.log"
    proc = _spawn(server_command(home / "data", port, *flags, threads=threads), log, env)
    server = Client(proc, port, home / "data", log)
    _wait_ready(server, lambda: server.health().get("status") == "ok", flags, timeout)
    return server


def _spawn(command: list[str], log: Path, env: dict[str, str] | None) -> subprocess.Popen[bytes]:
    with log.open("wb") as out:
        return subprocess.Popen(
            command, env={**os.environ, **(env or {})}, stdout=out, stderr=subprocess.STDOUT
        )


def _wait_ready(
    process: Client | Authd, ready: Callable[[], bool], flags: tuple[str, ...], timeout: float
) -> None:
    """Until `ready()` (a probe of the process's HTTP port); RuntimeError with the log's end when
    the process exits first or `timeout` seconds pass."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if ready():
                return
        except httpx.TransportError:
            pass
        if process.proc.poll() is not None or time.monotonic() > deadline:
            process.stop()
            tail = process.log.read_text(errors="replace")[-3000:]
            name = type(process).__name__
            raise RuntimeError(f"the {name} process did not start ({' '.join(flags)}):\n{tail}")
        time.sleep(0.1)


# ---------------------------------------------------------------------------- licensing


@dataclass
class Vendor:
    """A vendor's signing key pair and an integrator's shared secret, made in a test's directory
    (never committed), and the licences it signs (facecore_license.document)."""

    home: Path

    def __post_init__(self) -> None:
        from facecore_license import document, protocol

        self.private, self.public = self.home / "vendor.key", self.home / "vendor.pub"
        document.keygen(self.private, self.public)
        self.secret = self.home / "authd.secret"
        self.secret.write_text(protocol.new_secret())

    def issue(self, name: str, **terms: Any) -> Path:
        """A licence file `name` for this machine, recognition, 2 seats, perpetual, covering the
        default models, unless `terms` (document.issue's arguments) say otherwise."""
        from datetime import datetime, timedelta, timezone

        from facecore_license import document, fingerprint

        now = datetime.now(timezone.utc)
        fields: dict[str, Any] = {
            "licensee": "Test Integrator",
            "fingerprint": fingerprint.collect().digest,
            "seats": 2,
            "feature": "recognition",
            "models": document.model_families(json.loads(MANIFEST.read_text())),
            "not_before": now - timedelta(days=1),
            "expiry": None,
            "issued": now,
            **terms,
        }
        path = self.home / name
        path.write_text(json.dumps(document.issue(document.load_private(self.private), **fields)))
        return path

    def server_flags(self, authd: Authd, grace: float = 1800) -> tuple[str, ...]:
        return (
            "--license",
            authd.url,
            "--license-pubkey",
            str(self.public),
            "--license-secret-file",
            str(self.secret),
            "--license-grace",
            str(grace),
        )


@dataclass
class Authd(Process):
    """An authd process (`python -m facecore_license serve`) on 127.0.0.1."""

    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


def authd_command(license: Path, vendor: Vendor, port: int, *flags: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "facecore_license",
        "serve",
        str(license),
        "--pubkey",
        str(vendor.public),
        "--secret-file",
        str(vendor.secret),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        *flags,
    ]


def start_authd(
    vendor: Vendor,
    license: Path,
    *flags: str,
    port: int | None = None,
    log: Path | None = None,
    timeout: float = 60,
) -> Authd:
    """authd serving `license` on `port` (a free one by default; pass the old one to restart
    it), its output in `log`; returns once GET /health answers."""
    port = port or free_port()
    log = log or vendor.home / f"authd-{port}.log"
    authd = Authd(_spawn(authd_command(license, vendor, port, *flags), log, None), port, log)

    def ready() -> bool:
        return httpx.get(authd.url + "/health", timeout=5).status_code == 200

    _wait_ready(authd, ready, flags, timeout)
    return authd
