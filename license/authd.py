"""authd, the authorisation service (`facecore license serve`): holds one licence on the machine it
was issued for and leases its seats to face services, over the protocol of protocol.py.

It refuses to start when the licence's signature does not verify with the vendor's public key, when
this machine's fingerprint is not the licence's (a copied licence), or when the licence is out of
its terms. Leases live in memory: after a restart every service finds its lease unknown at its next
heartbeat and acquires again, so the seats come back within a heartbeat (a third of the lease).

Threading: the HTTP server runs a thread per connection; LeaseBook and NonceCache take a lock.
Time: leases run on the monotonic clock, terms and the skew check on the wall clock, both injected.
"""

from __future__ import annotations

import json
import logging
import secrets
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from facecore_license import document, fingerprint
from facecore_license import protocol as P
from facecore_license.document import License, LicenseError

log = logging.getLogger("facecore.authd")
MAX_BODY = 64 * 1024


class Refusal(Exception):
    """An answer other than 200: HTTP status, protocol error name, message, extra fields."""

    def __init__(self, status: int, error: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.error, self.extra = status, error, extra


@dataclass
class Lease:
    id: str
    holder: str  # the face service: "host/pid"
    seat: str  # what it runs the models on: "gpu0", or "cpu" for a CPU worker process
    expires: float  # monotonic


class LeaseBook:
    """The licence's seats and the leases on them."""

    def __init__(
        self,
        lic: License,
        doc: dict[str, Any],
        ttl: float = P.LEASE_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.license, self.doc, self.ttl = lic, doc, ttl
        self.clock, self.wall = clock, wall
        self._leases: dict[str, Lease] = {}
        self._lock = threading.Lock()

    def _in_force(self) -> None:
        why = self.license.out_of_terms(self.wall())
        if why:
            raise Refusal(403, "out_of_terms", why)

    def _expire(self) -> None:
        now = self.clock()
        for lease in [x for x in self._leases.values() if x.expires <= now]:
            log.info("lease of %s %s ran out", lease.holder, lease.seat)
            del self._leases[lease.id]

    def _granted(self, lease: Lease) -> dict[str, Any]:
        return {
            "lease": lease.id,
            "ttl": self.ttl,
            "seats": self.license.seats,
            "in_use": len(self._leases),
        }

    def acquire(self, holder: str, seat: str) -> dict[str, Any]:
        """A lease of one seat for `holder`'s `seat`; the same pair asking again (an answer it
        lost) gets a new lease on the same seat, not a second seat."""
        with self._lock:
            self._in_force()
            self._expire()
            for old in [x for x in self._leases.values() if (x.holder, x.seat) == (holder, seat)]:
                del self._leases[old.id]
            if len(self._leases) >= self.license.seats:
                holders = sorted(f"{x.holder} {x.seat}" for x in self._leases.values())
                raise Refusal(
                    409,
                    "seats_full",
                    f"the licence {self.license.id} has {self.license.seats} seat(s), all leased "
                    f"(to {', '.join(holders)}); {holder} {seat} gets none",
                    seats=self.license.seats,
                    holders=holders,
                )
            lease = Lease(secrets.token_hex(16), holder, seat, self.clock() + self.ttl)
            self._leases[lease.id] = lease
            log.info(
                "leased a seat to %s %s (%d of %d)",
                holder,
                seat,
                len(self._leases),
                self.license.seats,
            )
            return {**self._granted(lease), "license": self.doc}

    def renew(self, lease_id: str) -> dict[str, Any]:
        with self._lock:
            self._in_force()
            self._expire()
            lease = self._leases.get(lease_id)
            if lease is None:
                raise Refusal(
                    404, "unknown_lease", "no such lease (authd restarted, or it ran out)"
                )
            lease.expires = self.clock() + self.ttl
            return self._granted(lease)

    def release(self, lease_id: str) -> dict[str, Any]:
        with self._lock:
            lease = self._leases.pop(lease_id, None)
            if lease is not None:
                log.info("%s %s gave its seat back", lease.holder, lease.seat)
            return {"released": lease is not None}

    def status(self) -> dict[str, Any]:
        with self._lock:
            self._expire()
            now = self.clock()
            return {
                "license": self.doc,
                "seats": self.license.seats,
                "in_use": len(self._leases),
                "leases": [
                    {"holder": x.holder, "seat": x.seat, "expires_in": round(x.expires - now, 3)}
                    for x in sorted(self._leases.values(), key=lambda x: (x.holder, x.seat))
                ],
                "out_of_terms": self.license.out_of_terms(self.wall()),
            }


class NonceCache:
    """Nonces of the last `window` seconds (wall clock): a second use is a replay."""

    def __init__(self, window: float) -> None:
        self.window = window
        self._seen: dict[str, float] = {}
        self._lock = threading.Lock()

    def first_use(self, nonce: str, now: float) -> bool:
        with self._lock:
            if len(self._seen) > 1024:
                for n in [n for n, t in self._seen.items() if t < now - self.window]:
                    del self._seen[n]
            if nonce in self._seen:
                return False
            self._seen[nonce] = now
            return True


class Authd:
    """The protocol over a LeaseBook: authenticate, check the clock and the nonce, dispatch."""

    def __init__(self, book: LeaseBook, secret: bytes, max_skew: float = P.MAX_SKEW) -> None:
        self.book, self.secret, self.max_skew = book, secret, max_skew
        self.nonces = NonceCache(2 * max_skew)

    def handle(self, path: str, body: bytes, mac: str | None) -> tuple[int, bytes, str]:
        """(status, answer body, answer MAC) for a POST of `body` to `path`."""
        nonce = None
        try:
            if not P.same(mac, P.request_mac(self.secret, path, body)):
                raise Refusal(
                    401,
                    "unauthenticated",
                    f"the request's {P.HEADER} is missing or wrong: the caller's shared secret "
                    "is not this authd's",
                )
            try:
                call = json.loads(body)
                nonce, sent = str(call["nonce"]), float(call["time"])
            except (ValueError, KeyError, TypeError) as e:
                raise Refusal(400, "bad_request", f"not a protocol request: {e}") from e
            now = self.book.wall()
            if abs(now - sent) > self.max_skew:
                raise Refusal(
                    401,
                    "clock_skew",
                    f"the caller's clock is {sent - now:+.0f} s from authd's, beyond the "
                    f"{self.max_skew:g} s tolerance: synchronise the clocks (NTP)",
                    skew=round(sent - now, 3),
                )
            if not self.nonces.first_use(nonce, now):
                raise Refusal(401, "replayed", "this request was seen before (a replay)")
            status, answer = 200, self._dispatch(path, call)
        except Refusal as r:
            if r.status != 404:
                log.warning("%s refused: %s", path, r)
            status, answer = r.status, {"error": r.error, "message": str(r), **r.extra}
        answer.update(nonce=nonce, time=self.book.wall())
        out = json.dumps(answer).encode()
        return status, out, P.answer_mac(self.secret, path, status, out)

    def _dispatch(self, path: str, call: dict[str, Any]) -> dict[str, Any]:
        try:
            if path == P.ACQUIRE:
                return self.book.acquire(_text(call, "holder"), _text(call, "seat"))
            if path == P.RENEW:
                return self.book.renew(_text(call, "lease"))
            if path == P.RELEASE:
                return self.book.release(_text(call, "lease"))
            if path == P.STATUS:
                return self.book.status()
        except KeyError as e:
            raise Refusal(400, "bad_request", f"{e.args[0]} is missing or not a string") from e
        raise Refusal(404, "bad_request", f"no such call: {path}")


def _text(call: dict[str, Any], name: str) -> str:
    value = call.get(name)
    if not isinstance(value, str) or not 0 < len(value) <= 256:
        raise KeyError(name)
    return value


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def do_GET(self) -> None:
        if self.path == P.HEALTH:
            self._send(200, b'{"status":"ok"}', None)
        else:
            self._send(404, b'{"error":"bad_request","message":"no such path"}', None)

    def do_POST(self) -> None:
        try:
            length = int(self.headers.get("Content-Length", ""))
        except ValueError:
            length = -1
        if not 0 <= length <= MAX_BODY:
            self.close_connection = True
            self._send(400, b'{"error":"bad_request","message":"bad Content-Length"}', None)
            return
        body = self.rfile.read(length)
        status, out, mac = self.server.authd.handle(self.path, body, self.headers.get(P.HEADER))
        self._send(status, out, mac)

    def _send(self, status: int, body: bytes, mac: str | None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        if mac is not None:
            self.send_header(P.HEADER, mac)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s " + format, self.address_string(), *args)


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], authd: Authd) -> None:
        super().__init__(address, _Handler)
        self.authd = authd


def prepare(
    license_path: Path,
    pubkey_path: Path,
    secret_path: Path,
    ttl: float = P.LEASE_SECONDS,
    max_skew: float = P.MAX_SKEW,
) -> Authd:
    """authd for this machine, or LicenseError / SecretError / NoHardwareIds saying why not."""
    lic, doc = document.read(license_path, document.load_public(pubkey_path))
    here = fingerprint.collect()
    if here.digest != lic.fingerprint:
        kinds = ", ".join(sorted({k for k, _ in here.parts}))
        raise LicenseError(
            f"the licence {lic.id} is for the machine {lic.fingerprint}, and this machine's "
            f"fingerprint is {here.digest} (from {kinds}; `facecore license fingerprint` shows "
            "them): a licence serves only on the machine it was issued for"
        )
    why = lic.out_of_terms(time.time())
    if why:
        raise LicenseError(why)
    return Authd(LeaseBook(lic, doc, ttl), P.read_secret(secret_path), max_skew)


def http_server(authd: Authd, host: str, port: int) -> ThreadingHTTPServer:
    """authd's HTTP server, bound, not yet serving (`serve_forever` on any thread)."""
    return _Server((host, port), authd)


def serve(authd: Authd, host: str = "0.0.0.0", port: int = P.PORT) -> None:
    """Serve until SIGTERM or SIGINT (on the main thread)."""
    server = http_server(authd, host, port)
    lic = authd.book.license
    log.info(
        "authd on %s:%d: licence %s for %s, %d seats, features %s, expiry %s",
        host,
        port,
        lic.id,
        lic.licensee,
        lic.seats,
        ",".join(lic.features),
        "never" if lic.expiry is None else document.iso(lic.expiry),
    )

    def stop(*_: object) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    try:
        server.serve_forever(poll_interval=0.2)
    finally:
        server.server_close()
