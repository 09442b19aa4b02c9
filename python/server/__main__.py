"""``facecore-server`` / ``python -m facecore_server``: start the HTTP service."""

from __future__ import annotations

import sys
from collections.abc import Sequence

import uvicorn
from facecore_server.app import create_app
from facecore_server.settings import Settings


def main(argv: Sequence[str] | None = None) -> int:
    settings = Settings.from_env_and_args(argv)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)
    return 0


if __name__ == "__main__":
    sys.exit(main())
