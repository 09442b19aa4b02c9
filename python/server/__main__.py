"""``facecore-server`` / ``python -m facecore_server``: start the HTTP service.

Logs go to stderr: the access log one JSON object per request (logger ``facecore.access``), the
rest as plain lines. SIGTERM/SIGINT stop accepting connections and let requests in flight finish
(up to --shutdown-timeout seconds) before the library is closed.
"""

from __future__ import annotations

import logging
import math
import signal
import sys
from collections.abc import Sequence

import uvicorn
from facecore_server.app import create_app
from facecore_server.settings import Settings
from facecore_server.startup import StartupError


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.from_env_and_args(argv)
    level = getattr(logging, settings.log_level.upper())
    logging.basicConfig(
        level=level, stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    access = logging.getLogger("facecore.access")
    access.propagate = False
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(message)s"))
    access.addHandler(handler)
    access.setLevel(logging.INFO)
    # uvicorn shuts down gracefully on SIGTERM, then raises the signal again under the handler
    # that was installed before it started: a no-op one here, so the process exits with 0.
    signal.signal(signal.SIGTERM, lambda *_: None)
    try:
        app = create_app(settings)
    except StartupError as e:
        print(f"facecore-server: {e}", file=sys.stderr)
        return 2
    uvicorn.run(
        app,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        access_log=False,
        timeout_graceful_shutdown=math.ceil(settings.shutdown_timeout),  # uvicorn takes whole s
        log_config=None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
