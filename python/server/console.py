"""The web console under /console/: its static pages (facecore_server/static: HTML, CSS and ES
modules, nothing built) and the few JSON endpoints no v3 route offers (docs/console.md).

The console is a client of the API: every change it makes goes through the v3 routes. What is
here only reads (the appids visible, groups with their face counts, a page of users with their
faces, a registration image, the score thresholds, the models, a metrics snapshot), plus key
management (facecore_server.keyadmin). Each endpoint authenticates through the server's Auth, as
the v3 routes do, and answers in the v3 envelope with facecore.errors' codes.

Every response under /console (pages, endpoints, 404s and 405s) carries the Content-Security-
Policy and its companions (ConsoleApp): scripts and styles from the console's own files only, no
inline script or eval, images from itself, blob: and data: (a dropped photo's preview).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, Protocol

import anyio.to_thread
from facecore.errors import FaceNotFound, UnsupportedMethod
from facecore.pipeline.engine import Engine
from facecore.runtime.backend import OnnxRuntimeBackend
from facecore.runtime.gpu import EngineBackend
from facecore.runtime.gpu import describe as describe_backend
from facecore.score import CALIBRATION, SCORE_AT_FAR
from facecore.store.keys import KeyStore
from facecore.store.library import FaceLibrary, check_appid
from facecore_server import keyadmin
from facecore_server import params as P
from facecore_server.auth import Auth
from facecore_server.bodies import Bodies
from facecore_server.faces import ctime
from facecore_server.metrics import Metrics
from facecore_server.responses import Answers
from facecore_server.settings import Settings
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route, Router
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC = Path(__file__).resolve().parent / "static"
CSP = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "connect-src 'self'; font-src 'self'; manifest-src 'self'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = {
    "Content-Security-Policy": CSP,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cross-Origin-Resource-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}
# Pages are revalidated (an upgraded server's scripts are fetched again); answers are not kept.
STATIC_CACHE, ANSWER_CACHE = "no-cache", "no-store"
IMAGE_CACHE = "private, max-age=86400"  # a token's registration image never changes

Handler = Callable[[Request], Awaitable[Response]]


class Server(Protocol):
    """What the console needs of the server (facecore_server.app.Server)."""

    @property
    def settings(self) -> Settings: ...
    @property
    def answers(self) -> Answers: ...
    @property
    def auth(self) -> Auth: ...
    @property
    def bodies(self) -> Bodies: ...
    @property
    def metrics(self) -> Metrics: ...
    @property
    def library(self) -> FaceLibrary: ...
    @property
    def keys(self) -> KeyStore: ...
    @property
    def engine(self) -> Engine: ...
    @property
    def inner(self) -> OnnxRuntimeBackend | EngineBackend: ...


class ConsoleApp:
    """The console's router with its security headers on every response, and the v3 envelope
    (UnsupportedMethod, 404 or 405) for a path or method it does not serve."""

    def __init__(self, app: ASGIApp, answers: Answers) -> None:
        self.app, self.answers = app, answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        api = scope.get("path", "").startswith("/console/api/")

        async def secured(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in HEADERS.items():
                    headers[name] = value
                if "cache-control" not in headers:
                    headers["Cache-Control"] = ANSWER_CACHE if api else STATIC_CACHE
            await send(message)

        try:
            await self.app(scope, receive, secured)
        except HTTPException as e:
            request = Request(scope, receive)
            why = "no such console path" if e.status_code == 404 else "method not allowed"
            refused = UnsupportedMethod(f"{why}: {request.method} {request.url.path}")
            call = self.answers.call(request, "console")
            await self.answers.error(call, refused, e.status_code)(scope, receive, secured)


def routes(server: Server) -> list[BaseRoute]:
    """/console (redirected to /console/) and everything under it."""
    answers = server.answers

    def endpoint(name: str, work: Callable[[Request, str | None], Any], appid: bool) -> Handler:
        """A read endpoint: its caller authenticated as the v3 routes are (`appid`: the appid
        it acts on, else only the credential's, or None without one), then `work(request,
        appid)` on a worker thread, answered in the envelope."""

        async def handle(request: Request) -> Response:
            call = answers.call(request, f"console/{name}")
            try:
                if appid:
                    call.appid = await server.auth.appid(request)
                else:
                    call.appid = await server.auth.caller(request)
                result = await anyio.to_thread.run_sync(work, request, call.appid)
            except Exception as e:  # noqa: BLE001 (Answers.error logs it; never a 500)
                return answers.error(call, e)
            if isinstance(result, Response):
                return result
            return answers.ok(call, result)

        return handle

    reads = Reads(server)
    api = [
        Route("/api/appids", endpoint("appids", reads.appids, False)),
        Route("/api/groups", endpoint("groups", reads.groups, True)),
        Route("/api/users", endpoint("users", reads.users, True)),
        Route("/api/face/image", endpoint("face/image", reads.face_image, True)),
        Route("/api/thresholds", endpoint("thresholds", reads.thresholds, False)),
        Route("/api/models", endpoint("models", reads.models, False)),
        Route("/api/metrics", endpoint("metrics", reads.metrics, False)),
        *keyadmin.routes(server),
    ]
    pages = StaticFiles(directory=STATIC, html=True)
    console = ConsoleApp(Router([*api, Mount("/", app=pages)]), answers)

    async def slash(_: Request) -> Response:
        return RedirectResponse("/console/", status_code=308, headers=HEADERS)

    return [Route("/console", slash, methods=["GET", "HEAD"]), Mount("/console", app=console)]


class Reads:
    """What the console reads that no v3 route offers. Each method runs on a worker thread:
    (request, appid) -> the envelope's result (or a Response of its own)."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.library = server.library

    def appids(self, _: Request, bound: str | None) -> dict[str, Any]:
        """The appids the caller may see: its credential's; without one (--auth off), every
        appid with a group, and the default appid."""
        if bound is not None:
            return {"appid_list": [bound], "bound": True}
        seen = {name.split("/", 1)[0] for name in self.library.stats()["groups"]}
        if self.server.settings.default_appid:
            seen.add(check_appid(self.server.settings.default_appid))
        return {"appid_list": sorted(seen), "bound": False}

    def groups(self, request: Request, appid: str | None) -> dict[str, Any]:
        """A page of the appid's groups (by name, as group/list), each with its face count."""
        query = request.query_params
        start, length = P.START.read(query), P.LENGTH.read(query)
        prefix = f"{appid}/"
        counts = {
            name[len(prefix) :]: n
            for name, n in self.library.stats()["groups"].items()
            if name.startswith(prefix)
        }
        names = sorted(counts)
        page = [{"group_id": g, "face_num": counts[g]} for g in names[start : start + length]]
        return {"group_num": len(names), "group_list": page}

    def users(self, request: Request, appid: str | None) -> dict[str, Any]:
        """A page of a group's users (as user/list: by user_id, from `start`), each with its
        user_info and faces: what the library page shows, in one request instead of 1 + 2N."""
        assert appid is not None
        query = request.query_params
        group = P.GROUP_ID.read(query)
        start, length = P.START.read(query), P.LENGTH.read(query)
        out = []
        for info, faces in self.library.user_page(appid, group, start, length):
            face_list = [{"face_token": f.face_token, "ctime": ctime(f.ctime)} for f in faces]
            out.append(
                {"user_id": info.user_id, "user_info": info.user_info, "face_list": face_list}
            )
        return {"user_list": out}

    def face_image(self, request: Request, appid: str | None) -> Response:
        """The registration image of a face (the JPEG crop stored by face/add)."""
        assert appid is not None
        query = request.query_params
        group, token = P.GROUP_ID.read(query), P.FACE_TOKEN.read(query)
        image = self.library.face_image(appid, group, token)
        if image is None:
            raise FaceNotFound(f"no registration image for face {token} in group {group!r}")
        return Response(image, media_type="image/jpeg", headers={"Cache-Control": IMAGE_CACHE})

    def thresholds(self, _: Request, __: str | None) -> dict[str, Any]:
        """The scores at the calibrated false accept rates, and the calibration itself."""
        return {
            "score_at_far": {f"{far:g}": score for far, score in sorted(SCORE_AT_FAR.items())},
            "calibration": CALIBRATION,
        }

    def models(self, _: Request, __: str | None) -> dict[str, Any]:
        """The installed models (models/onnx/manifest.json) and what runs them."""
        inner = self.server.inner
        models = []
        for role, entry in sorted(inner.manifest["models"].items()):
            source = entry.get("source") or {}
            models.append(
                {
                    "role": role,
                    "file": entry.get("file"),
                    "sha256": entry.get("sha256"),
                    "licence": entry.get("licence"),
                    "package": source.get("package"),
                    "version": source.get("version"),
                }
            )
        return {
            "models_dir": str(inner.models_dir),
            "backend": describe_backend(inner),
            "liveness": self.server.engine.liveness is not None,
            "model_list": models,
        }

    def metrics(self, _: Request, __: str | None) -> dict[str, Any]:
        """The request counters, latency histograms, queue and refusals when busy, for the charts
        (no appid or group in it: /metrics keeps those)."""
        return self.server.metrics.snapshot()


__all__ = ["CSP", "HEADERS", "STATIC", "ConsoleApp", "Server", "routes"]
