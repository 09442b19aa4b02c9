"""Live-server fixtures, one server per test module (see live_server.py): `server` (default
models) and `live` (with the liveness models)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live_server import Client, start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield client
    finally:
        client.stop()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, liveness_models: Path) -> Iterator[Client]:
    """A live server with the liveness models installed (tests/conftest.py `liveness_models`)."""
    client = start_server(tmp_path_factory.mktemp("live"), "--models", str(liveness_models))
    try:
        yield client
    finally:
        client.stop()
