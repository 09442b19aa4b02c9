"""The v3 answer: the envelope every API answer comes in, the one place an exception becomes an
error envelope, the request's log id, and its metrics and access log line.

Every API answer is HTTP 200 with {error_code, error_msg, log_id, timestamp, cached, result} (the
H5 routes': {err_no, err_msg, serverlogid, ...}); the why of an error goes into `error_detail`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

import orjson
from facecore.errors import Busy, FaceCoreError, InternalError
from facecore_server.metrics import Metrics
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response

access_log = logging.getLogger("facecore.access")
log = logging.getLogger("facecore.server")


class ORJSONResponse(JSONResponse):
    media_type = "application/json"

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content, option=orjson.OPT_SERIALIZE_NUMPY)


class LogIds:
    """13-digit request ids: milliseconds since the epoch, bumped to stay unique and increasing."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(self._last + 1, int(time.time() * 1000))
            return self._last


@dataclass
class Call:
    """One request being answered: what its envelope and its access log line say of it."""

    request: Request
    route: str  # the metrics' and the log's name for it
    log_id: int
    started: float  # time.perf_counter()
    appid: str | None = None  # once known
    h5: bool = False  # answered in the H5 envelope (err_no, err_msg, serverlogid)


class Answers:
    """Writes every answer of one server, and counts and logs it."""

    def __init__(self, metrics: Metrics, access_log: bool) -> None:
        self.metrics, self.access_log = metrics, access_log
        self.ids = LogIds()

    def call(self, request: Request, route: str, h5: bool = False) -> Call:
        """A request starts being answered now, under a new log id."""
        return Call(request, route, self.ids.next(), time.perf_counter(), h5=h5)

    def ok(self, call: Call, result: Any) -> Response:
        return self._envelope(call, 0, "SUCCESS", result, None, 200)

    def error(self, call: Call, e: BaseException, status: int = 200) -> Response:
        """The answer for an exception: its code and the table's text when it carries a code
        (facecore.errors), else InternalError with the traceback logged under the log_id. Never
        a 500."""
        if isinstance(e, ClientDisconnect):  # nothing can be answered; not the server's fault
            log.info(
                "log_id %d: the client closed the connection before its body arrived", call.log_id
            )
            self.record(call, "closed", None, 499)
            return Response(status_code=499)
        if isinstance(e, FaceCoreError) and e.code is not None:
            error, code = e, e.code
        else:
            log.exception("log_id %d: internal error", call.log_id, exc_info=e)
            why = (
                f"internal error ({type(e).__name__}); see the server log for log_id {call.log_id}"
            )
            error, code = InternalError(why), InternalError.code
        if isinstance(error, Busy):
            self.metrics.busy.inc()
        return self._envelope(call, code, error.error_msg(), None, str(error), status)

    def _envelope(
        self, call: Call, code: int, text: str, result: Any, detail: str | None, status: int
    ) -> Response:
        body: dict[str, Any] = {
            "error_code": code,
            "error_msg": text,
            "log_id": call.log_id,
            "timestamp": int(time.time()),
            "cached": 0,
            "result": result,
        }
        if call.h5:  # the H5 video route's own shape in the spec: err_no, err_msg, serverlogid
            body = {
                "err_no": code,
                "err_msg": "success" if code == 0 else text,
                "result": result,
                "timestamp": body["timestamp"],
                "cached": 0,
                "serverlogid": str(call.log_id),
            }
        if code and detail:
            body["error_detail"] = detail
        self.record(call, code, detail, status)
        return ORJSONResponse(body, status_code=status, headers={"X-Log-Id": str(call.log_id)})

    def record(self, call: Call, code: int | str, detail: str | None, status: int) -> None:
        """Metrics and the access log line of one answer. The path is logged without its query
        string, so access tokens and OAuth secrets never reach the log."""
        elapsed = time.perf_counter() - call.started
        self.metrics.observe(call.route, code, elapsed)
        if self.access_log:
            request = call.request
            client = request.client
            access_log.info(
                orjson.dumps(
                    {
                        "ts": round(time.time(), 3),
                        "log_id": call.log_id,
                        "client": f"{client.host}:{client.port}" if client else None,
                        "method": request.method,
                        "path": request.url.path,
                        "appid": call.appid,
                        "status": status,
                        "error_code": code,
                        "detail": detail,
                        "ms": round(elapsed * 1000, 2),
                        "bytes_in": int(request.headers.get("content-length") or 0),
                    }
                ).decode()
            )
