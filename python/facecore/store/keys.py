"""API keys and access tokens: who may act on which appid.

A key is an (API key, secret key) pair bound to one appid, as in Baidu's console. The API key is
public (it names the key); the secret is printed once by `facecore keys create` and stored only as
a salted scrypt hash. A client trades the pair for an access token at /oauth/2.0/token; the token is
random, expires (30 days by default) and acts on its key's appid only. Revoking a key removes its
tokens.

The store is its own RocksDB under `{data}/auth`, apart from the face library, so that key changes
never invalidate the library's index snapshot. A running server holds the store's lock: while it
runs, `facecore keys` talks to it over the admin socket `{data}/admin.sock` (facecore_server.admin).
With a shared store (`--store postgresql://...`) the keys are in the database's facecore_auth
table, so a key made, used or revoked through one instance is so for every instance: each reads
a key's record from the database whenever it checks one (a revocation counts at once), and a
token's record whenever it is presented.

Key layout (all UTF-8):
    a/{api_key}                          key: JSON {appid, name, created, revoked, salt, hash, kdf}
    t/{sha256(token)}                    token: JSON {key, appid, expires}
    x/{api_key}/{issued_ns:016x}/{sha256} the key's tokens, oldest first: expiry (8 bytes, for pruning)
Tokens are stored by their SHA-256 only: they carry 256 random bits, so a fast hash is enough, and
a copy of the store cannot be replayed against the server.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
import secrets
import socket
import string
import struct
import threading
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Literal

from facecore.errors import FaceCoreError, InvalidArgument, UnknownId
from facecore.store.ids import check_appid
from facecore.store.kv import Store, WriteBatch, scan_prefix
from facecore.store.rocks import RocksStore

ALPHABET = string.ascii_letters + string.digits
API_KEY_CHARS = 24  # Baidu's lengths: 24 and 32 characters of [A-Za-z0-9] (143 and 190 bits)
SECRET_CHARS = 32
TOKEN_PREFIX = "fc1."
TOKEN_DAYS = 30
TOKENS_PER_KEY = 64  # live tokens kept per key; issuing more drops the oldest
# scrypt: 16 MiB and about 90 ms a check on one 2020s server core. The secrets are random, so the
# hash only has to make a stolen store useless; the parameters are stored with each hash.
KDF = {"n": 2**14, "r": 8, "p": 1}
_API_KEY = re.compile(rf"[A-Za-z0-9]{{{API_KEY_CHARS}}}")  # fullmatch
_TOKEN = re.compile(rf"{re.escape(TOKEN_PREFIX)}[A-Za-z0-9_-]{{43}}")  # fullmatch
_NAME_MAX = 128


@dataclass(frozen=True)
class KeyInfo:
    """What may be shown about a key: never the secret, never its hash."""

    api_key: str
    appid: str
    name: str
    created: int
    revoked: int | None


@dataclass(frozen=True)
class Token:
    access_token: str
    appid: str
    expires_in: int


TokenState = Literal["valid", "expired", "invalid"]


def _random(chars: int) -> str:
    return "".join(secrets.choice(ALPHABET) for _ in range(chars))


def _scrypt(secret: str, salt: bytes, kdf: dict[str, int]) -> bytes:
    return hashlib.scrypt(
        secret.encode(), salt=salt, n=kdf["n"], r=kdf["r"], p=kdf["p"], maxmem=64 << 20, dklen=32
    )


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class KeyStore:
    """Keys and tokens under `path` (created when missing), or in `store` (a shared one: every
    instance sees every key and token). Thread-safe; an embedded store: one process at a time."""

    def __init__(
        self, path: str | Path, token_seconds: int = TOKEN_DAYS * 86400, store: Store | None = None
    ) -> None:
        if token_seconds < 1:
            raise InvalidArgument(f"token_seconds must be >= 1, got {token_seconds}")
        self.path = Path(path)
        self.token_seconds = token_seconds
        if store is None:
            self.path.mkdir(parents=True, exist_ok=True)
            # Keys and revocations are rare and must survive a power cut: each write fsynced.
            store = RocksStore(self.path, sync_writes=True)
        self._store = store
        self._lock = threading.Lock()
        # api_key -> record: all of them (an embedded store is only ever changed here), or a
        # shared store's records as last read (every check reads its key's record again).
        self._keys: dict[str, dict[str, object]] = {}
        for key, value in self._prefix(b"a/"):
            self._keys[key[2:].decode()] = json.loads(value)
        # api_key -> HMAC of its secret under a per-process key, set after one scrypt check, so
        # that X-Api-Key requests and repeated token requests cost microseconds, not 90 ms.
        self._pepper = secrets.token_bytes(32)
        self._verified: dict[str, bytes] = {}
        # One scrypt for unknown keys too, so that timing does not tell which keys exist.
        self._dummy_salt = secrets.token_bytes(16)

    def close(self) -> None:
        self._store.close()

    @property
    def _db(self) -> Any:
        """The embedded store's RocksDB handle (tests look at the records)."""
        if isinstance(self._store, RocksStore):
            return self._store.db
        raise AttributeError(f"{self._store.describe()} has no RocksDB handle")

    def checkpoint(self, path: str | Path) -> None:
        """An online, consistent copy of the store in `path` (which must not exist), through
        RocksDB's checkpoint (facecore.store.backup)."""
        self._store.checkpoint(path)

    def _record(self, api_key: object) -> dict[str, object] | None:
        """A key's record: a shared store's as it is now in the database, else the cached one."""
        if not isinstance(api_key, str):
            return None
        if not self._store.shared:
            return self._keys.get(api_key)
        raw = self._store.get(f"a/{api_key}".encode())
        if raw is None:
            self._keys.pop(api_key, None)
            return None
        record: dict[str, object] = json.loads(raw)
        self._keys[api_key] = record
        return record

    # ------------------------------------------------------------------ keys

    def create(self, appid: str, name: str = "") -> tuple[KeyInfo, str]:
        """A new key for `appid`: its info and the secret (which is not kept)."""
        try:
            appid = check_appid(appid)
        except FaceCoreError as e:
            raise InvalidArgument(str(e)) from None
        if not isinstance(name, str) or len(name) > _NAME_MAX or not name.isprintable():
            raise InvalidArgument(f"name must be at most {_NAME_MAX} printable characters")
        secret = _random(SECRET_CHARS)
        salt = secrets.token_bytes(16)
        record: dict[str, object] = {
            "appid": appid,
            "name": name,
            "created": int(time.time()),
            "revoked": None,
            "salt": salt.hex(),
            "hash": _scrypt(secret, salt, KDF).hex(),
            "kdf": dict(KDF),
        }
        with self._lock:
            api_key = _random(API_KEY_CHARS)
            while self._record(api_key) is not None:  # 143 random bits: never, in practice
                api_key = _random(API_KEY_CHARS)
            batch = WriteBatch()
            batch.put(f"a/{api_key}".encode(), json.dumps(record).encode())
            self._store.write(batch)
            self._keys[api_key] = record
        return self._info(api_key, record), secret

    def list(self, appid: str | None = None) -> list[KeyInfo]:
        """Every key (of one appid), oldest first."""
        if self._store.shared:
            self._keys = {k[2:].decode(): json.loads(v) for k, v in self._prefix(b"a/")}
        out = [
            self._info(k, r)
            for k, r in list(self._keys.items())
            if appid is None or r["appid"] == appid
        ]
        return sorted(out, key=lambda i: (i.created, i.api_key))

    def revoke(self, api_key: str) -> int:
        """Revoke a key and delete its tokens; the number of tokens deleted. Revoking twice is
        harmless (0 the second time)."""
        with self._lock, self._store.locked([f"a/{api_key}"]):
            record = self._record(api_key)
            if record is None:
                raise UnknownId(f"no key {api_key!r}")
            batch = WriteBatch()
            removed = self._drop_tokens(api_key, batch, keep=0, now=None)
            if record["revoked"] is None:
                record = {**record, "revoked": int(time.time())}
                batch.put(f"a/{api_key}".encode(), json.dumps(record).encode())
            self._store.write(batch)
            self._keys[api_key] = record
            self._verified.pop(api_key, None)
        return removed

    def key(self, api_key: str) -> KeyInfo | None:
        record = self._record(api_key)
        return None if record is None else self._info(api_key, record)

    def verified(self, api_key: str, secret: str) -> KeyInfo | None:
        """The key's info when this pair was checked before (no scrypt); else None."""
        known = self._verified.get(api_key) if isinstance(api_key, str) else None
        if known is None:
            return None
        mac = hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()
        if not hmac.compare_digest(known, mac):
            return None
        record = self._record(api_key)  # a shared store: revoked by another instance, maybe
        if record is None or record["revoked"] is not None:
            return None
        return self._info(api_key, record)

    def check(self, api_key: str, secret: str) -> KeyInfo | None:
        """The key's info when `secret` is its secret and it is not revoked; else None. The
        first success costs one scrypt, later ones an HMAC (`verified`); every failure costs a
        scrypt, for unknown keys too, so that timing does not tell which keys exist."""
        known = self.verified(api_key, secret)
        if known is not None:
            return known
        record = self._record(api_key) if _API_KEY.fullmatch(api_key or "") else None
        if record is None or record["revoked"] is not None:
            _scrypt(secret, self._dummy_salt, KDF)
            return None
        kdf = record["kdf"]
        assert isinstance(kdf, dict)
        wanted = bytes.fromhex(str(record["hash"]))
        if not hmac.compare_digest(
            _scrypt(secret, bytes.fromhex(str(record["salt"])), kdf), wanted
        ):
            return None
        mac = hmac.new(self._pepper, secret.encode(), hashlib.sha256).digest()
        with self._lock:
            now = self._record(api_key)
            if now is not None and now["revoked"] is None:  # not revoked while we hashed
                self._verified[api_key] = mac
        return self._info(api_key, record)

    # ------------------------------------------------------------------ tokens

    def issue(self, key: KeyInfo) -> Token:
        """A new access token for a key that `check` accepted."""
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        now = time.time()
        # Exact: a token lives the expires_in it announces. (int(now) + lifetime made it up to a
        # second shorter, so a 1 s token issued just before a second boundary was born expired.)
        expires = now + self.token_seconds
        digest = _digest(token)
        # The key's lock, also in a shared store: a revocation on another instance either comes
        # first (no token) or removes this one too.
        with self._lock, self._store.locked([f"a/{key.api_key}"]):
            record = self._record(key.api_key)
            if record is None or record["revoked"] is not None:
                raise UnknownId(f"key {key.api_key} was revoked")
            batch = WriteBatch()
            self._drop_tokens(key.api_key, batch, keep=TOKENS_PER_KEY - 1, now=int(now))
            value = {"key": key.api_key, "appid": key.appid, "expires": expires}
            batch.put(f"t/{digest}".encode(), json.dumps(value).encode())
            batch.put(
                f"x/{key.api_key}/{time.time_ns():016x}/{digest}".encode(),
                struct.pack("<q", math.ceil(expires)),  # whole seconds: only for pruning
            )
            self._store.write(batch)
        return Token(token, key.appid, self.token_seconds)

    def token(self, token: str) -> tuple[TokenState, str | None]:
        """("valid", appid), ("expired", None) or ("invalid", None): unknown, malformed, or its
        key revoked."""
        if not isinstance(token, str) or not _TOKEN.fullmatch(token):
            return "invalid", None
        raw = self._store.get(f"t/{_digest(token)}".encode())
        if raw is None:
            return "invalid", None
        value = json.loads(raw)
        # Revoking deletes the key's tokens, so a token found is not revoked but by a race; an
        # embedded store checks its cached record, a shared one need not read it again.
        record = self._keys.get(value["key"]) if not self._store.shared else {"revoked": None}
        if record is None or record["revoked"] is not None:
            return "invalid", None
        if value["expires"] <= time.time():
            return "expired", None
        return "valid", str(value["appid"])

    def _drop_tokens(self, api_key: str, batch: WriteBatch, keep: int, now: int | None) -> int:
        """Queue the deletion of the key's tokens: all but the `keep` newest, and (when `now` is
        given) those expired for more than a day; a day-old expired token still answers
        "expired" rather than "invalid"."""
        entries = list(self._prefix(f"x/{api_key}/".encode()))
        cut = max(0, len(entries) - keep)
        drop = [k for k, _ in entries[:cut]]
        if now is not None:
            drop += [k for k, v in entries[cut:] if struct.unpack("<q", v)[0] < now - 86400]
        for k in drop:
            batch.delete(k)
            batch.delete(b"t/" + k.split(b"/")[3])
        return len(drop)

    def _prefix(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        return scan_prefix(self._store, prefix)

    @staticmethod
    def _info(api_key: str, record: dict[str, object]) -> KeyInfo:
        revoked = record["revoked"]
        return KeyInfo(
            api_key,
            str(record["appid"]),
            str(record["name"]),
            int(str(record["created"])),
            None if revoked is None else int(str(revoked)),
        )


# ---------------------------------------------------------------------------- administration
# `facecore keys` sends one of these requests, as one JSON line, to a running server's admin
# socket; when no server runs it opens the store itself and calls `administer` directly.

ADMIN_SOCKET = "admin.sock"  # in the data directory, mode 0600
STORE_DIR = "auth"  # the KeyStore's directory in the data directory


def administer(store: KeyStore, request: dict[str, object]) -> dict[str, object]:
    """{"op": "create", "appid", "name"} | {"op": "list", "appid"?} | {"op": "revoke", "api_key"}
    -> {"ok": true, "result": ...} or {"ok": false, "error": "..."}."""
    op = request.get("op")
    try:
        if op == "create":
            info, secret = store.create(str(request.get("appid", "")), str(request.get("name", "")))
            return {"ok": True, "result": {**asdict(info), "secret_key": secret}}
        if op == "list":
            appid = request.get("appid")
            keys = store.list(None if appid is None else str(appid))
            return {"ok": True, "result": [asdict(k) for k in keys]}
        if op == "revoke":
            api_key = str(request.get("api_key", ""))
            removed = store.revoke(api_key)
            return {"ok": True, "result": {"api_key": api_key, "tokens_removed": removed}}
    except (InvalidArgument, UnknownId) as e:
        return {"ok": False, "error": str(e)}
    return {"ok": False, "error": f"unknown op {op!r}"}


def admin_call(
    socket_path: str | Path, request: dict[str, object], timeout: float = 30
) -> dict[str, Any]:
    """Send one request to a server's admin socket. Raises OSError when no server listens."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(str(socket_path))
        s.sendall(json.dumps(request).encode() + b"\n")
        chunks: list[bytes] = []
        while not chunks or not chunks[-1].endswith(b"\n"):
            chunk = s.recv(65536)
            if not chunk:
                break
            chunks.append(chunk)
    answer: dict[str, Any] = json.loads(b"".join(chunks))
    return answer


__all__ = [
    "ADMIN_SOCKET",
    "STORE_DIR",
    "KeyInfo",
    "KeyStore",
    "Token",
    "admin_call",
    "administer",
]
