"""Who is calling: access tokens, API key + secret headers, the limits on failed attempts, the appid
a request acts on, and the token endpoint that turns a key into an access token.

Credentials, in the order they are looked at:
- `access_token` in the query string (what Baidu's SDK sends), from `/oauth/2.0/token`;
- the `X-Api-Key` and `X-Secret-Key` headers (for clients that do not want a token round trip).
A valid credential binds the request to its key's appid; a query `appid` that names another one is
refused with NoPermission, whichever appids exist. Every credential that is sent is checked, and
all must hold; `--auth required` also refuses requests that send none. The errors are the public
cloud's (facecore.errors): TokenInvalid, TokenExpired, IamFailed (key or secret wrong),
NoPermission (appid not the key's), RateLimited (too many failed attempts).

Brute force: failed attempts are counted per client address and per API key over a sliding
window; past the limit, new attempts are refused (RateLimited) before any secret is looked at,
until the window has slid past the failures. What is already proven is not refused: a valid
access token, or a key pair this process verified before, works from an address over its limit, so
one misconfigured client behind a site's NAT does not lock out the site's working clients.
"""

from __future__ import annotations

import hmac
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable

import anyio
import anyio.to_thread
import facecore
from facecore.errors import (
    Busy,
    FaceCoreError,
    IamFailed,
    NoPermission,
    RateLimited,
    TokenExpired,
    TokenInvalid,
)
from facecore.store.keys import KeyInfo, KeyStore
from facecore.store.library import check_appid
from facecore_server.bodies import Bodies, read_form
from facecore_server.params import missing
from facecore_server.responses import Answers, ORJSONResponse
from starlette.requests import Request
from starlette.responses import Response

SCOPE = "public brain_all_scope"  # the SDK uses tokens only when brain_all_scope is granted
_MAX_BUCKETS = 100_000  # addresses tracked at once; past this, buckets older than the window go


class FailureLimiter:
    """Failed attempts per address and per key in the last `window` seconds. Single-threaded
    use: it lives on the event loop."""

    def __init__(self, per_address: int, per_key: int, window: float) -> None:
        self.per_address, self.per_key, self.window = per_address, per_key, window
        self._addresses: dict[str, deque[float]] = {}
        self._keys: dict[str, deque[float]] = {}

    def retry_after(self, address: str, api_key: str | None = None) -> float:
        """Seconds until an attempt from `address` (for `api_key`) is allowed again; 0: now."""
        now = time.monotonic()
        wait = self._wait(self._addresses.get(address), self.per_address, now)
        if api_key is not None:
            wait = max(wait, self._wait(self._keys.get(api_key), self.per_key, now))
        return wait

    def failed(self, address: str, api_key: str | None = None) -> None:
        """Count a failure. Pass `api_key` only for keys that exist, so that made-up keys cannot
        grow the table."""
        now = time.monotonic()
        self._count(self._addresses, address, self.per_address, now)
        if api_key is not None:
            self._count(self._keys, api_key, self.per_key, now)

    def _wait(self, hits: deque[float] | None, limit: int, now: float) -> float:
        if hits is None or len(hits) < limit:
            return 0.0
        return max(0.0, hits[0] + self.window - now)  # the oldest of the last `limit` failures

    def _count(self, table: dict[str, deque[float]], name: str, limit: int, now: float) -> None:
        if name not in table and len(table) >= _MAX_BUCKETS:
            for k in [k for k, v in table.items() if v[-1] + self.window < now]:
                del table[k]
            if len(table) >= _MAX_BUCKETS:  # a flood of fresh addresses: start over
                table.clear()
        table.setdefault(name, deque(maxlen=limit)).append(now)


class Auth:
    def __init__(
        self,
        store: KeyStore,
        required: bool,
        limiter: FailureLimiter,
        default_appid: str | None = None,
    ) -> None:
        self.store, self.required, self.limiter = store, required, limiter
        self.default_appid = default_appid
        # scrypt checks at once (16 MiB and one core each); more wait: a burst of guesses from
        # addresses not yet over their limit cannot take the machine's memory or every core.
        self._slow = anyio.CapacityLimiter(max(1, facecore.hardware_threads()))

    async def caller(self, request: Request) -> str | None:
        """The credentials' appid, or None when the request sent none and none is required.

        Every credential sent is checked, and all must hold: a wrong key pair next to a good
        token is IamFailed, not the token's appid; a token and a key of two appids are
        NoPermission. A bce-auth-v1 signature is a credential too, one this server cannot check
        (it keeps no plain secret): IamFailed in both modes, so a client that means a key never
        lands in the default appid."""
        token = request.query_params.get("access_token")
        api_key = request.headers.get("x-api-key")
        secret = request.headers.get("x-secret-key")
        signed = request.headers.get("authorization", "").lower().startswith("bce-auth-v1/")
        address = request.client.host if request.client else ""
        if signed:
            raise IamFailed(
                "bce-auth-v1 request signing is not supported: the SDK signs requests when "
                "/oauth/2.0/token refused its API key and secret; check them",
            )
        if token is None and api_key is None and secret is None:
            if not self.required:
                return None
            raise TokenInvalid(
                "credentials are required: an access_token query parameter (from "
                "/oauth/2.0/token) or the X-Api-Key and X-Secret-Key headers",
            )
        appids = set()
        if token is not None:
            appids.add(self.check_token(address, token))
        if api_key is not None or secret is not None:
            if not api_key or not secret:
                raise IamFailed("X-Api-Key and X-Secret-Key must be sent together")
            appids.add((await self.check_key(address, api_key, secret)).appid)
        if len(appids) > 1:
            raise NoPermission("the access token and the API key are of two appids")
        return appids.pop()

    async def appid(self, request: Request) -> str:
        """The appid a request acts on: its credential's (a query appid must then be the same),
        else the query's, else the default appid."""
        bound = await self.caller(request)
        appid = request.query_params.get("appid")
        if bound is not None:
            if appid not in (None, "", bound):
                raise NoPermission("the appid in the query is not the credential's")
            return str(bound)
        if appid is None or appid == "":
            if self.default_appid is None:
                raise missing("appid")
            appid = self.default_appid
        return check_appid(appid)

    def check_token(self, address: str, token: str) -> str:
        """The token's appid. A valid token is honoured whatever its address's failures (it
        cannot be guessed, and behind NAT one address is a whole site); an invalid one is a
        failure, refused with RateLimited once the address is over its limit."""
        state, appid = self.store.token(token)
        if state == "valid" and appid is not None:
            return appid
        if state == "expired":
            raise TokenExpired("the access token has expired: get a new one")
        wait = self.wait(address, None)
        if wait:
            raise RateLimited(wait)
        self.limiter.failed(address)
        raise TokenInvalid("the access token is not valid (unknown, malformed or revoked)")

    def wait(self, address: str, api_key: str | None) -> int:
        """Whole seconds until an attempt from `address` (for `api_key`) is allowed; 0: now."""
        return math.ceil(self.limiter.retry_after(address, api_key))

    async def check_key(self, address: str, api_key: str, secret: str) -> KeyInfo:
        """The key when the secret is right; else IamFailed, counted as a failure. A pair this
        process has verified before is honoured at once; any other is refused with RateLimited,
        before its scrypt, while its address or key is over the failure limit."""
        info = self.store.verified(api_key, secret) if secret else None
        if info is not None:
            return info
        wait = self.wait(address, api_key)
        if wait:
            raise RateLimited(wait)
        if secret:
            info = await anyio.to_thread.run_sync(
                self.store.check, api_key, secret, limiter=self._slow
            )
        if info is None:
            self.limiter.failed(address, api_key if self.store.key(api_key) else None)
            raise IamFailed("the API key and secret key were not accepted")
        return info


def token_endpoint(
    auth: Auth, bodies: Bodies, answers: Answers
) -> Callable[[Request], Awaitable[Response]]:
    """GET or POST /oauth/2.0/token?grant_type=client_credentials&client_id=<API key>
    &client_secret=<secret key> (POST may send them as a form): an access token for the key's
    appid, in OAuth 2.0's shapes (RFC 6749 5.1 and 5.2)."""

    async def token(request: Request) -> Response:
        call = answers.call(request, "oauth/token")
        address = request.client.host if request.client else ""

        def oauth(status: int, error: str, description: str, **headers: str) -> Response:
            answers.record(call, error, description, status)
            body = {"error": error, "error_description": description}
            return ORJSONResponse(
                body, status_code=status, headers={**headers, "Cache-Control": "no-store"}
            )

        params = dict(request.query_params)
        if request.method == "POST" and request.headers.get("content-type", "").startswith(
            "application/x-www-form-urlencoded"
        ):
            try:
                with bodies.admit(request, False, 8192) as ticket:
                    form = await read_form(request, await bodies.read(request, ticket), max_files=0)
            except Busy as e:
                return oauth(503, "temporarily_unavailable", str(e), **{"Retry-After": "1"})
            except FaceCoreError as e:  # a body too large, too slow, or not a form
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
            info = await auth.check_key(address, key, secret)
        except RateLimited as e:
            return oauth(429, "invalid_client", str(e), **{"Retry-After": str(e.retry_after)})
        except IamFailed:
            return oauth(401, "invalid_client", "Client authentication failed")
        issued = await anyio.to_thread.run_sync(auth.store.issue, info)
        call.appid = info.appid
        answers.record(call, 0, None, 200)
        return ORJSONResponse(
            {
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.expires_in,
                "scope": SCOPE,
            },
            headers={"Cache-Control": "no-store"},
        )

    return token


def bearer_matches(request: Request, token: str) -> bool:
    given = request.headers.get("authorization", "")
    scheme, _, value = given.partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(
        value.strip().encode(), token.encode()
    )


__all__ = ["SCOPE", "Auth", "FailureLimiter", "bearer_matches", "token_endpoint"]
