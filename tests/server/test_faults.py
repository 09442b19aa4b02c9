"""The catch-all that promises no 500: an exception nothing foresaw, injected into a library route
and a model route of an in-process app, is answered HTTP 200 with 222302 "system error", its
error_detail naming the log_id under which the traceback is logged at ERROR, and the server
keeps answering."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
from facecore_server import app as app_module
from facecore_server.app import create_app
from facecore_server.service import FaceService
from facecore_server.settings import Settings

from tests.conftest import MODELS_DIR


class Injected(RuntimeError):
    pass


def boom(self: FaceService, appid: str, body: dict[str, Any]) -> Any:
    raise Injected("a fault injected by the test")


@pytest.mark.parametrize("handler", ["group_list", "detect"])
def test_an_unforeseen_exception_is_222302_not_a_500(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture, handler: str
) -> None:
    route = {"group_list": "group/list", "detect": "face/detect"}[handler]
    ops = tuple(
        dataclasses.replace(op, handler=boom) if op.path == route else op for op in app_module.OPS
    )
    monkeypatch.setattr(app_module, "OPS", ops)  # the route table the app is built from
    app = create_app(Settings(data_dir=tmp_path / "data", models_dir=MODELS_DIR, workers=1))

    async def calls() -> tuple[httpx.Response, httpx.Response]:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as http:
            hit = await http.post(f"/face-api/v3/{route}?appid=a", json={})
            other = await http.post("/face-api/v3/user/list?appid=a", json={"group_id": "g"})
            return hit, other

    with caplog.at_level(logging.ERROR, logger="facecore.server"):
        hit, other = asyncio.run(calls())
    app.state.server.close()
    assert hit.status_code == 200
    env = hit.json()
    assert env["error_code"] == 222302 and env["error_msg"] == "system error", env
    assert env["result"] is None and str(env["log_id"]) in env["error_detail"]
    assert "Injected" in env["error_detail"] and "injected by the test" not in env["error_detail"]
    logged = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(logged) == 1 and str(env["log_id"]) in logged[0].getMessage()
    assert logged[0].exc_info is not None and logged[0].exc_info[0] is Injected
    assert other.status_code == 200 and other.json()["error_code"] == 223100  # still serving
