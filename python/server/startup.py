"""What the server opens before it serves, and the one-line reason when it cannot: the licence's
leases (before anything under --data), the face library and the key store (under --data or in the
--store database). facecore-server prints a StartupError's line and exits 2, never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import facecore
from facecore.errors import StoreUnavailable
from facecore.store.keys import STORE_DIR, KeyStore
from facecore.store.kv import shared_url
from facecore.store.library import FaceLibrary
from facecore_server.settings import Settings

if TYPE_CHECKING:
    from facecore_server.licensing import Licensing


class StartupError(Exception):
    """The server cannot start, for a reason one line tells the operator (facecore-server prints
    it and exits 2 instead of a traceback)."""


def open_stores(settings: Settings) -> tuple[FaceLibrary, KeyStore]:
    """The face library and the key store: under --data, or in the --store database (shared
    with other instances); or StartupError saying why not."""
    data = settings.data_dir
    library = None
    shared = shared_url(settings.store) is not None
    try:
        data.mkdir(parents=True, exist_ok=True)
        library_store = keys_store = None
        if shared:
            from facecore.store.postgres import PostgresStore  # psycopg only where it is used

            workers = settings.workers or facecore.hardware_threads()
            library_store = PostgresStore(settings.store, "library", pool_size=workers + 4)
            keys_store = PostgresStore(settings.store, "auth", pool_size=4)
        library = FaceLibrary(
            data,
            token_capacity=settings.token_capacity,
            token_days=settings.token_days,
            sync_writes=settings.sync_writes,
            threads=settings.threads,
            store=library_store,
        )
        return library, KeyStore(data / STORE_DIR, settings.access_token_seconds, keys_store)
    except Exception as e:  # RocksDB raises plain Exception; store_problem names the cause
        if library is not None:
            library.close()
        if shared and isinstance(e, StoreUnavailable):
            raise StartupError(f"the --store database cannot be used: {e}") from e
        raise StartupError(store_problem(data, e)) from e


def store_problem(data: Path, e: Exception) -> str:
    text = str(e)
    if "lock" in text.lower() and ("LOCK" in text or "lock hold" in text):
        return (
            f"the data directory {data} is in use by another FaceCore process (its RocksDB lock "
            "is held): stop that server, or give this one its own --data"
        )
    if isinstance(e, PermissionError) or "Permission denied" in text or "Read-only" in text:
        return f"the data directory {data} is not writable ({text.strip()}): --data must be"
    return f"the data directory {data} cannot be opened: {type(e).__name__}: {text.strip()}"


def lease(settings: Settings, manifest: dict[str, Any], devices: list[str]) -> Licensing:
    """The licence's leases, before anything under --data is opened, or StartupError saying why
    there are none. Imported here: a server without --license loads no licensing code."""
    from facecore_license.document import model_families
    from facecore_server.licensing import START_ERRORS, Licensing

    try:
        return Licensing(settings, model_families(manifest), devices)
    except START_ERRORS as e:
        raise StartupError(f"no licence lease from the authorisation service: {e}") from e
