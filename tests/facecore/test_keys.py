"""facecore.store.keys: API keys (scrypt at rest), access tokens (random, expiring, bound to an appid,
gone with their key), the admin requests, and `facecore keys` on a store no server holds."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from facecore.errors import InvalidArgument, UnknownId
from facecore.store.keys import (
    API_KEY_CHARS,
    SECRET_CHARS,
    TOKENS_PER_KEY,
    KeyStore,
    administer,
)

from tests.server.live_server import facecore_cli


@pytest.fixture
def store(tmp_path: Path) -> Iterator[KeyStore]:
    s = KeyStore(tmp_path / "auth", token_seconds=3600)
    yield s
    s.close()


def raw_store_bytes(path: Path) -> bytes:
    return b"".join(f.read_bytes() for f in path.iterdir() if f.is_file())


def test_create_and_check(store: KeyStore) -> None:
    info, secret = store.create("app_a", "door 1")
    assert len(info.api_key) == API_KEY_CHARS and len(secret) == SECRET_CHARS
    assert info.appid == "app_a" and info.name == "door 1" and info.revoked is None
    assert store.check(info.api_key, secret) == info
    assert store.verified(info.api_key, secret) == info  # cached after one scrypt
    assert store.check(info.api_key, secret[:-1] + ("a" if secret[-1] != "a" else "b")) is None
    assert store.verified(info.api_key, "wrong") is None
    assert store.check("A" * API_KEY_CHARS, secret) is None  # unknown key
    assert store.check("not a key", secret) is None
    other, other_secret = store.create("app_a")
    assert other.api_key != info.api_key and other_secret != secret
    assert store.check(other.api_key, secret) is None  # secrets are per key


def test_secrets_are_stored_only_as_salted_hashes(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "auth")
    secrets = [s.create("app_a")[1] for _ in range(3)]
    token = s.issue(s.list()[0]).access_token
    records = [json.loads(v) for k, v in s._db.items() if k.startswith(b"a/")]
    s.close()
    disk = raw_store_bytes(tmp_path / "auth")
    for secret in secrets:
        assert secret.encode() not in disk
    assert token.encode() not in disk  # tokens are kept by their SHA-256 only
    assert len({r["salt"] for r in records}) == 3
    assert all(r["kdf"]["n"] >= 2**14 and len(bytes.fromhex(r["hash"])) == 32 for r in records)


def test_keys_persist_and_the_cache_does_not(tmp_path: Path) -> None:
    s = KeyStore(tmp_path / "auth")
    info, secret = s.create("app_b", "x")
    s.close()
    s = KeyStore(tmp_path / "auth")
    assert s.list() == [info]
    assert s.verified(info.api_key, secret) is None  # a new process hashes once again
    assert s.check(info.api_key, secret) == info
    s.close()


def test_bad_appids_and_names(store: KeyStore) -> None:
    for appid in ("", "a/b", "x" * 49, "has space"):
        with pytest.raises(InvalidArgument):
            store.create(appid)
    with pytest.raises(InvalidArgument):
        store.create("app", "\n")
    with pytest.raises(InvalidArgument):
        store.create("app", "n" * 129)
    assert store.list() == []


def test_tokens(store: KeyStore) -> None:
    a, _ = store.create("app_a")
    b, _ = store.create("app_b")
    ta, tb = store.issue(a), store.issue(b)
    assert ta.access_token != tb.access_token and ta.expires_in == 3600
    assert store.token(ta.access_token) == ("valid", "app_a")
    assert store.token(tb.access_token) == ("valid", "app_b")
    assert store.token(ta.access_token[:-1] + "_") == ("invalid", None)
    for garbage in ("", "fc1.", "x" * 47, ta.access_token + "x", "24.abc.2592000.1.2-3"):
        assert store.token(garbage) == ("invalid", None)


def test_tokens_expire(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A token lives exactly the expires_in it announces, whatever the clock's phase: issued at
    x.999 with a 1 s lifetime, it is valid until x+1.999 (int(now) + 1 ended it at x+1)."""
    s = KeyStore(tmp_path / "auth", token_seconds=1)
    info, _ = s.create("app_a")
    clock = [1_800_000_000.999]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    token = s.issue(info)
    assert token.expires_in == 1 and s.token(token.access_token) == ("valid", "app_a")
    clock[0] += 0.998
    assert s.token(token.access_token) == ("valid", "app_a")
    clock[0] += 0.002
    assert s.token(token.access_token) == ("expired", None)
    s.close()


def test_revoking_a_key_kills_its_tokens(store: KeyStore) -> None:
    a, secret = store.create("app_a")
    b, _ = store.create("app_a")
    tokens = [store.issue(a).access_token for _ in range(3)]
    kept = store.issue(b).access_token
    assert store.revoke(a.api_key) == 3
    assert all(store.token(t) == ("invalid", None) for t in tokens)
    assert store.token(kept) == ("valid", "app_a")
    assert store.check(a.api_key, secret) is None
    assert store.verified(a.api_key, secret) is None
    assert store.key(a.api_key).revoked is not None
    assert store.revoke(a.api_key) == 0  # twice is harmless
    with pytest.raises(UnknownId):
        store.issue(a)
    with pytest.raises(UnknownId):
        store.revoke("B" * API_KEY_CHARS)


def test_tokens_per_key_are_bounded(store: KeyStore) -> None:
    info, _ = store.create("app_a")
    tokens = [store.issue(info).access_token for _ in range(TOKENS_PER_KEY + 5)]
    states = [store.token(t)[0] for t in tokens]
    assert states == ["invalid"] * 5 + ["valid"] * TOKENS_PER_KEY  # the oldest went first
    assert sum(1 for _ in store._prefix(b"t/")) == TOKENS_PER_KEY


def test_administer(store: KeyStore) -> None:
    made = administer(store, {"op": "create", "appid": "app_a", "name": "n"})
    assert made["ok"] and len(made["result"]["secret_key"]) == SECRET_CHARS
    key = made["result"]["api_key"]
    listed = administer(store, {"op": "list"})
    assert listed == {
        "ok": True,
        "result": [{k: v for k, v in made["result"].items() if k != "secret_key"}],
    }
    assert administer(store, {"op": "list", "appid": "app_b"}) == {"ok": True, "result": []}
    assert administer(store, {"op": "revoke", "api_key": key})["ok"]
    assert not administer(store, {"op": "revoke", "api_key": "nope"})["ok"]
    assert not administer(store, {"op": "create", "appid": "bad/appid"})["ok"]
    assert not administer(store, {"op": "drop"})["ok"]


def test_cli_without_a_server(tmp_path: Path) -> None:
    data = str(tmp_path / "data")
    made = facecore_cli("keys", "create", "--appid", "app_a", "--name", "gate", "--data", data)
    assert made.returncode == 0, made.stderr
    key = json.loads(made.stdout)
    assert key["appid"] == "app_a" and len(key["secret_key"]) == SECRET_CHARS
    assert "only this once" in made.stderr
    listed = facecore_cli("keys", "list", "--data", data)
    assert [json.loads(line) for line in listed.stdout.splitlines()] == [
        {k: v for k, v in key.items() if k != "secret_key"}
    ]
    assert key["secret_key"] not in listed.stdout
    assert facecore_cli("keys", "revoke", key["api_key"], "--data", data).returncode == 0
    s = KeyStore(tmp_path / "data" / "auth")
    assert s.check(key["api_key"], key["secret_key"]) is None
    s.close()
    bad = facecore_cli("keys", "revoke", "nope", "--data", data)
    assert bad.returncode == 1 and "no key" in bad.stderr
    bad = facecore_cli("keys", "create", "--appid", "a/b", "--data", data)
    assert bad.returncode == 1 and "appid" in bad.stderr


def test_cli_when_the_store_is_held(tmp_path: Path) -> None:
    """Another process holds the store and no admin socket answers: a clear error, no damage."""
    held = KeyStore(tmp_path / "data" / "auth")
    try:
        out = facecore_cli("keys", "list", "--data", str(tmp_path / "data"))
        assert out.returncode != 0
        assert "cannot open the key store" in out.stderr and "admin socket" in out.stderr
    finally:
        held.close()
