"""One suite, two stores: test_routes.py's library routes run again against a server whose library
is in PostgreSQL (`--store postgresql://...`, the session's cluster, tests/pg_cluster.py). The
tests are test_routes.py's own, imported; only the `server` fixture differs. The routes that
touch no library (detect, match) are left to test_routes.py.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import test_routes as base
from live_server import Client, start_server
from test_routes import crowd_tokens, people  # noqa: F401 (fixtures the tests below use)

from tests.pg_cluster import Cluster

SHARED = [
    "test_face_token_works_in_every_route",
    "test_identify_finds_the_person",
    "test_identify_options",
    "test_multi_search_finds_every_face",
    "test_face_add_is_deterministic",
    "test_face_update_replaces_the_faces",
    "test_face_list_and_delete",
    "test_user_copy_and_get",
    "test_user_list_paging",
    "test_user_delete",
    "test_groups",
    "test_every_route_under_every_prefix",
    "test_appids_are_isolated",
    "test_spec_request_examples",
    "test_update_with_empty_user_info_clears_it",
    "test_action_type",
]
for _name in SHARED:
    globals()[_name] = getattr(base, _name)


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, postgres: Cluster) -> Iterator[Client]:
    client = start_server(tmp_path_factory.mktemp("server-pg"), "--store", postgres.database())
    try:
        yield client
    finally:
        client.stop()
