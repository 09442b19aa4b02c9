"""The face service's side of the leases: acquire one per seat at start, renew them by heartbeat,
and say, in a few nanoseconds a request, whether the models may run.

`deadline` is the monotonic time until which the service may run its models: the end of the
shortest confirmed lease (the time its renewal was sent, plus the lease's ttl) plus the grace
period. While authd is away (unreachable, restarting, not answering with this side's secret, or
out of seats after a restart) the service serves on through the grace; once authd says the
licence itself is over (expired, or not yet valid) or serves a licence that does not verify or
does not cover this server's models, the deadline is now. A lease authd no longer knows (it
restarted) is acquired again at once.

Threading: `tick` runs on the heartbeat thread; `deadline` and `features` are single attributes,
read without a lock by the request path; `snapshot` takes the lock.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from facecore_license import document
from facecore_license.client import AuthdClient, AuthdError, Refused, UnknownLease, Unreachable
from facecore_license.document import License, LicenseError

UNREACHABLE, REFUSED = "unreachable", "refused"  # why the service holds no lease


@dataclass
class Seat:
    name: str  # "gpu0", or "cpu" for a CPU worker process
    lease: str | None = None
    confirmed_until: float = -math.inf  # monotonic end of the lease authd last confirmed


class LeaseKeeper:
    def __init__(
        self,
        client: AuthdClient,
        holder: str,
        seats: Iterable[str],
        public: Ed25519PublicKey,
        grace: float,
        families: Iterable[str],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`holder` names this service to authd ("host/pid"); `seats` what it runs models on;
        `families` the model families it loads (each must be covered); `clock` is monotonic."""
        self.client, self.holder, self.public = client, holder, public
        self.seats = [Seat(name) for name in seats]
        self.grace, self.families, self.clock = grace, sorted(set(families)), clock
        self.deadline = -math.inf
        self.features: frozenset[str] = frozenset()
        self.license: License | None = None
        self.ttl = 0.0
        self.in_use = 0
        self.failure: str | None = None  # UNREACHABLE or REFUSED while a lease is missing
        self.reason = ""  # its words
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -------------------------------------------------------------------------------- start, stop

    def start(self) -> None:
        """Acquire every seat, or give back those acquired and raise AuthdError / LicenseError
        saying why (the service must not start)."""
        try:
            for seat in self.seats:
                sent = self.clock()
                self._granted(seat, self.client.acquire(self.holder, seat.name), sent)
        except (AuthdError, LicenseError):
            self._release()
            raise
        self._settle(ended=False)

    def heartbeat(self) -> None:
        """Renew on a daemon thread, every third of the lease, until close()."""

        def beat() -> None:
            while not self._stop.wait(self.ttl / 3):
                self.tick()

        self._thread = threading.Thread(target=beat, name="license-heartbeat", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop the heartbeat and give the seats back, so authd frees them now."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._release()

    def _release(self) -> None:
        for seat in self.seats:
            if seat.lease is not None:
                try:
                    self.client.release(seat.lease)
                except AuthdError:
                    pass  # authd frees it when the lease runs out
                seat.lease = None

    # -------------------------------------------------------------------------------- heartbeat

    def tick(self) -> None:
        """One heartbeat: renew each seat's lease (acquire it again when authd does not know it),
        then move the deadline."""
        ended = False
        with self._lock:
            self.failure, self.reason = None, ""
            for seat in self.seats:
                sent = self.clock()
                try:
                    if seat.lease is None:
                        raise UnknownLease("unknown_lease", "no lease held", {})
                    answer = self.client.renew(seat.lease)
                except UnknownLease:
                    seat.lease = None
                    try:
                        answer = self.client.acquire(self.holder, seat.name)
                    except AuthdError as e:
                        ended |= self._failed(e)
                        continue
                    try:
                        self._granted(seat, answer, sent)
                    except LicenseError as e:
                        ended |= self._failed(e)
                    continue
                except AuthdError as e:
                    ended |= self._failed(e)
                    continue
                self._confirm(seat, answer, sent)
            self._settle(ended)

    def _granted(self, seat: Seat, answer: dict[str, Any], sent: float) -> None:
        """An acquired lease: check the licence it comes with, then hold it."""
        seat.lease = str(answer["lease"])
        lic = document.verify(answer.get("license"), self.public)
        uncovered = lic.uncovered(self.families)
        if uncovered:
            raise LicenseError(
                f"the licence {lic.id} does not cover the model families {', '.join(uncovered)} "
                f"that this server loads (it covers {', '.join(lic.models)})"
            )
        self.license, self.features = lic, frozenset(lic.features)
        self._confirm(seat, answer, sent)

    def _confirm(self, seat: Seat, answer: dict[str, Any], sent: float) -> None:
        self.ttl = float(answer["ttl"])
        self.in_use = int(answer["in_use"])
        seat.confirmed_until = sent + self.ttl

    def _failed(self, e: AuthdError | LicenseError) -> bool:
        """Record why a seat has no lease; True when the licence itself says stop (no grace)."""
        self.failure = UNREACHABLE if isinstance(e, Unreachable) else REFUSED
        self.reason = str(e)
        return isinstance(e, LicenseError) or (isinstance(e, Refused) and e.error == "out_of_terms")

    def _settle(self, ended: bool) -> None:
        confirmed = min(seat.confirmed_until for seat in self.seats)
        self.deadline = self.clock() if ended else confirmed + self.grace

    # -------------------------------------------------------------------------------- reading

    def allowed(self) -> bool:
        """May the models run now? The request path's check."""
        return self.clock() < self.deadline

    def snapshot(self) -> dict[str, Any]:
        """The licence state for /health and /capabilities."""
        with self._lock:
            now = self.clock()
            confirmed = min(seat.confirmed_until for seat in self.seats)
            state = "lapsed" if now >= self.deadline else "leased" if now < confirmed else "grace"
            lic = self.license
            return {
                "state": state,
                "authd": self.client.url,
                "holder": self.holder,
                "worker_seats": [s.name for s in self.seats],
                "licensee": lic.licensee if lic else None,
                "license_id": lic.id if lic else None,
                "features": sorted(self.features),
                "seats": lic.seats if lic else None,
                "seats_in_use": self.in_use,
                "expiry": None if lic is None or lic.expiry is None else document.iso(lic.expiry),
                "grace_s": self.grace,
                "grace_left_s": round(
                    max(0.0, min(self.grace, self.deadline - max(now, confirmed))), 1
                ),
                "reason": self.reason or None,
            }
