"""Key management over HTTP, for the console: list an appid's keys, create one (its secret answered
once, never again), revoke one. `facecore keys` does the same through the admin socket.

Who may (docs/auth.md, "Keys over HTTP"):
- a caller with a credential (an access token or a key pair, under either --auth mode) manages its
  own appid's keys and no others: a key is its appid's administrator;
- a caller without one (possible only under --auth off) only from this machine: the TCP peer on
  loopback, a Host header naming loopback (a DNS-rebinding page carries its own host name), and no
  Forwarded / X-Forwarded-For / X-Real-IP header (a proxy on this machine relays other machines'
  requests). Such a caller manages any appid's keys, as `facecore keys` may.

The writes also refuse what a browser sends cross-site: a body that is not application/json (which
a foreign page cannot send without a CORS preflight this server never grants), an Origin that is
not this server, and Sec-Fetch-Site: cross-site. Credentials are tokens, never cookies, so nothing
is sent on a page's behalf; the checks make the loopback case as safe.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import asdict
from ipaddress import ip_address
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import anyio.to_thread
from facecore.errors import (
    BadBody,
    BadKeyName,
    InvalidArgument,
    KeyNotFound,
    NoPermission,
)
from facecore.store.library import check_appid
from facecore_server.bodies import parse_body
from facecore_server.params import missing
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

if TYPE_CHECKING:
    from facecore_server.console import Server

_PROXY_HEADERS = ("forwarded", "x-forwarded-for", "x-real-ip")
_MAX_BODY = 4096  # {"name": ...} or {"api_key": ...}


def is_loopback(name: str | None) -> bool:
    if not name:
        return False
    if name.lower() == "localhost":
        return True
    try:
        return ip_address(name.strip("[]")).is_loopback
    except ValueError:
        return False


def local(request: Request) -> bool:
    """Sent from this machine, to a loopback name, not relayed by a proxy."""
    peer = request.client.host if request.client else None
    return (
        is_loopback(peer)
        and is_loopback(request.url.hostname)
        and not any(h in request.headers for h in _PROXY_HEADERS)
    )


def same_site(request: Request) -> None:
    """A write must be one a page of this server sent: JSON, from its own origin."""
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise BadBody(f"key management takes an application/json body, not {kind or 'none'!r}")
    origin = request.headers.get("origin")
    if origin is not None and urlsplit(origin).netloc != request.headers.get("host"):
        raise NoPermission(f"a request from another origin ({origin[:64]!r}) may not manage keys")
    if request.headers.get("sec-fetch-site") == "cross-site":
        raise NoPermission("a cross-site request may not manage keys")


def routes(server: Server) -> list[BaseRoute]:
    """GET /api/keys, POST /api/keys, POST /api/keys/revoke (under the console's mount)."""
    store, answers, auth = server.keys, server.answers, server.auth

    async def scope(request: Request) -> str | None:
        """The appid whose keys the caller manages; None: any (a local caller without a
        credential that named no appid)."""
        bound = await auth.caller(request)
        named = request.query_params.get("appid") or None
        if bound is not None:
            if named not in (None, bound):
                raise NoPermission("the appid in the query is not the credential's")
            return bound
        if not local(request):
            raise NoPermission(
                "without a credential, keys are managed over HTTP only from this machine "
                "(loopback, not through a proxy); sign in with a key of the appid, or use "
                "`facecore keys`"
            )
        return None if named is None else check_appid(named)

    def endpoint(
        name: str, work: Callable[[str | None, Any], Any], write: bool
    ) -> Callable[[Request], Awaitable[Response]]:
        async def handle(request: Request) -> Response:
            call = answers.call(request, f"console/{name}")
            try:
                appid = call.appid = await scope(request)
                body: Any = None
                if write:
                    same_site(request)
                    with server.bodies.admit(request, False, _MAX_BODY) as ticket:
                        body = parse_body(await server.bodies.read(request, ticket))
                result = await anyio.to_thread.run_sync(work, appid, body)
            except Exception as e:  # noqa: BLE001 (Answers.error logs it; never a 500)
                return answers.error(call, e)
            return answers.ok(call, result)

        return handle

    def listed(appid: str | None, _: Any) -> dict[str, Any]:
        return {"key_list": [asdict(k) for k in store.list(appid)]}

    def create(appid: str | None, body: dict[str, Any]) -> dict[str, Any]:
        appid = appid or server.settings.default_appid
        if appid is None:
            raise missing("appid")
        try:
            info, secret = store.create(appid, body.get("name", ""))
        except InvalidArgument as e:  # the appid is checked: the name is at fault
            raise BadKeyName(str(e)) from None
        return {**asdict(info), "secret_key": secret}

    def revoke(appid: str | None, body: dict[str, Any]) -> dict[str, Any]:
        api_key = body.get("api_key")
        if api_key is None or api_key == "":
            raise missing("api_key")
        info = store.key(api_key) if isinstance(api_key, str) else None
        if info is None or appid not in (None, info.appid):  # another appid's: as if unknown
            raise KeyNotFound(f"no key {str(api_key)[:32]!r} of this appid")
        return {"api_key": api_key, "tokens_removed": store.revoke(api_key)}

    return [
        Route("/api/keys", endpoint("keys", listed, False), methods=["GET"]),
        Route("/api/keys", endpoint("keys/create", create, True), methods=["POST"]),
        Route("/api/keys/revoke", endpoint("keys/revoke", revoke, True), methods=["POST"]),
    ]


__all__ = ["is_loopback", "local", "routes", "same_site"]
