"""Server settings: defaults < environment (FACECORE_*) < command-line flags. Read once at start."""

from __future__ import annotations

import argparse
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Settings:
    host: str = "0.0.0.0"
    port: int = 8300
    data_dir: Path = Path("./data")
    threads: int = 0  # search threads; 0 = all cores
    log_level: str = "info"

    @classmethod
    def from_env_and_args(cls, argv: Sequence[str] | None = None) -> Settings:
        env = os.environ
        p = argparse.ArgumentParser(prog="facecore-server", description="FaceCore face recognition server")
        p.add_argument("--host", default=env.get("FACECORE_HOST", cls.host))
        p.add_argument("--port", type=int, default=int(env.get("FACECORE_PORT", cls.port)))
        p.add_argument("--data", dest="data_dir", type=Path, default=Path(env.get("FACECORE_DATA", str(cls.data_dir))))
        p.add_argument("--threads", type=int, default=int(env.get("FACECORE_THREADS", cls.threads)))
        p.add_argument("--log-level", default=env.get("FACECORE_LOG_LEVEL", cls.log_level),
                       choices=["critical", "error", "warning", "info", "debug"])
        a = p.parse_args(argv)
        if not 0 < a.port < 65536:
            p.error(f"--port must be in 1..65535, got {a.port}")
        if a.threads < 0:
            p.error(f"--threads must be >= 0, got {a.threads}")
        return cls(host=a.host, port=a.port, data_dir=a.data_dir, threads=a.threads, log_level=a.log_level)
