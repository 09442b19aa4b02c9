"""The Starlette application. Handlers stay thin; blocking work never runs on the event loop."""

from __future__ import annotations

from typing import Any

import facecore
import orjson
from facecore_server.settings import Settings
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    settings.data_dir.mkdir(parents=True, exist_ok=True)

    async def health(_: Request) -> ORJSONResponse:
        threads = settings.threads or facecore.hardware_threads()
        return ORJSONResponse(
            {
                "status": "ok",
                "version": facecore.__version__,
                "simd_level": facecore.simd_level(),
                "simd_levels_available": facecore.available_simd_levels(),
                "threads": threads,
                "data_dir": str(settings.data_dir),
            }
        )

    app = Starlette(routes=[Route("/health", health, methods=["GET"])])
    app.state.settings = settings
    return app
