"""A caller of authd: one signed call at a time over the protocol of protocol.py.

An answer is trusted only when it carries this side's MAC over the path, the status and the body,
and echoes this call's nonce; anything else (no answer, a timeout, a wrong MAC, a stale or
malformed answer) is Unreachable: the caller cannot tell a refusal from an impostor's.
"""

from __future__ import annotations

import http.client
import json
import time
from collections.abc import Callable
from typing import Any
from urllib.parse import urlsplit

from facecore_license import protocol as P


class AuthdError(Exception):
    """No lease from authd; the message says why, in words."""


class Unreachable(AuthdError):
    """No trustworthy answer: authd is down or unreachable, or what answered is not authd with
    this side's secret."""


class Refused(AuthdError):
    """authd answered, authenticated, and said no (`error` is the protocol's name for why)."""

    def __init__(self, error: str, message: str, answer: dict[str, Any]) -> None:
        super().__init__(message)
        self.error, self.answer = error, answer


class UnknownLease(Refused):
    """authd does not know the lease (it restarted, or the lease ran out): acquire again."""


def parse_url(url: str) -> tuple[str, int]:
    """(host, port) of an authd URL, http://host[:port] (port 8301 by default)."""
    parts = urlsplit(url if "://" in url else "http://" + url)
    if parts.scheme != "http" or not parts.hostname or parts.path not in ("", "/"):
        raise ValueError(f"an authd URL is http://host[:port], got {url!r}")
    return parts.hostname, parts.port or P.PORT


class AuthdClient:
    def __init__(
        self,
        url: str,
        secret: bytes,
        timeout: float = 5.0,
        wall: Callable[[], float] = time.time,
    ) -> None:
        """`wall`: the wall clock whose time the calls carry (tests skew it)."""
        self.url = url
        self.host, self.port = parse_url(url)
        self.secret, self.timeout, self.wall = secret, timeout, wall

    def call(self, path: str, **fields: Any) -> dict[str, Any]:
        nonce = P.new_nonce()
        body = json.dumps({**fields, "nonce": nonce, "time": self.wall()}).encode()
        headers = {
            "Content-Type": "application/json",
            P.HEADER: P.request_mac(self.secret, path, body),
        }
        conn = http.client.HTTPConnection(self.host, self.port, timeout=self.timeout)
        try:
            conn.request("POST", path, body=body, headers=headers)
            reply = conn.getresponse()
            status, out, mac = reply.status, reply.read(), reply.getheader(P.HEADER)
        except (OSError, http.client.HTTPException) as e:
            raise Unreachable(f"authd at {self.url} did not answer ({e})") from e
        finally:
            conn.close()
        if not P.same(mac, P.answer_mac(self.secret, path, status, out)):
            raise Unreachable(
                f"the answer from {self.url} is not signed with this side's shared secret: the "
                "two secret files differ, or what answered is not authd"
            )
        try:
            answer = json.loads(out)
            echoed = answer.get("nonce")
        except (ValueError, AttributeError) as e:
            raise Unreachable(f"authd at {self.url} answered something unreadable ({e})") from e
        if echoed != nonce:
            raise Unreachable(f"the answer from {self.url} is not this call's (a replay)")
        if status == 200:
            result: dict[str, Any] = answer
            return result
        error, message = str(answer.get("error")), str(answer.get("message"))
        if error == "unknown_lease":
            raise UnknownLease(error, message, answer)
        raise Refused(error, f"authd at {self.url} refused: {message}", answer)

    def acquire(self, holder: str, seat: str) -> dict[str, Any]:
        return self.call(P.ACQUIRE, holder=holder, seat=seat)

    def renew(self, lease: str) -> dict[str, Any]:
        return self.call(P.RENEW, lease=lease)

    def release(self, lease: str) -> dict[str, Any]:
        return self.call(P.RELEASE, lease=lease)

    def status(self) -> dict[str, Any]:
        return self.call(P.STATUS)
