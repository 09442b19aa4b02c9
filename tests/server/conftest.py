"""The `server` fixture: one live server per test module (see live_server.py)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live_server import Client, start_server, stop_server


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Client]:
    client = start_server(tmp_path_factory.mktemp("server"))
    try:
        yield client
    finally:
        stop_server(client.proc)
