"""The face service's side of the leases: acquire one per seat at start, renew them by heartbeat,
and say, in a fraction of a microsecond a request, whether the models may run.

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
                self._acquire(seat, self.clock())
        except (AuthdError, LicenseError):
            self._release()
            raise
        self._settle([])

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
            self._give_back(seat)

    def _give_back(self, seat: Seat) -> None:
        if seat.lease is not None:
            try:
                self.client.release(seat.lease)
            except AuthdError:
                pass  # authd frees it when the lease runs out
            seat.lease = None

    # -------------------------------------------------------------------------------- heartbeat

    def tick(self) -> None:
        """One heartbeat: renew each seat's lease (acquire it again when authd does not know it),
        then move the deadline. The calls to authd (up to the client's timeout each) run outside
        the lock, so snapshot() (/health, on the event loop) never waits for them; each answer's
        state is set under it."""
        failures: list[AuthdError | LicenseError] = []
        for seat in self.seats:
            sent = self.clock()
            try:
                if seat.lease is not None:
                    try:
                        self._confirm(seat, self.client.renew(seat.lease), sent)
                        continue
                    except UnknownLease:
                        seat.lease = None
                self._acquire(seat, sent)
            except (AuthdError, LicenseError) as e:
                failures.append(e)
        self._settle(failures)

    def _acquire(self, seat: Seat, sent: float) -> None:
        """A new lease for `seat`, held only once the licence it comes with verifies and covers
        this server's models (given back otherwise)."""
        answer = self.client.acquire(self.holder, seat.name)
        seat.lease = str(answer["lease"])
        try:
            lic = document.verify(answer.get("license"), self.public)
            uncovered = lic.uncovered(self.families)
            if uncovered:
                raise LicenseError(
                    f"the licence {lic.id} does not cover the model families "
                    f"{', '.join(uncovered)} that this server loads (it covers "
                    f"{', '.join(lic.models)})"
                )
        except LicenseError:
            self._give_back(seat)
            raise
        with self._lock:
            self.license, self.features = lic, frozenset(lic.features)
        self._confirm(seat, answer, sent)

    def _confirm(self, seat: Seat, answer: dict[str, Any], sent: float) -> None:
        with self._lock:
            self.ttl = float(answer["ttl"])
            self.in_use = int(answer["in_use"])
            seat.confirmed_until = sent + self.ttl

    def _settle(self, failures: list[AuthdError | LicenseError]) -> None:
        """Move the deadline after a round: the shortest confirmed lease plus the grace, or now
        when the licence itself says stop; remember why a lease is missing."""
        ending = [e for e in failures if _ends_licence(e)]
        why = (ending or failures)[-1] if failures else None
        with self._lock:
            if why is None:
                self.failure, self.reason = None, ""
            else:
                self.failure = UNREACHABLE if isinstance(why, Unreachable) else REFUSED
                self.reason = str(why)
            confirmed = min(seat.confirmed_until for seat in self.seats)
            self.deadline = self.clock() if ending else confirmed + self.grace

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


def _ends_licence(e: AuthdError | LicenseError) -> bool:
    """Does this failure end the licence itself (no grace)? Its terms are over, or authd serves a
    licence this server cannot use."""
    return isinstance(e, LicenseError) or (isinstance(e, Refused) and e.error == "out_of_terms")
