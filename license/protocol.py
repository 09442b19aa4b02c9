"""authd's wire protocol, shared by the service (authd.py) and its callers (client.py).

HTTP/1.1 and JSON. Every call is a POST whose body carries the caller's wall-clock `time` (Unix
seconds) and a fresh random `nonce`; the `X-FaceCore-Auth` header is the HMAC-SHA256, under the
shared secret, of a label, the path and the body. Every answer (errors too) echoes the `nonce`,
carries authd's `time`, and is MACed the same way over another label, the path, the HTTP status
and the body. So each side proves it holds the secret (mutual authentication), an answer belongs
to the request it answers, and a recorded request cannot be played again: authd refuses a `time`
further than the skew tolerance from its own clock and a nonce it has seen within it.

    POST /v1/acquire {holder, seat}  -> 200 {lease, ttl, seats, in_use, license}
    POST /v1/renew   {lease}         -> 200 {lease, ttl, seats, in_use}   404 unknown_lease
    POST /v1/release {lease}         -> 200 {released}
    POST /v1/status  {}              -> 200 {license, seats, in_use, leases}
    GET  /health                     -> 200 {"status": "ok"}   (unauthenticated, says nothing)

`license` is the licence file's data as authd holds it (the caller verifies its signature itself).
Errors are {error, message} with: 401 unauthenticated (no or wrong MAC), replayed (a nonce seen
before), clock_skew (`time` beyond the tolerance); 400 bad_request; 409 seats_full (every seat
leased; `holders` says to whom); 403 out_of_terms (the licence expired or is not yet valid); 404
unknown_lease (authd restarted, or the lease ran out: acquire again). docs/license.md has the
timings and examples.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from pathlib import Path

PORT = 8301
HEADER = "X-FaceCore-Auth"
ACQUIRE, RENEW, RELEASE, STATUS, HEALTH = (
    "/v1/acquire",
    "/v1/renew",
    "/v1/release",
    "/v1/status",
    "/health",
)
LEASE_SECONDS = 60.0  # a lease not renewed for this long frees its seat
MAX_SKEW = 300.0  # seconds two clocks may differ before authd refuses a call
MIN_SECRET_BYTES = 16
_REQUEST, _ANSWER = b"facecore-authd/1 request\n", b"facecore-authd/1 answer\n"


class SecretError(Exception):
    """The shared secret file is missing, unreadable or too short."""


def new_secret() -> str:
    """A new shared secret, as the secret file holds it: 64 hex characters (256 bits)."""
    return secrets.token_hex(32)


def read_secret(path: Path) -> bytes:
    try:
        text = path.read_text().strip()
    except OSError as e:
        raise SecretError(f"cannot read the shared secret {path}: {e.strerror}") from e
    if len(text.encode()) < 2 * MIN_SECRET_BYTES:
        raise SecretError(
            f"the shared secret in {path} is too short: make one with `facecore license secret`"
        )
    return text.encode()


def request_mac(secret: bytes, path: str, body: bytes) -> str:
    return hmac.new(secret, _REQUEST + path.encode() + b"\n" + body, hashlib.sha256).hexdigest()


def answer_mac(secret: bytes, path: str, status: int, body: bytes) -> str:
    msg = _ANSWER + f"{path}\n{status}\n".encode() + body
    return hmac.new(secret, msg, hashlib.sha256).hexdigest()


def same(given: str | None, expected: str) -> bool:
    return given is not None and hmac.compare_digest(given.encode(), expected.encode())


def new_nonce() -> str:
    return secrets.token_hex(16)
