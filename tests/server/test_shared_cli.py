"""The `facecore` command line on a shared PostgreSQL library (`--store postgresql://...`, the
session's cluster, tests/pg_cluster.py) while a server instance serves it: `import`, `stats` and
`verify [--repair]` run as one more instance, and the server follows what they write."""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from facecore.store import codec
from live_server import Client, b64, facecore_cli, photos, start_server

from tests.pg_cluster import Cluster

pytestmark = pytest.mark.slow

PEOPLE = ["Aaron_Sorkin", "Abdullah_Gul", "Adam_Sandler"]
APP, GROUP = "app1", "imported"


@pytest.fixture
def database(postgres: Cluster) -> str:
    return postgres.database()


@pytest.fixture
def server(tmp_path: Path, database: str) -> Iterator[Client]:
    (tmp_path / "srv").mkdir()
    client = start_server(tmp_path / "srv", "--store", database)
    try:
        yield client
    finally:
        client.stop()


def test_import_stats_and_verify_on_the_shared_store_beside_a_server(
    tmp_path: Path, database: str, server: Client
) -> None:
    folder = tmp_path / "photos"
    for name in PEOPLE:
        (folder / name).mkdir(parents=True)
        shutil.copy(photos(name)[0], folder / name)
    run = facecore_cli(
        "import", str(folder), "--appid", APP, "--group", GROUP, "--store", database,
        "--data", str(tmp_path / "cli"), "--workers", "1", "--quiet",
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    # The server saw the import's writes: each person identified by another photo.
    for name in PEOPLE:
        body = {"image": b64(photos(name)[1]), "image_type": "BASE64", "group_id_list": GROUP}
        top = server.ok("face/identify", body, APP)["user_list"][0]
        assert top["user_id"] == name and top["score"] > 80
    stats = facecore_cli("stats", "--store", database, "--data", str(tmp_path / "cli"))
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["faces"] == len(PEOPLE) == server.health()["faces"]

    # Damage the database behind every instance's back: a row no face names (a search could
    # return it) and a user record without faces.
    with psycopg.connect(database, autocommit=True) as conn:
        orphan = codec.row_key(APP, GROUP, 999).encode()
        value = conn.execute(
            "SELECT value FROM facecore_library WHERE key = %s",
            (codec.row_key(APP, GROUP, 0).encode(),),
        ).fetchone()
        assert value is not None
        conn.execute("INSERT INTO facecore_library VALUES (%s, %s)", (orphan, value[0]))
        ghost = codec.user_key(APP, GROUP, "ghost").encode()
        conn.execute(
            "INSERT INTO facecore_library VALUES (%s, %s)",
            (ghost, b'{"user_info": "", "ctime": 1}'),
        )
    verify = ["verify", "--store", database, "--data", str(tmp_path / "cli"), "--json"]
    found = facecore_cli(*verify)
    assert found.returncode == 1, found.stderr
    problems = json.loads(found.stdout)["problems"]
    assert problems == {"row_orphan": 1, "user_without_faces": 1}
    repaired = facecore_cli(*verify, "--repair")
    assert repaired.returncode == 0, repaired.stderr
    assert json.loads(facecore_cli(*verify).stdout)["ok"] is True
    # The server answers as before, and lists no ghost.
    listed = server.ok("user/list", {"group_id": GROUP}, APP)["user_id_list"]
    assert sorted(listed) == sorted(PEOPLE)


def test_a_store_that_is_not_postgresql_is_refused(tmp_path: Path) -> None:
    run = facecore_cli("stats", "--store", "mysql://x@y/z", "--data", str(tmp_path))
    assert run.returncode != 0 and "postgresql://" in run.stderr
    keys = facecore_cli("keys", "list", "--store", "mysql://x@y/z", "--data", str(tmp_path))
    assert keys.returncode != 0 and "postgresql://" in keys.stderr


def test_the_servers_store_rocksdb_is_the_embedded_one(tmp_path: Path) -> None:
    """--store rocksdb (the server's default spelled out, as $FACECORE_STORE may be) means the
    embedded store of --data for every command, as it does for the server."""
    for command in (["stats"], ["keys", "list"]):
        run = facecore_cli(*command, "--store", "rocksdb", "--data", str(tmp_path))
        assert run.returncode == 0, (command, run.stderr)
