"""The assembly: a Server built from the settings (models, library, keys, admission, auth, the
service), and the Starlette app with its route table.

Every v3 route is one entry of routes.OPS, whose handler (a FaceService method) runs on a worker:
model-bound routes through the admission gate (bounded queue, Busy when full), library routes on
a plain worker thread. Nothing blocking runs on the event loop. Unknown paths (404) and methods
(405) are answered in the v3 envelope, as UnsupportedMethod.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import anyio.to_thread
import facecore
from facecore.errors import UnsupportedMethod
from facecore.pipeline.engine import Engine
from facecore.runtime.backend import OnnxRuntimeBackend
from facecore.runtime.batching import BatchingBackend
from facecore.runtime.gpu import describe as describe_backend
from facecore.runtime.gpu import open_backend
from facecore.store.keys import ADMIN_SOCKET
from facecore_server import admin, capabilities, console, h5, openapi
from facecore_server.admission import Admission
from facecore_server.auth import Auth, FailureLimiter, bearer_matches, token_endpoint
from facecore_server.bodies import Bodies, FramingGuard, parse_body
from facecore_server.metrics import CONTENT_TYPE, Metrics
from facecore_server.responses import Answers, ORJSONResponse
from facecore_server.routes import (
    CLOUD_H5,
    CLOUD_PATHS,
    CLOUD_PREFIX,
    DETECT,
    OPS,
    PREFIXES,
    Op,
)
from facecore_server.service import FaceService
from facecore_server.settings import Settings
from facecore_server.startup import StartupError, lease, open_stores
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

if TYPE_CHECKING:
    from facecore_server.licensing import Licensing

log = logging.getLogger("facecore.server")
Endpoint = Callable[[Request], Awaitable[Response]]


class Server:
    """What the endpoints share: settings, models, stores, the gate, auth, answers."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.inner = open_backend(
            settings.backend,
            settings.models_dir,
            threads=settings.model_threads,
            gpus=settings.gpus,
            peers=lambda: self.admission.running,
        )
        self.licensing: Licensing | None = None
        if settings.license:
            self.licensing = lease(
                settings, self.inner.manifest, list(getattr(self.inner, "devices", ["cpu"]))
            )
        try:
            self._assemble(settings)
        except BaseException:
            if self.licensing is not None:
                self.licensing.close()
            raise

    def _assemble(self, settings: Settings) -> None:
        self.metrics = Metrics()
        self.answers = Answers(self.metrics, settings.access_log)
        workers = settings.workers or facecore.hardware_threads()
        self.admission = Admission(
            workers, settings.max_queue, settings.queue_timeout, settings.max_inflight_bytes
        )
        self.bodies = Bodies(self.admission, settings.max_body, settings.body_timeout)
        backend = BatchingBackend(
            self.inner,
            settings.batch_max,
            settings.batch_wait_ms / 1000,
            peers=lambda: self.admission.running,
            on_run=self.metrics.on_model_run,
        )
        self.engine = Engine(backend=backend, min_face=settings.min_face)
        self.library, self.keys = open_stores(settings)
        self.auth = Auth(
            self.keys,
            settings.auth == "required",
            FailureLimiter(
                settings.auth_address_failures, settings.auth_key_failures, settings.auth_window
            ),
            settings.default_appid,
        )
        self.service = FaceService(
            self.engine,
            self.library,
            settings.max_pixels,
            url_hosts=frozenset(
                h.strip().lower() for h in settings.url_hosts.split(",") if h.strip()
            ),
            url_max_bytes=settings.max_body,
            url_timeout=settings.url_timeout,
        )
        self.metrics.watch(
            lambda: (self.admission.waiting, self.admission.running),
            lambda: self.library.stats()["groups"],
        )
        self.video_gate = (
            self.licensing.gate("face/liveness(video)", DETECT, True) if self.licensing else None
        )

    def warm_up(self) -> None:
        """Open every model's session now, not on the first request (the GPU engine warmed every
        model when it was made)."""
        if not isinstance(self.inner, OnnxRuntimeBackend):
            return
        for role in self.inner.manifest["models"]:
            if str(self.inner.manifest["models"][role]["file"]).endswith(".onnx"):
                self.inner.session(role)

    def close(self) -> None:
        self.admission.close()
        self.library.close()
        self.keys.close()
        if self.licensing is not None:
            self.licensing.close()  # the seats go back to authd now, not when the leases run out

    def endpoint(self, op: Op, h5_envelope: bool = False) -> Endpoint:
        """The endpoint of a v3 route: its appid, admission, body, then op.handler on a worker;
        `h5_envelope`: answered in the H5 envelope (the public cloud's v1 sessioncode path)."""
        handler, service = op.handler, self.service
        gate = self.licensing.gate(op.path, op.feature, op.model) if self.licensing else None

        def work(appid: str, raw: bytes) -> Any:  # on a worker thread: parsing is work too
            return handler(service, appid, parse_body(raw, op.counts))

        async def handle(request: Request) -> Response:
            call = self.answers.call(request, op.path, h5_envelope)
            try:
                call.appid = appid = await self.auth.appid(request)
                if gate is not None:
                    gate()
                with self.bodies.admit(request, op.model) as ticket:
                    raw = await self.bodies.read(request, ticket)
                    if op.model:
                        result = await self.admission.run(ticket, work, appid, raw)
                    else:
                        result = await anyio.to_thread.run_sync(work, appid, raw)
            except Exception as e:  # noqa: BLE001 (Answers.error logs it; never a 500)
                return self.answers.error(call, e)
            return self.answers.ok(call, result)

        return handle

    async def video_liveness(self, request: Request) -> Response:
        """POST /face-api/face/liveness: the H5 video (facecore_server.h5), as multipart/form-data,
        a url-encoded form or a JSON object."""
        call = self.answers.call(request, "face/liveness(video)", h5=True)
        try:
            call.appid = await self.auth.caller(request)
            if self.video_gate is not None:
                self.video_gate()
            with self.bodies.admit(request, True) as ticket:
                raw = await self.bodies.read(request, ticket)
                form = await h5.video_form(request, raw, self.settings.max_body)
                verify = self.service.h5.verify
                result = await self.admission.run(ticket, verify, form, raw, call.appid)
        except Exception as e:  # noqa: BLE001 (Answers.error logs it; never a 500)
            return self.answers.error(call, e)
        return self.answers.ok(call, result)


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    server = Server(settings)
    answers = server.answers

    async def health(_: Request) -> ORJSONResponse:
        return ORJSONResponse(
            {
                "status": "ok",
                "version": facecore.__version__,
                "simd_level": facecore.simd_level(),
                "simd_levels_available": facecore.available_simd_levels(),
                "threads": settings.threads or facecore.hardware_threads(),
                "workers": server.admission.workers,
                "data_dir": str(settings.data_dir),
                "models_dir": str(server.inner.models_dir),
                "backend": describe_backend(server.inner),
                "faces": server.library.stats()["faces"],
                "store": server.library.store_state(),
                **({"license": server.licensing.state()} if server.licensing else {}),
            }
        )

    metrics_token = (
        settings.metrics_token_file.read_text().strip() if settings.metrics_token_file else None
    )

    async def metrics(request: Request) -> Response:
        if metrics_token and not bearer_matches(request, metrics_token):
            return Response(
                "metrics need Authorization: Bearer <the --metrics-token-file token>\n",
                status_code=401,
                headers={"WWW-Authenticate": "Bearer"},
            )
        return Response(server.metrics.render(), media_type=CONTENT_TYPE)

    doc = openapi.document(settings.default_appid, settings.auth == "required")

    async def openapi_json(_: Request) -> ORJSONResponse:
        return ORJSONResponse(doc)

    async def capabilities_json(request: Request) -> Response:
        url = bool(server.service.url_hosts)
        caps = capabilities.document(settings, server.engine, url, server.admission.workers)
        if server.licensing is not None:
            caps["license"] = capabilities.license_section(server.licensing.state())
        return answers.ok(answers.call(request, "capabilities"), caps)

    async def not_routed(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        why = "no such API path" if status == 404 else f"{request.method} is not allowed here"
        refused = UnsupportedMethod(f"{why}: {request.url.path}")
        return answers.error(answers.call(request, "unrouted"), refused, status)

    routes = [
        Route("/face-api/face/liveness", server.video_liveness, methods=["POST"]),
        Route("/api/face-api/face/liveness", server.video_liveness, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
        *console.routes(server),  # the web console, /console/ (docs/console.md)
    ]
    endpoints = {op.path: server.endpoint(op) for op in OPS}
    for prefix in PREFIXES:
        routes.append(Route(f"{prefix}/capabilities", capabilities_json, methods=["GET"]))
        for op in OPS:
            for path in (op.path, *op.aliases):
                routes.append(Route(f"{prefix}/{path}", endpoints[op.path], methods=["POST"]))
    # Baidu's public-cloud paths (those of the baidu-aip SDK), served by the same endpoints.
    for cloud, path in CLOUD_PATHS.items():
        routes.append(Route(f"{CLOUD_PREFIX}/{cloud}", endpoints[path], methods=["POST"]))
    by_path = {op.path: op for op in OPS}
    for cloud, private in CLOUD_H5.items():
        h5_op = None if private is None else by_path[private]
        endpoint = (
            server.video_liveness if h5_op is None else server.endpoint(h5_op, h5_envelope=True)
        )
        routes.append(Route(cloud, endpoint, methods=["POST"]))
    token = token_endpoint(server.auth, server.bodies, answers)
    routes.append(Route("/oauth/2.0/token", token, methods=["GET", "POST"]))

    socket_path = settings.data_dir / ADMIN_SOCKET

    @contextlib.asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        await anyio.to_thread.run_sync(server.warm_up)
        admin_server = await admin.serve(server.keys, socket_path, server.library)
        if settings.auth == "off" and settings.host not in ("127.0.0.1", "::1", "localhost"):
            log.warning(
                "--auth off on %s: any client that reaches port %d can read and change any "
                "appid's library; use --auth required with keys from `facecore keys create` "
                "(docs/auth.md)",
                settings.host,
                settings.port,
            )
        try:
            yield
        finally:
            await admin.stop(admin_server, socket_path)
            await anyio.to_thread.run_sync(server.close)

    app = Starlette(
        routes=routes,
        exception_handlers={404: not_routed, 405: not_routed},
        lifespan=lifespan,
    )
    app.add_middleware(FramingGuard, answers=answers)
    app.router.redirect_slashes = False  # "/face-api/v3/face/detect/" is unknown (404), not a 307
    app.state.settings = settings
    app.state.server = server
    return app


__all__ = ["ORJSONResponse", "Server", "StartupError", "create_app"]
