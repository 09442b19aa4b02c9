"""Three FaceCore instances over one PostgreSQL library (`--store postgresql://...`, the session's
cluster, tests/pg_cluster.py) behind a real nginx round-robin (tests/balancer.py).

One suite, two stores: test_routes.py's library routes run again here, through the balancer, so
consecutive calls of one test land on different instances (the tests are test_routes.py's own,
imported; only the `server` fixture differs; routes that touch no library are left to it). Then
what a client can name across requests, used across instances: a user added through one and
identified through the others, a face_token, an H5 session code, an API key and its revocation.
Without nginx the routes run against one instance, and the balancer's own test skips.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import test_routes as base
from live_server import Client, create_key, facecore_cli, get_token, lfw, start_server
from test_routes import crowd_tokens, people  # noqa: F401 (fixtures the tests below use)
from test_video_liveness import VIDEO, session, upload

from tests.balancer import Balancer
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
def database(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture(scope="module")
def instances(
    tmp_path_factory: pytest.TempPathFactory, database: str, liveness_models: Path
) -> Iterator[list[Client]]:
    """Three instances over one new database, each with its own --data (its admin socket)."""
    url = database
    home = tmp_path_factory.mktemp("trio")
    started: list[Client] = []
    try:
        for i in range(3):
            (home / f"i{i}").mkdir()
            started.append(
                start_server(home / f"i{i}", "--store", url, "--models", str(liveness_models))
            )
        yield started
    finally:
        for client in started:
            client.stop()


@pytest.fixture(scope="module")
def balancer(instances: list[Client]) -> Iterator[Balancer | None]:
    if Balancer.find() is not None:
        yield None
        return
    b = Balancer.start([c.port for c in instances])
    try:
        yield b
    finally:
        b.stop()


@pytest.fixture(scope="module")
def server(instances: list[Client], balancer: Balancer | None) -> Client:
    """The route tests' server: the balancer (a Client whose port is nginx's), else instance 0."""
    if balancer is None:
        return instances[0]
    first = instances[0]
    return Client(balancer.proc, balancer.port, first.data, first.log)  # type: ignore[arg-type]


def image(path: Path) -> dict[str, str]:
    return base.image(path)


# ---------------------------------------------------------------------------- across instances


def test_the_balancer_spreads_requests_over_every_instance(
    balancer: Balancer | None, instances: list[Client]
) -> None:
    if balancer is None:
        pytest.skip(Balancer.find() or "no balancer")
    before = [c.server_log().count("group/getlist") for c in instances]
    for _ in range(6):
        r = httpx.post(
            balancer.url + "/face-api/v3/group/getlist",
            params={"appid": "spread"},
            json={},
            timeout=30,
        )
        assert r.json()["error_code"] == 0
    after = [c.server_log().count("group/getlist") for c in instances]
    assert all(n > m for n, m in zip(after, before)), (before, after)


def test_a_user_added_through_one_instance_is_identified_through_the_others(
    instances: list[Client],
) -> None:
    a, b, c = instances
    name = "Federico_Trillo"
    added = a.ok("face/add", {**image(lfw(name, 2)), "group_id": "across", "user_id": "ft"})
    for client in (b, c):
        found = client.ok("face/identify", {**image(lfw(name, 3)), "group_id_list": "across"})
        top = found["user_list"][0]
        assert top["user_id"] == "ft" and top["score"] > 80
        assert (
            client.ok("face/getlist", {"group_id": "across", "user_id": "ft"})["face_list"][0][
                "face_token"
            ]
            == added["face_token"]
        )
    c.ok("user/delete", {"group_id": "across", "user_id": "ft"})
    for client in (a, b):
        env = client.post("face/identify", {**image(lfw(name, 3)), "group_id_list": "across"})
        assert env["error_code"] == 222207  # gone everywhere


def test_a_face_token_from_one_instance_works_on_the_others(instances: list[Client]) -> None:
    a, b, c = instances
    detected = a.ok("face/detect", image(lfw("Sachiko_Yamada", 1)))["face_list"][0]
    token = {"image": detected["face_token"], "image_type": "FACE_TOKEN"}
    added = b.ok("face/add", {**token, "group_id": "tokens_across", "user_id": "sy"})
    assert added["face_token"] == detected["face_token"]
    found = c.ok("face/identify", {**token, "group_id_list": "tokens_across"})
    assert found["user_list"][0]["user_id"] == "sy"


def test_a_session_code_from_one_instance_is_used_up_on_every_instance(
    instances: list[Client],
) -> None:
    a, b, c = instances
    s = session(a)["session_id"]
    first = upload(b, VIDEO.read_bytes(), s)
    assert first["err_no"] == 0, first
    again = upload(c, VIDEO.read_bytes(), s)
    assert again["err_no"] == 222209 and "already used" in again["error_detail"]


def test_a_key_revoked_through_one_instance_is_refused_by_the_others(
    instances: list[Client], database: str, tmp_path: Path
) -> None:
    a, b, c = instances
    key = create_key(a.data, "keyed_app")  # through A's admin socket
    token = get_token(b.url, key)  # B knows the key A made
    out = facecore_cli(  # no server on this --data: the CLI opens the database itself
        "keys", "create", "--appid", "other_app", "--data", str(tmp_path), "--store", database
    )
    assert out.returncode == 0, out.stderr
    assert get_token(c.url, json.loads(out.stdout))  # C knows it
    headers = {"X-Api-Key": key["api_key"], "X-Secret-Key": key["secret_key"]}

    def group_list(client: Client, **kw: object) -> dict[str, object]:
        r = httpx.post(f"{client.url}/face-api/v3/group/getlist", json={}, timeout=30, **kw)  # type: ignore[arg-type]
        answer: dict[str, object] = r.json()
        return answer

    assert group_list(c, params={"access_token": token})["error_code"] == 0  # C: B's token
    assert group_list(c, headers=headers)["error_code"] == 0  # C has now verified the pair
    out = facecore_cli("keys", "revoke", key["api_key"], "--data", str(a.data))
    assert out.returncode == 0, out.stderr
    for client in (b, c):
        assert group_list(client, params={"access_token": token})["error_code"] == 110
        assert group_list(client, headers=headers)["error_code"] == 14


def test_instances_report_one_library(instances: list[Client]) -> None:
    """Every instance counts the same faces (each a full replica of the indexes)."""
    counts = {client.health()["faces"] for client in instances}
    assert len(counts) == 1
