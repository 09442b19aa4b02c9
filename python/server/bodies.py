"""Request bodies: admitted from their headers before a byte is read, read within a size and a time
limit, parsed as JSON or as a form; and the guard that refuses a body whose framing is ambiguous.
"""

from __future__ import annotations

import json
from typing import Any

import anyio
import orjson
from facecore.errors import BadBody, BadImage, WrongImageCount
from facecore_server.admission import Admission, Ticket
from facecore_server.responses import Answers
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.formparsers import MultiPartException
from starlette.requests import Request
from starlette.types import ASGIApp, Receive, Scope, Send


class Bodies:
    """Admission of a request from its headers, then the reading of its body."""

    def __init__(self, admission: Admission, max_body: int, timeout: float) -> None:
        self.admission, self.max_body, self.timeout = admission, max_body, timeout

    def admit(self, request: Request, model: bool, limit: int | None = None) -> Ticket:
        """Admission from the headers alone, before the body is read (Busy at once when full)."""
        return self.admission.enter(body_size(request, limit or self.max_body), model)

    async def read(self, request: Request, ticket: Ticket) -> bytes:
        raw = await read_body(request, ticket.reserved, self.timeout)
        ticket.shrink(len(raw))
        return raw


def body_size(request: Request, limit: int) -> int:
    """The most bytes the request's body can be, from its headers alone (before any is read):
    its Content-Length, or `limit` for a chunked body; BadImage over the limit (the body is
    the image's)."""
    declared = request.headers.get("content-length")
    if declared is None:
        return limit
    if not (declared.isascii() and declared.isdigit()):
        raise BadBody(f"Content-Length {declared[:32]!r} is not a byte count")
    if int(declared) > limit:
        raise BadImage(f"the request body is {declared} bytes; the limit is {limit}")
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
                raise BadImage(f"the request body is over the {limit}-byte limit")
            chunks.append(chunk)
    if waited.cancelled_caught:
        raise BadBody(f"the request body did not arrive within {timeout:g} s")
    return b"".join(chunks)


def _json(raw: bytes) -> Any:
    """orjson, or the standard library for the valid JSON orjson refuses: a number beyond a
    double's range (1e400 is a number; the parameter's own check then refuses it with its code)."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        if "number is infinity" not in str(e):
            raise BadBody(f"the request body is not valid JSON ({e})") from None

    def constant(name: str) -> Any:  # NaN and Infinity are not JSON
        raise ValueError(f"{name} is not a JSON value")

    def integer(text: str) -> int | float:  # past int()'s digit limit, a float (inf) too
        return int(text) if len(text) < 4300 else float(text)

    try:
        return json.loads(raw, parse_constant=constant, parse_int=integer)
    except ValueError as e:  # JSONDecodeError, too many digits, a constant
        raise BadBody(f"the request body is not valid JSON ({e})") from None


def parse_body(raw: bytes, counts: tuple[int, ...] = ()) -> Any:
    """The JSON body: an object, or for `counts` an array of that many objects."""
    body: Any = _json(raw) if raw.strip() else {}
    if counts:
        wanted = " or ".join(str(n) for n in counts)
        if not isinstance(body, list) or len(body) not in counts:
            raise WrongImageCount(f"the body must be a JSON array of {wanted} image objects")
        if not all(isinstance(item, dict) for item in body):
            raise WrongImageCount("each element of the array must be a JSON object")
        return body
    if not isinstance(body, dict):
        raise BadBody("the request body must be a JSON object")
    return body


async def read_form(request: Request, raw: bytes, **limits: Any) -> FormData:
    """The multipart or url-encoded form of a body already read (`raw`), parsed by Starlette
    within `limits`; BadBody when it is malformed. The caller closes it."""

    async def replay() -> dict[str, Any]:  # the form parser reads the body we already hold
        return {"type": "http.request", "body": raw, "more_body": False}

    try:
        return await Request(request.scope, replay).form(**limits)
    except (HTTPException, MultiPartException, ValueError) as e:  # malformed form
        raise BadBody(f"the form could not be parsed ({type(e).__name__})") from None


class FramingGuard:
    """Refuses, before any route sees it, a request whose body framing is ambiguous: both
    Content-Length and Transfer-Encoding, or two Content-Lengths. A proxy in front that reads the
    other header would see another request boundary than we do (request smuggling); RFC 9112 6.3
    says to treat it as an error and close the connection. HTTP 400, the v3 envelope (BadBody)."""

    def __init__(self, app: ASGIApp, answers: Answers) -> None:
        self.app, self.answers = app, answers

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            names = [name.lower() for name, _ in scope["headers"]]
            lengths = names.count(b"content-length")
            if lengths > 1 or (lengths and b"transfer-encoding" in names):
                refused = BadBody(
                    "ambiguous body framing: a request may carry one Content-Length or "
                    "a Transfer-Encoding, not both (RFC 9112 6.3)",
                )
                call = self.answers.call(Request(scope), "unrouted")
                response = self.answers.error(call, refused, status=400)
                response.headers["Connection"] = "close"
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
