"""The face service under a licence (`--license URL`): its leases from authd, the check a route
makes before its body is read, and the licence's state for /health and /capabilities
(docs/license.md).

Without --license nothing here runs: the server holds no Licensing and its routes check nothing.
With it, the server leases one seat per GPU it runs the models on, or one for its CPU worker
process (the only runner today), before it opens the library, and refuses to start without them.
A route's check is two attribute reads and a clock read: the feature its Op names must be one the
licence sells (else NotLicensed), and a route that runs the models needs the lease to be live or
in its grace period (else LicenseUnreachable or LicenseRefused, by why the lease is missing).
Library reads need neither, so a library stays readable whatever happens to the licence.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from facecore.errors import FaceCoreError, LicenseRefused, LicenseUnreachable, NotLicensed
from facecore_license import document
from facecore_license.client import AuthdClient, AuthdError
from facecore_license.document import LicenseError
from facecore_license.keeper import REFUSED, LeaseKeeper
from facecore_license.protocol import SecretError, read_secret
from facecore_server.settings import Settings

# What a licensed server cannot start without, each with its reason in words.
START_ERRORS = (AuthdError, LicenseError, SecretError)


def seats(devices: Sequence[str]) -> list[str]:
    """The seats this process runs the models on: one per GPU of its backend ("cuda:0", ...), else
    one for this CPU worker process ("cpu")."""
    gpus = [d for d in devices if d.startswith("cuda")]
    return gpus or ["cpu"]


class Licensing:
    def __init__(
        self, settings: Settings, families: Iterable[str], devices: Sequence[str] = ("cpu",)
    ) -> None:
        """Lease the seats from authd (START_ERRORS saying why not), then keep them by
        heartbeat. `families`: the model families this server loads; `devices`: where its
        backend runs them (a seat per GPU)."""
        assert settings.license and settings.license_pubkey and settings.license_secret_file
        client = AuthdClient(settings.license, read_secret(settings.license_secret_file))
        self.keeper = LeaseKeeper(
            client,
            f"{socket.gethostname()}/{os.getpid()}",
            seats(devices),
            document.load_public(settings.license_pubkey),
            settings.license_grace,
            families,
        )
        self.keeper.start()
        self.keeper.heartbeat()

    def gate(self, route: str, feature: str | None, model: bool) -> Callable[[], None] | None:
        """The check of a route before its body is read; None when it has nothing to check."""
        if feature is None and not model:
            return None
        keeper = self.keeper

        def check() -> None:
            if feature is not None and feature not in keeper.features:
                lic = keeper.license
                raise NotLicensed(
                    f"{route} needs a {feature} licence; the licence "
                    f"{lic.id if lic else ''} sells {', '.join(sorted(keeper.features))} "
                    "(docs/license.md)"
                )
            if model and not keeper.allowed():
                raise self.lapsed()

        return check

    def lapsed(self) -> FaceCoreError:
        """The error of a model route while no lease is held past the grace period."""
        k = self.keeper
        kind = LicenseRefused if k.failure == REFUSED else LicenseUnreachable
        why = k.reason or "the lease ran out before a renewal was confirmed"
        return kind(
            f"this server holds no licence lease (grace {k.grace:g} s over): {why}; the models "
            "run again once authd grants one (docs/license.md)"
        )

    def state(self) -> dict[str, Any]:
        return self.keeper.snapshot()

    def close(self) -> None:
        self.keeper.close()
