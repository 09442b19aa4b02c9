"""The Starlette application: the v3 envelope around facecore_server.service, nothing more.

Every API answer is HTTP 200 with {error_code, error_msg, log_id, timestamp, cached, result};
unknown paths (404) and methods (405) get the same envelope with error_code 3. Model-bound routes
run through the admission gate (bounded queue, 222901 when full); library routes on worker
threads. Nothing blocking runs on the event loop.
"""

from __future__ import annotations

import contextlib
import json
import logging
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio.to_thread
import facecore
import orjson
from facecore import fields
from facecore.backend import OnnxRuntimeBackend
from facecore.batching import BatchingBackend
from facecore.engine import Engine
from facecore.errors import FaceCoreError
from facecore.keys import ADMIN_SOCKET, STORE_DIR, KeyStore
from facecore.library import FaceLibrary, check_appid
from facecore.liveness import THRESHOLDS as LIVENESS_THRESHOLDS
from facecore_server import admin, openapi
from facecore_server.admission import Admission, Ticket
from facecore_server.auth import (
    NO_PERMISSION,
    RATE_LIMITED,
    SCOPE,
    Auth,
    FailureLimiter,
    bearer_matches,
)
from facecore_server.errors import (
    BUSY,
    MISSING,
    SYSTEM_ERROR,
    UNSUPPORTED_METHOD,
    ApiError,
    message,
    missing,
)
from facecore_server.metrics import CONTENT_TYPE, Metrics
from facecore_server.params import decode_base64
from facecore_server.routes import CLOUD_H5, CLOUD_PATHS, CLOUD_PREFIX, OPS, PREFIXES, Op
from facecore_server.service import LIVENESS_LIMITS, QUALITY_LIMITS, FaceService
from facecore_server.settings import Settings
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

access_log = logging.getLogger("facecore.access")
log = logging.getLogger("facecore.server")


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class StartupError(Exception):
    """The server cannot start, for a reason one line tells the operator (facecore-server prints
    it and exits 2 instead of a traceback)."""


def _open_stores(settings: Settings) -> tuple[FaceLibrary, KeyStore]:
    """The face library and the key store under --data, or StartupError saying why not."""
    data = settings.data_dir
    library = None
    try:
        data.mkdir(parents=True, exist_ok=True)
        library = FaceLibrary(
            data,
            token_capacity=settings.token_capacity,
            token_days=settings.token_days,
            sync_writes=settings.sync_writes,
            threads=settings.threads,
        )
        return library, KeyStore(data / STORE_DIR, settings.access_token_seconds)
    except Exception as e:  # RocksDB raises plain Exception; _store_problem names the cause
        if library is not None:
            library.close()
        raise StartupError(_store_problem(data, e)) from e


def _store_problem(data: Path, e: Exception) -> str:
    text = str(e)
    if "lock" in text.lower() and ("LOCK" in text or "lock hold" in text):
        return (
            f"the data directory {data} is in use by another FaceCore process (its RocksDB lock "
            "is held): stop that server, or give this one its own --data"
        )
    if isinstance(e, PermissionError) or "Permission denied" in text or "Read-only" in text:
        return f"the data directory {data} is not writable ({text.strip()}): --data must be"
    return f"the data directory {data} cannot be opened: {type(e).__name__}: {text.strip()}"


class LogIds:
    """13-digit request ids: milliseconds since the epoch, bumped to stay unique and increasing."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(time.time() * 1000))
            return self._last


def body_size(request: Request, limit: int) -> int:
    """The most bytes the request's body can be, from its headers alone (before any is read):
    its Content-Length, or `limit` for a chunked body; 222013 over the limit."""
    declared = request.headers.get("content-length")
    if declared is None:
        return limit
    if not (declared.isascii() and declared.isdigit()):
        raise ApiError(222001, f"Content-Length {declared[:32]!r} is not a byte count")
    if int(declared) > limit:
        raise ApiError(222013, f"the request body is {declared} bytes; the limit is {limit}")
    return int(declared)


async def read_body(request: Request, limit: int, timeout: float) -> bytes:
    """The whole body, at most `limit` bytes, arriving within `timeout` seconds (a client that
    trickles its body cannot hold its admitted bytes for long). Raises ClientDisconnect when the
    client hangs up first."""
    chunks, size = [], 0
    with anyio.move_on_after(timeout) as waited:
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise ApiError(222013, f"the request body is over the {limit}-byte limit")
            chunks.append(chunk)
    if waited.cancelled_caught:
        raise ApiError(222001, f"the request body did not arrive within {timeout:g} s")
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    """orjson, or the standard library for the valid JSON orjson refuses: a number beyond a
    double's range (1e400 is a number; the parameter's own check then refuses it with its code)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "number is infinity" not in str(e):
            raise ApiError(222001, f"the request body is not valid JSON ({e})") from None

    def constant(name: str) -> Any:  # NaN and Infinity are not JSON
        raise ValueError(f"{name} is not a JSON value")

    def integer(text: str) -> int | float:  # past int()'s digit limit, a float (inf) too
        return int(text) if len(text) < 4300 else float(text)

    try:
        return json.loads(raw, parse_constant=constant, parse_int=integer)
    except ValueError as e:  # JSONDecodeError, too many digits, a constant
        raise ApiError(222001, f"the request body is not valid JSON ({e})") from None


def parse_body(raw: bytes, counts: tuple[int, ...] = ()) -> Any:
    """The JSON body: an object, or for `counts` an array of that many objects."""
    body: Any = _json(raw) if raw.strip() else {}
    if counts:
        wanted = " or ".join(str(n) for n in counts)
        if not isinstance(body, list) or len(body) not in counts:
            raise ApiError(222208, f"the body must be a JSON array of {wanted} image objects")
        if not all(isinstance(item, dict) for item in body):
            raise ApiError(222208, "each element of the array must be a JSON object")
        return body
    if not isinstance(body, dict):
        raise ApiError(222001, "the request body must be a JSON object")
    return body


class Server:
    """What the handlers share: settings, service, gate, metrics, ids."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.ids = LogIds()
        self.metrics = Metrics()
        workers = settings.workers or facecore.hardware_threads()
        self.admission = Admission(
            workers, settings.max_queue, settings.queue_timeout, settings.max_inflight_bytes
        )
        self.inner = OnnxRuntimeBackend(settings.models_dir, threads=settings.model_threads)
        backend = BatchingBackend(
            self.inner,
            settings.batch_max,
            settings.batch_wait_ms / 1000,
            peers=lambda: self.admission.running,
            on_run=self.metrics.on_model_run,
        )
        self.engine = Engine(backend=backend, min_face=settings.min_face)
        self.library, self.keys = _open_stores(settings)
        self.auth = Auth(
            self.keys,
            settings.auth == "required",
            FailureLimiter(
                settings.auth_address_failures, settings.auth_key_failures, settings.auth_window
            ),
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

    def warm_up(self) -> None:
        """Open every model's session now, not on the first request."""
        for role in self.inner.manifest["models"]:
            if str(self.inner.manifest["models"][role]["file"]).endswith(".onnx"):
                self.inner.session(role)

    def close(self) -> None:
        self.admission.close()
        self.library.close()
        self.keys.close()

    def capabilities(self) -> dict[str, Any]:
        caps = self.engine.capabilities()
        s = self.settings
        live = caps["liveness"]
        return {
            "face_field": caps["face_field"],
            "always": caps["always"],
            "quality": caps["quality"],
            "emotion": caps["emotion"],
            "unsupported": caps["unsupported"],
            "image_type": ["BASE64", "FACE_TOKEN"] + (["URL"] if self.service.url_hosts else []),
            "quality_control": {
                "values": ["NONE", *QUALITY_LIMITS],
                "checks": {"blur": 223114, "illumination": 223115, "completeness": 223116},
                "not_checked": dict(fields.NOT_MEASURED),
            },
            "liveness_control": {
                "values": ["NONE", *LIVENESS_LIMITS] if live else ["NONE"],
                "thresholds": LIVENESS_LIMITS if live else {},
                "installed": live,
                "missing": 223119,
                "failed": 223120,
            },
            "liveness": {"thresholds": LIVENESS_THRESHOLDS, "images": [1, 3, 8]} if live else None,
            "embedding_dim": caps["embedding_dim"],
            "score": "0-100, 80 = false accept rate 1e-4 (docs/accuracy.md)",
            "limits": {
                "max_body_bytes": s.max_body,
                "max_inflight_bytes": s.max_inflight_bytes,
                "body_timeout_s": s.body_timeout,
                "max_pixels": s.max_pixels,
                "max_face_num": 10,
                "min_face_px": s.min_face,
                "max_groups_per_search": 10,
                "max_user_num": 20,
                "token_days": s.token_days,
                "token_capacity": s.token_capacity,
            },
            "auth": {
                "mode": s.auth,
                "token_endpoint": "/oauth/2.0/token",
                "credentials": ["access_token (query)", "X-Api-Key + X-Secret-Key (headers)"],
                "access_token_seconds": s.access_token_seconds,
            },
            "batching": {
                "max_batch": s.batch_max,
                "max_wait_ms": s.batch_wait_ms,
                "workers": self.admission.workers,
            },
        }

    # ------------------------------------------------------------------ envelope

    def answer(
        self,
        request: Request,
        route: str,
        log_id: int,
        started: float,
        code: int,
        result: Any = None,
        detail: str | None = None,
        param: str | None = None,
        status: int = 200,
        appid: str | None = None,
        h5: bool = False,
    ) -> Response:
        body: dict[str, Any] = {
            "error_code": code,
            "error_msg": "SUCCESS" if code == 0 else message(code, param),
            "log_id": log_id,
            "timestamp": int(time.time()),
            "cached": 0,
            "result": result if code == 0 else None,
        }
        if h5:  # the H5 video route's own shape in the spec: err_no, err_msg, serverlogid
            body = {
                "err_no": code,
                "err_msg": "success" if code == 0 else message(code, param),
                "result": body["result"],
                "timestamp": body["timestamp"],
                "cached": 0,
                "serverlogid": str(log_id),
            }
        if code and detail:
            body["error_detail"] = detail
        self.record(request, route, log_id, started, code, detail, status, appid)
        return ORJSONResponse(body, status_code=status, headers={"X-Log-Id": str(log_id)})

    def record(
        self,
        request: Request,
        route: str,
        log_id: int,
        started: float,
        code: int | str,
        detail: str | None,
        status: int,
        appid: str | None,
    ) -> None:
        """Metrics and the access log line of one answer. The path is logged without its query
        string, so access tokens and OAuth secrets never reach the log."""
        elapsed = time.perf_counter() - started
        self.metrics.observe(route, code, elapsed)
        if code == BUSY:
            self.metrics.busy.inc()
        if self.settings.access_log:
            client = request.client
            access_log.info(
                orjson.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "log_id": log_id,
                        "client": f"{client.host}:{client.port}" if client else None,
                        "method": request.method,
                        "path": request.url.path,
                        "appid": appid,
                        "status": status,
                        "error_code": code,
                        "detail": detail,
                        "ms": round(elapsed * 1000, 2),
                        "bytes_in": int(request.headers.get("content-length") or 0),
                    }
                ).decode()
            )

    def failure(
        self,
        request: Request,
        route: str,
        log_id: int,
        started: float,
        e: Exception,
        appid: str | None = None,
        h5: bool = False,
    ) -> Response:
        """The answer for an exception: its code when it carries one (ApiError, the library's
        errors), else 222302 with the traceback logged under the log_id. Never a 500."""
        if isinstance(e, ClientDisconnect):  # nothing can be answered; not the server's fault
            log.info("log_id %d: the client closed the connection before its body arrived", log_id)
            self.record(request, route, log_id, started, "closed", None, 499, appid)
            return Response(status_code=499)
        if isinstance(e, FaceCoreError) and e.code is not None:
            code, detail = e.code, str(e)
        else:
            log.exception("log_id %d: internal error", log_id, exc_info=e)
            code = SYSTEM_ERROR
            detail = f"internal error ({type(e).__name__}); see the server log for log_id {log_id}"
        return self.answer(
            request,
            route,
            log_id,
            started,
            code,
            detail=detail,
            param=getattr(e, "param", None),
            appid=appid,
            h5=h5,
        )

    async def appid(self, request: Request) -> str:
        """The appid a request acts on: its credential's (a query appid must then be the same),
        else the query's, else the default appid."""
        bound = await self.auth.caller(request)
        appid = request.query_params.get("appid")
        if bound is not None:
            if appid not in (None, "", bound):
                raise ApiError(NO_PERMISSION, "the appid in the query is not the credential's")
            return str(bound)
        if appid is None or appid == "":
            if self.settings.default_appid is None:
                raise missing("appid")
            return str(self.settings.default_appid)
        return str(check_appid(appid))

    def endpoint(self, op: Op, h5: bool = False) -> Callable[[Request], Awaitable[Response]]:
        """The handler of an op; `h5`: answered in the H5 envelope (the public cloud's v1
        sessioncode path)."""
        fn = getattr(self.service, op.handler)

        def call(appid: str, raw: bytes) -> Any:  # on a worker thread: parsing is work too
            return fn(appid, parse_body(raw, op.counts))

        async def handle(request: Request) -> Response:
            log_id, started = self.ids.next(), time.perf_counter()
            appid = None
            try:
                appid = await self.appid(request)
                with self.admit(request, op.model) as ticket:
                    raw = await self.body(request, ticket)
                    if op.model:
                        result = await self.admission.run(ticket, call, appid, raw)
                    else:
                        result = await anyio.to_thread.run_sync(call, appid, raw)
            except Exception as e:  # noqa: BLE001 (failure() logs it; never a 500)
                return self.failure(request, op.path, log_id, started, e, appid=appid, h5=h5)
            return self.answer(request, op.path, log_id, started, 0, result, appid=appid, h5=h5)

        return handle

    def admit(self, request: Request, model: bool, limit: int | None = None) -> Ticket:
        """Admission from the headers alone, before the body is read (222901 at once when full)."""
        return self.admission.enter(body_size(request, limit or self.settings.max_body), model)

    async def body(self, request: Request, ticket: Ticket) -> bytes:
        raw = await read_body(request, ticket.reserved, self.settings.body_timeout)
        ticket.shrink(len(raw))
        return raw

    async def token(self, request: Request) -> Response:
        """GET or POST /oauth/2.0/token?grant_type=client_credentials&client_id=<API key>
        &client_secret=<secret key> (POST may send them as a form): an access token for the key's
        appid, in OAuth 2.0's shapes (RFC 6749 5.1 and 5.2)."""
        log_id, started = self.ids.next(), time.perf_counter()
        address = request.client.host if request.client else ""

        def oauth(status: int, error: str, description: str, **headers: str) -> Response:
            self.record(request, "oauth/token", log_id, started, error, description, status, None)
            body = {"error": error, "error_description": description}
            return ORJSONResponse(
                body, status_code=status, headers={**headers, "Cache-Control": "no-store"}
            )

        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            try:
                with self.admit(request, False, 8192) as ticket:
                    form = await read_form(request, await self.body(request, ticket), max_files=0)
            except ApiError as e:
                if e.code == BUSY:
                    return oauth(503, "temporarily_unavailable", str(e), **{"Retry-After": "1"})
                return oauth(400, "invalid_request", str(e))
            params.update({k: v for k, v in form.items() if isinstance(v, str)})
            await form.close()

        grant, key, secret = (params.get(k) for k in ("grant_type", "client_id", "client_secret"))
        if not grant:
            return oauth(400, "invalid_request", "grant_type is missing")
        if grant != "client_credentials":
            return oauth(400, "unsupported_grant_type", "only client_credentials is supported")
        if not key or not secret:
            return oauth(400, "invalid_request", "client_id and client_secret are required")
        try:
            info = await self.auth.check_key(address, key, secret)
        except ApiError as e:
            if e.code == RATE_LIMITED:
                wait = str(self.auth.wait(address, key))
                return oauth(429, "invalid_client", str(e), **{"Retry-After": wait})
            return oauth(401, "invalid_client", "Client authentication failed")
        token = await anyio.to_thread.run_sync(self.keys.issue, info)
        self.record(request, "oauth/token", log_id, started, 0, None, 200, info.appid)
        return ORJSONResponse(
            {
                "access_token": token.access_token,
                "token_type": "bearer",
                "expires_in": token.expires_in,
                "scope": SCOPE,
            },
            headers={"Cache-Control": "no-store"},
        )

    async def video_liveness(self, request: Request) -> Response:
        """POST /face-api/face/liveness: `video` (multipart file) or `video_base64`, and
        `session_id`, as multipart/form-data, a url-encoded form or a JSON object."""
        log_id, started = self.ids.next(), time.perf_counter()
        route = "face/liveness(video)"
        appid = None
        try:
            appid = await self.auth.caller(request)
            with self.admit(request, True) as ticket:
                raw = await self.body(request, ticket)
                form = await _video_form(request, raw, self.settings.max_body)
                result = await self.admission.run(ticket, self._video, form, raw, appid)
        except Exception as e:  # noqa: BLE001 (failure() logs it; never a 500)
            return self.failure(request, route, log_id, started, e, appid=appid, h5=True)
        return self.answer(request, route, log_id, started, 0, result, appid=appid, h5=True)

    def _video(self, form: dict[str, Any] | None, raw: bytes, appid: str | None) -> Any:
        """On the worker: a JSON body's parsing and the base64 decoding are work too, kept off
        the event loop (10 MB of either blocks every other request for tens of milliseconds)."""
        session_id, video = _video_fields(parse_body(raw) if form is None else form)
        return self.service.video_liveness(session_id, video, appid)


class FramingGuard:
    """Refuses, before any route sees it, a request whose body framing is ambiguous: both
    Content-Length and Transfer-Encoding, or two Content-Lengths. A proxy in front that reads the
    other header would see another request boundary than we do (request smuggling); RFC 9112 6.3
    says to treat it as an error and close the connection. HTTP 400, the v3 envelope (222001)."""

    def __init__(self, app: ASGIApp, server: Server) -> None:
        self.app, self.server = app, server

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [name.lower() for name, _ in scope["headers"]]
            lengths = names.count(b"content-length")
            if lengths > 1 or (lengths and b"transfer-encoding" in names):
                server = self.server
                response = server.answer(
                    Request(scope),
                    "unrouted",
                    server.ids.next(),
                    time.perf_counter(),
                    MISSING,
                    detail="ambiguous body framing: a request may carry one Content-Length or "
                    "a Transfer-Encoding, not both (RFC 9112 6.3)",
                    status=400,
                )
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def read_form(request: Request, raw: bytes, **limits: Any) -> FormData:
    """The multipart or url-encoded form of a body already read (`raw`), parsed by Starlette
    within `limits`; 222001 when it is malformed. The caller closes it."""

    async def replay() -> dict[str, Any]:  # the form parser reads the body we already hold
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        return await Request(request.scope, replay).form(**limits)
    except (HTTPException, MultiPartException, ValueError) as e:  # malformed form
        raise ApiError(222001, f"the form could not be parsed ({type(e).__name__})") from None


async def _video_form(request: Request, raw: bytes, limit: int) -> dict[str, Any] | None:
    """The fields of a multipart or url-encoded form (the `video` file as bytes), or None for
    any other body (a JSON object, parsed on the worker)."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind not in ("multipart/form-data", "application/x-www-form-urlencoded"):
        return None
    form = await read_form(request, raw, max_files=1, max_fields=16, max_part_size=limit)
    try:
        fields: dict[str, Any] = dict(form)
        upload = form.get("video")
        if upload is not None and not isinstance(upload, str):
            fields["video"] = await upload.read()
        return fields
    finally:
        await form.close()


def _video_fields(fields: dict[str, Any]) -> tuple[object, bytes | None]:
    """(session_id, video bytes): the `video` file wins over `video_base64` when both come."""
    if isinstance(fields.get("video"), bytes):
        return fields.get("session_id"), fields["video"]
    text = fields.get("video_base64")
    if text is None or text == "":
        return fields.get("session_id"), None
    if not isinstance(text, str):
        raise ApiError(222013, "video_base64 must be a base64 string", "video_base64")
    try:
        video = decode_base64(text)
    except ApiError:
        raise ApiError(222013, "video_base64 is not valid base64", "video_base64") from None
    return fields.get("session_id"), video


def create_app(settings: Settings | None = None) -> Starlette:
    settings = settings or Settings()
    server = Server(settings)

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
                "faces": server.library.stats()["faces"],
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

    async def capabilities(request: Request) -> Response:
        return server.answer(
            request,
            "capabilities",
            server.ids.next(),
            time.perf_counter(),
            0,
            server.capabilities(),
        )

    async def not_routed(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 500
        why = "no such API path" if status == 404 else f"{request.method} is not allowed here"
        return server.answer(
            request,
            "unrouted",
            server.ids.next(),
            time.perf_counter(),
            UNSUPPORTED_METHOD,
            detail=f"{why}: {request.url.path}",
            status=status,
        )

    routes = [
        Route("/face-api/face/liveness", server.video_liveness, methods=["POST"]),
        Route("/api/face-api/face/liveness", server.video_liveness, methods=["POST"]),
        Route("/health", health, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi_json, methods=["GET"]),
    ]
    handlers = {op.path: server.endpoint(op) for op in OPS}
    for prefix in PREFIXES:
        routes.append(Route(f"{prefix}/capabilities", capabilities, methods=["GET"]))
        for op in OPS:
            for path in (op.path, *op.aliases):
                routes.append(Route(f"{prefix}/{path}", handlers[op.path], methods=["POST"]))
    # Baidu's public-cloud paths (those of the baidu-aip SDK), served by the same handlers.
    for cloud, path in CLOUD_PATHS.items():
        routes.append(Route(f"{CLOUD_PREFIX}/{cloud}", handlers[path], methods=["POST"]))
    by_path = {op.path: op for op in OPS}
    for cloud, path in CLOUD_H5.items():
        handler = server.video_liveness if path is None else server.endpoint(by_path[path], h5=True)
        routes.append(Route(cloud, handler, methods=["POST"]))
    routes.append(Route("/oauth/2.0/token", server.token, methods=["GET", "POST"]))

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
    app.add_middleware(FramingGuard, server=server)
    app.router.redirect_slashes = False  # "/face/detect/" is unknown (404 envelope), not a 307
    app.state.settings = settings
    app.state.server = server
    return app


__all__ = ["ORJSONResponse", "Server", "StartupError", "create_app"]
