"""Licensing fixtures: `vendor` (a key pair and a shared secret made for the module, never
committed). The launchers (authd, the face server) are tests/server/live_server.py's."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "server"))  # live_server

from live_server import Vendor


@pytest.fixture(scope="module")
def vendor(tmp_path_factory: pytest.TempPathFactory) -> Vendor:
    return Vendor(tmp_path_factory.mktemp("vendor"))
