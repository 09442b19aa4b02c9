"""FaceCore's HTTP service (import name ``facecore_server``): Starlette + uvicorn + orjson.

Thin over :mod:`facecore`. The v3 routes arrive with later issues; for now it serves ``/health``.
"""

from __future__ import annotations

from facecore_server.app import create_app
from facecore_server.settings import Settings

__all__ = ["Settings", "create_app"]
