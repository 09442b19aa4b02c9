"""Server settings: defaults < environment (FACECORE_*) < command-line flags. Read once at start."""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from facecore.errors import FaceCoreError
from facecore.pipeline.image import DEFAULT_MAX_PIXELS
from facecore.runtime.gpu import BACKENDS
from facecore.store.ids import check_appid
from facecore.store.kv import shared_url


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8300
    data_dir: Path = Path("./data")
    models_dir: Path | None = None  # None: $FACECORE_MODELS or ./models/onnx
    default_appid: str | None = None  # set: requests without ?appid= use it (single tenant)
    threads: int = 0  # search threads; 0 = all cores
    model_threads: int = 1  # ONNX Runtime intra-op threads per model call
    # onnxruntime | cuda | tensorrt | torch | auto (the GPU when there is one; docs/gpu.md)
    backend: str = "onnxruntime"
    gpus: str = ""  # CUDA devices for cuda/tensorrt, "0,1"; empty: all of them
    workers: int = 0  # requests computed at once; 0 = one per core
    max_queue: int = 64  # requests waiting for a worker before Busy (system busy)
    queue_timeout: float = 1.0  # seconds a request may wait for a worker before Busy
    # Dynamic batching: items per model run. Off (1) on CPUs: a merged run takes one core, where
    # the separate calls would have used all of them (bench/test_server.py measures both).
    batch_max: int = 1
    batch_wait_ms: float = 0.0  # how long a batch waits for more (only under concurrency)
    max_body: int = 10 * 1024 * 1024
    # Request bodies held at once, counted from their Content-Length before they are read; past it
    # a request is answered Busy at once (docs/api.md, Memory).
    max_inflight_bytes: int = 128 * 1024 * 1024
    body_timeout: float = 30.0  # seconds a request body may take to arrive
    max_pixels: int = DEFAULT_MAX_PIXELS
    url_hosts: str = ""  # comma-separated hosts image_type=URL may fetch from; empty: URL is off
    url_timeout: float = 5.0
    min_face: int = 40
    token_days: int = 30
    token_capacity: int = 1_000_000
    sync_writes: bool = False
    # Where the library and the keys are kept: "" (or "rocksdb"), the embedded RocksDB under
    # --data; "postgresql://user[:password]@host:port/db", one database several instances share
    # (docs/deploy.md). --data then keeps only this instance's admin socket.
    store: str = ""
    log_level: str = "info"
    access_log: bool = True
    shutdown_timeout: float = 30.0
    # Authentication (docs/auth.md): "off" is the spec's private behaviour (appid from the query,
    # no credentials needed); "required" refuses face routes without a valid token or key.
    auth: str = "off"
    access_token_seconds: int = 30 * 86400
    auth_address_failures: int = (
        20  # failed attempts per client address per window, then RateLimited
    )
    auth_key_failures: int = 100  # failed attempts per API key per window, then RateLimited
    auth_window: float = 60.0
    metrics_token_file: Path | None = None  # set: /metrics needs "Authorization: Bearer <file>"
    # Licensing (docs/license.md): set, the server leases a seat from authd at this URL and refuses
    # to start without one; the vendor's public key and the secret shared with authd go with it.
    license: str | None = None
    license_pubkey: Path | None = None
    license_secret_file: Path | None = None
    license_grace: float = 1800.0  # seconds model routes are served while authd is away

    @classmethod
    def from_env_and_args(cls, argv: Sequence[str] | None = None) -> Settings:
        """Every field is a flag (--data-dir or --data, --log-level, ...) and an environment
        variable FACECORE_<FIELD> (FACECORE_DATA, FACECORE_MODELS: the short names also work)."""
        env = os.environ
        aliases = {"data_dir": "DATA", "models_dir": "MODELS"}
        p = argparse.ArgumentParser(prog="facecore-server", description="FaceCore face server")
        for f in fields(cls):
            flag = "--" + f.name.replace("_", "-")
            names = [flag] + (["--" + aliases[f.name].lower()] if f.name in aliases else [])
            var = "FACECORE_" + aliases.get(f.name, f.name.upper())
            raw = env.get(var, env.get("FACECORE_" + f.name.upper()))
            kind = _kind(f.name)
            parse = _bool if kind is bool else kind
            try:
                default = parse(raw) if raw else f.default
            except (ValueError, argparse.ArgumentTypeError) as e:
                used = var if var in env else "FACECORE_" + f.name.upper()
                p.error(f"environment variable {used}={raw!r} is not a valid {flag} value ({e})")
            p.add_argument(
                *names,
                dest=f.name,
                type=parse,
                default=default,
                metavar="on|off" if kind is bool else None,
                help=f"env {var}",
            )
        a = vars(p.parse_args(argv))
        s = cls(**a)
        problems = s.problems()
        if problems:
            p.error("; ".join(problems))
        return s

    def problems(self) -> list[str]:
        out = []
        if not 0 < self.port < 65536:
            out.append(f"--port must be in 1..65535, got {self.port}")
        for name in ("threads", "workers"):
            if getattr(self, name) < 0:
                out.append(f"--{name} must be >= 0")
        for name in (
            "model_threads",
            "max_queue",
            "batch_max",
            "max_body",
            "max_inflight_bytes",
            "max_pixels",
            "min_face",
            "token_days",
            "token_capacity",
            "access_token_seconds",
            "auth_address_failures",
            "auth_key_failures",
        ):
            if getattr(self, name) < 1:
                out.append(f"--{name.replace('_', '-')} must be >= 1")
        if self.max_inflight_bytes < self.max_body:
            out.append("--max-inflight-bytes must be at least --max-body (one body must fit)")
        if self.body_timeout <= 0:
            out.append("--body-timeout must be > 0")
        if self.queue_timeout <= 0 or self.batch_wait_ms < 0 or self.shutdown_timeout < 0:
            out.append("--queue-timeout must be > 0, --batch-wait-ms and --shutdown-timeout >= 0")
        if self.default_appid is not None:
            try:
                check_appid(self.default_appid, "--default-appid")  # as every request's appid
            except FaceCoreError as e:
                out.append(str(e))
        if self.backend not in BACKENDS:
            out.append(f"--backend must be one of {'|'.join(BACKENDS)}, got {self.backend!r}")
        if not re.fullmatch(r"(\d+(,\d+)*)?", self.gpus.replace(" ", "")):
            out.append(f"--gpus must be device numbers like 0,1, got {self.gpus!r}")
        if self.auth not in ("off", "required"):
            out.append(f"--auth must be off or required, got {self.auth!r}")
        if self.auth_window <= 0:
            out.append("--auth-window must be > 0")
        if self.metrics_token_file is not None and not self.metrics_token_file.is_file():
            out.append(f"--metrics-token-file {self.metrics_token_file} is not a readable file")
        out.extend(self._license_problems())
        try:
            shared_url(self.store)
        except ValueError as e:
            out.append(str(e))
        if self.url_timeout <= 0:
            out.append("--url-timeout must be > 0")
        if self.log_level not in ("critical", "error", "warning", "info", "debug"):
            out.append(
                f"--log-level must be critical|error|warning|info|debug, got {self.log_level}"
            )
        return out

    def _license_problems(self) -> list[str]:
        files = {
            "--license-pubkey": self.license_pubkey,
            "--license-secret-file": self.license_secret_file,
        }
        if self.license is None:
            given = [flag for flag, path in files.items() if path is not None]
            return [f"{', '.join(given)} without --license"] if given else []
        from facecore_license.client import parse_url

        out = []
        try:
            parse_url(self.license)
        except ValueError as e:
            out.append(f"--license: {e}")
        for flag, path in files.items():
            if path is None or not path.is_file():
                out.append(f"--license needs {flag}, a readable file (got {path})")
        if self.license_grace < 0:
            out.append("--license-grace must be >= 0")
        return out


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    if value.lower() in ("1", "on", "true", "yes"):
        return True
    if value.lower() in ("0", "off", "false", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def _kind(name: str) -> Any:
    default = Settings.__dataclass_fields__[name].default
    if name in (
        "data_dir",
        "models_dir",
        "metrics_token_file",
        "license_pubkey",
        "license_secret_file",
    ):
        return Path
    if name in ("default_appid", "license"):
        return str
    return type(default)
