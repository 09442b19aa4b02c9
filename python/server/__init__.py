"""FaceCore's HTTP service (import name ``facecore_server``): Starlette + uvicorn + orjson.

Thin over :mod:`facecore`: the v3 routes of Baidu's private deployment (see routes.py), /health,
/metrics, /openapi.json.
"""

from __future__ import annotations

from facecore_server.app import create_app
from facecore_server.settings import Settings

__all__ = ["Settings", "create_app"]
