"""The shared store: one PostgreSQL database that several FaceCore instances use at once (psycopg 3
and its connection pool), the system of record behind every instance's in-memory indexes.

Schema (created and migrated by FaceCore; its version recorded in facecore_meta):
    facecore_meta(name text PK, value text)    schema_version; epoch (random, made with the schema)
    facecore_library(key bytea PK, value bytea)  the face library's keys (codec.py)
    facecore_auth(key bytea PK, value bytea)     API keys and access tokens (keys.py)
    facecore_head(id = 1, seq bigint)            the change log's last sequence number
    facecore_log(seq bigint PK, origin, at, ops) the change log: each write's followed operations
bytea compares byte by byte, as RocksDB's keys do: prefix scans are key ranges of the primary key.

Writes: every batch is one transaction. One that changes a followed key (G/, R/ and U/: what an
instance keeps in memory) also bumps facecore_head.seq, appends its operations to facecore_log
under that number and NOTIFYs facecore_log. The head row's lock, held from the bump to the commit,
makes the numbers gapless and committed in order: a follower that has read n has seen every
change up to n, and a number missing from the log means it was pruned (StoreGap: load everything).

Locks (`locked`): PostgreSQL advisory locks on 64-bit hashes of names, taken in one order inside
the transaction that reads, checks and writes; its commit releases them.

Failures: a connection error marks the store down; until the follower's probe (`wait`) reaches
the database again, every call fails at once with StoreUnavailable instead of waiting,
and nothing is half written (a transaction commits whole or not at all).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import re
import struct
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import psycopg
import psycopg.errors
from psycopg_pool import ConnectionPool, PoolTimeout

from facecore.errors import BackupError, Busy, StoreUnavailable
from facecore.store import codec
from facecore.store.ids import MAX_USER_BYTES
from facecore.store.kv import (
    DELETE_RANGE,
    PUT,
    Change,
    Store,
    StoreGap,
    StoreView,
    WriteBatch,
)

log = logging.getLogger("facecore.store")
T = TypeVar("T")

SCHEMA_VERSION = 1
SPACES = ("library", "auth")  # one key-value table each
CHANNEL = "facecore_log"
_MIGRATION_LOCK = 0x46434D4947  # "FCMIG": one instance migrates at a time
_PAGES = (64, 256, 1000)  # rows a scan fetches per query: few first (most scans stop early)
LOCK_TIMEOUT_S = 20  # how long a write waits for another instance's lock on its groups

# Migrations: MIGRATIONS[n] takes schema version n to n + 1 (0: an empty database).
MIGRATIONS: list[str] = [
    """
    CREATE TABLE facecore_library (key bytea PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE facecore_auth (key bytea PRIMARY KEY, value bytea NOT NULL);
    CREATE TABLE facecore_head (id int PRIMARY KEY CHECK (id = 1), seq bigint NOT NULL);
    INSERT INTO facecore_head VALUES (1, 0);
    CREATE TABLE facecore_log (
        seq bigint PRIMARY KEY,
        origin text NOT NULL,
        at timestamptz NOT NULL DEFAULT now(),
        ops bytea NOT NULL
    );
    CREATE FUNCTION facecore_lock(keys bigint[]) RETURNS bigint LANGUAGE plpgsql AS $$
    DECLARE k bigint;
    BEGIN
        FOREACH k IN ARRAY keys LOOP PERFORM pg_advisory_xact_lock(k); END LOOP;
        RETURN (SELECT seq FROM facecore_head);
    END $$;
    """,
]

_OP = struct.Struct("<BII")  # a logged operation: kind, key length, value length


def encode_ops(ops: Sequence[tuple[int, bytes, bytes]]) -> bytes:
    return b"".join(_OP.pack(op, len(k), len(v)) + k + v for op, k, v in ops)


def decode_ops(data: bytes) -> list[tuple[int, bytes, bytes]]:
    out = []
    at = 0
    while at < len(data):
        op, nk, nv = _OP.unpack_from(data, at)
        at += _OP.size
        out.append((op, data[at : at + nk], data[at + nk : at + nk + nv]))
        at += nk + nv
    return out


def lock_key(name: str) -> int:
    """The advisory lock number of a name (a signed 64-bit hash)."""
    return int.from_bytes(
        hashlib.blake2b(name.encode(), digest_size=8).digest(), "big", signed=True
    )


def redact(url: str) -> str:
    """The URL without its password, for messages and logs (any host list after the '@')."""
    return re.sub(r"^([a-z]+://[^:/@]*):[^@]*@", r"\1:***@", url)


def collapse(
    ops: Sequence[tuple[int, bytes, bytes]],
) -> tuple[list[tuple[bytes, bytes]], list[bytes], dict[bytes, bytes]]:
    """A batch as (ranges, deletes, puts) that give its result when applied in that order: the
    ranges first, then each key's last operation (a put after a range delete stays a put)."""
    ranges: list[tuple[bytes, bytes]] = []
    final: dict[bytes, bytes | None] = {}
    for op, key, value in ops:
        if op == DELETE_RANGE:
            ranges.append((key, value))
            for k in [k for k in final if key <= k < value]:
                final[k] = None
        else:
            final[key] = value if op == PUT else None
    deletes = [k for k, v in final.items() if v is None]
    puts = {k: v for k, v in final.items() if v is not None}
    return ranges, deletes, puts


class _Scope:
    """A `locked` block in one thread: its connection and the transaction holding its locks."""

    def __init__(self, conn: psycopg.Connection[Any], keys: list[int]) -> None:
        self.conn, self.keys = conn, keys
        self.open = False  # a transaction holding the locks is open


class PostgresStore(Store):
    """One key-value space ("library" or "auth") of a FaceCore database at `url`
    (postgresql://user[:password]@host:port/db). `followed`: key prefixes whose writes the
    change log carries (the library's G/ and R/). Creates or migrates the schema when needed;
    refuses a database whose schema is newer than this FaceCore's (StoreUnavailable)."""

    shared = True

    def __init__(
        self,
        url: str,
        space: str = "library",
        followed: tuple[bytes, ...] = (),
        pool_size: int = 8,
        connect_timeout: float = 5.0,
    ) -> None:
        if space not in SPACES:
            raise ValueError(f"space must be one of {SPACES}, got {space!r}")
        self.url, self.space, self.followed = url, space, followed
        self.table = f"facecore_{space}"
        self.origin = uuid.uuid4().hex  # this process, in the log (for people reading it)
        self._wake = f"facecore_wake_{self.origin}"  # interrupt() wakes wait() through it
        self._local = threading.local()
        self._down: str | None = None  # why the store is unreachable, while it is
        self._refused: str | None = None  # why this instance may not use the database at all
        self._down_lock = threading.Lock()
        self._kwargs: dict[str, Any] = {
            "autocommit": True,
            "connect_timeout": max(1, round(connect_timeout)),
            # A database that vanishes from the network (no reset, packets dropped) fails a
            # connection's call within about 30 s instead of TCP's ~15 minutes: unacknowledged
            # data gives up after tcp_user_timeout, an idle connection after its keepalives.
            "keepalives": 1,
            "keepalives_idle": 10,
            "keepalives_interval": 5,
            "keepalives_count": 3,
            "tcp_user_timeout": 30_000,
            "application_name": f"facecore-{space}",
        }
        try:
            with psycopg.connect(url, **self._kwargs) as conn:
                self.epoch = migrate(conn)
        except psycopg.OperationalError as e:
            raise StoreUnavailable(f"cannot reach {redact(url)}: {_first_line(e)}") from None
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            url,
            kwargs=self._kwargs,
            min_size=1,
            max_size=pool_size,
            timeout=connect_timeout,
            name=f"facecore-{space}",
            open=True,
        )
        self._listener: psycopg.Connection[Any] | None = None
        self._listen_lock = threading.Lock()
        if followed:
            # Listening before anything is loaded: a change committed after the load's snapshot
            # is announced, one before it is in the load.
            with self._listen_lock:
                self._listen()

    # ------------------------------------------------------------------ connections

    def _scope(self) -> _Scope | None:
        scope: _Scope | None = getattr(self._local, "scope", None)
        return scope

    def _failed(self, e: Exception) -> StoreUnavailable:
        """Mark the store down after a connection error; the error to raise."""
        why = _first_line(e)
        with self._down_lock:
            if self._down is None:
                log.error("the shared store %s is unreachable: %s", redact(self.url), why)
            self._down = why
        return StoreUnavailable(f"the shared store {redact(self.url)} is unreachable ({why})")

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        """fn on this thread's scope connection, or on one from the pool; connection errors
        become StoreUnavailable (at once while the store is known to be down)."""
        scope = self._scope()
        if self._refused is not None:
            raise StoreUnavailable(self._refused)
        if scope is None and self._down is not None:
            raise StoreUnavailable(
                f"the shared store {redact(self.url)} is unreachable ({self._down})"
            )
        try:
            if scope is not None:
                return fn(scope.conn)
            with self._pool.connection() as conn:
                return fn(conn)
        except psycopg.errors.LockNotAvailable:
            raise Busy(
                f"another instance held a lock this write needs for over {LOCK_TIMEOUT_S} s"
            ) from None
        except (psycopg.errors.DeadlockDetected, psycopg.errors.SerializationFailure) as e:
            raise Busy(f"the database rolled this write back ({_first_line(e)}); retry") from None
        except (psycopg.OperationalError, PoolTimeout) as e:
            if isinstance(e, psycopg.Error) and not _lost(e):
                raise  # the server refused the statement: a bug, not an outage
            raise self._failed(e) from None

    @property
    def down(self) -> str | None:
        """Why the store cannot be used now (unreachable, or refused), or None."""
        return self._refused or self._down

    # ------------------------------------------------------------------ reads

    def get(self, key: bytes) -> bytes | None:
        def q(conn: psycopg.Connection[Any]) -> bytes | None:
            row = conn.execute(f"SELECT value FROM {self.table} WHERE key = %s", (key,)).fetchone()
            return None if row is None else bytes(row[0])

        return self._run(q)

    def multi_get(self, keys: Sequence[bytes]) -> list[bytes | None]:
        if not keys:
            return []

        def q(conn: psycopg.Connection[Any]) -> dict[bytes, bytes]:
            rows = conn.execute(
                f"SELECT key, value FROM {self.table} WHERE key = ANY(%s)", (list(keys),)
            ).fetchall()
            return {bytes(k): bytes(v) for k, v in rows}

        found = self._run(q)
        return [found.get(k) for k in keys]

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        """Pages of _PAGES rows, each one query (a connection is held per page, never while the
        caller holds the iterator)."""
        return _scan(self._run, self.table, start, end)

    def count(self, start: bytes, end: bytes) -> int:
        def q(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute(
                f"SELECT count(*) FROM {self.table} WHERE key >= %s AND key < %s", (start, end)
            ).fetchone()
            assert row is not None
            return int(row[0])

        return self._run(q)

    def sequence(self) -> int:
        def q(conn: psycopg.Connection[Any]) -> int:
            row = conn.execute("SELECT seq FROM facecore_head").fetchone()
            assert row is not None
            return int(row[0])

        return self._run(q)

    # ------------------------------------------------------------------ writes

    def write(self, batch: WriteBatch) -> int:
        """One transaction; returns the change log's number for it, or 0 when it changed no
        followed key. Inside `locked`, it commits the block's transaction (releasing its locks)."""
        ranges, deletes, puts = collapse(batch.ops)
        followed = (
            [op for op in batch.ops if op[1].startswith(self.followed)] if self.followed else []
        )
        entry = encode_ops(followed) if followed else None

        def q(conn: psycopg.Connection[Any]) -> int:
            scope = self._scope()
            try:
                with conn.pipeline():  # one round trip: BEGIN ... COMMIT
                    if scope is None:
                        conn.execute("BEGIN")
                    elif not scope.open:  # a second write in one block: lock again
                        self._begin(scope)
                    head = self._apply(conn, ranges, deletes, puts, entry)
                    conn.execute("COMMIT")
            except BaseException:
                _rollback(conn)
                raise
            finally:
                if scope is not None:
                    scope.open = False
            row = None if head is None else head.fetchone()
            return 0 if row is None else int(row[0])

        return self._run(q)

    def _apply(
        self,
        conn: psycopg.Connection[Any],
        ranges: list[tuple[bytes, bytes]],
        deletes: list[bytes],
        puts: dict[bytes, bytes],
        entry: bytes | None,
    ) -> psycopg.Cursor[Any] | None:
        """The batch's statements; the cursor that will hold its log number, if it is logged."""
        for lo, hi in ranges:
            conn.execute(f"DELETE FROM {self.table} WHERE key >= %s AND key < %s", (lo, hi))
        if deletes:
            conn.execute(f"DELETE FROM {self.table} WHERE key = ANY(%s)", (deletes,))
        if puts:
            conn.execute(
                f"INSERT INTO {self.table} (key, value) "
                "SELECT * FROM unnest(%s::bytea[], %s::bytea[]) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                (list(puts), list(puts.values())),
            )
        if entry is None:
            return None
        # Last, so that the head row is locked only from here to the commit.
        return conn.execute(
            "WITH h AS (UPDATE facecore_head SET seq = seq + 1 RETURNING seq), "
            "l AS (INSERT INTO facecore_log (seq, origin, ops) SELECT seq, %s, %s FROM h) "
            "SELECT seq, pg_notify(%s, seq::text) FROM h",
            (self.origin, entry, CHANNEL),
        )

    # ------------------------------------------------------------------ locks

    def locked(self, names: Sequence[str]) -> contextlib.AbstractContextManager[int]:
        return self._locked(sorted({lock_key(n) for n in names}))

    @contextlib.contextmanager
    def _locked(self, keys: list[int]) -> Iterator[int]:
        if self._scope() is not None:
            raise RuntimeError("locked() blocks do not nest")
        if self._refused is not None:
            raise StoreUnavailable(self._refused)
        if self._down is not None:
            raise StoreUnavailable(
                f"the shared store {redact(self.url)} is unreachable ({self._down})"
            )
        try:
            conn = self._pool.getconn()
        except PoolTimeout as e:
            raise self._failed(e) from None
        scope = _Scope(conn, keys)
        self._local.scope = scope
        try:
            yield self._run(lambda _: self._begin(scope))
        finally:
            self._local.scope = None
            if scope.open:
                _rollback(conn)
            self._pool.putconn(conn)

    def _begin(self, scope: _Scope) -> int:
        """BEGIN, the scope's locks, and the head sequence as of holding them (one round trip).
        The schema's version is checked too: no write goes into a schema this FaceCore does not
        know."""
        with scope.conn.pipeline():
            scope.conn.execute("BEGIN")
            scope.conn.execute(f"SET LOCAL lock_timeout = '{LOCK_TIMEOUT_S}s'")
            cur = scope.conn.execute(
                "SELECT facecore_lock(%s::bigint[]), "
                "(SELECT value FROM facecore_meta WHERE name = 'schema_version')",
                (scope.keys,),
            )
        scope.open = True
        row = cur.fetchone()
        assert row is not None
        self._check_schema(str(row[1]))
        return int(row[0])

    def _check_schema(self, version: str) -> None:
        """Another FaceCore migrated the database (or it was restored from another version's
        backup) under this instance, which can no longer use it safely: from now on every call
        raises StoreUnavailable, and memory answers what it can, until a restart (which
        migrates an older schema and refuses a newer one)."""
        if version == str(SCHEMA_VERSION):
            return
        self._refused = (
            f"the database's schema changed to version {version} while this instance "
            f"(version {SCHEMA_VERSION}) ran: restart it (upgraded, if the schema is newer)"
        )
        log.error("%s", self._refused)
        raise StoreUnavailable(self._refused)

    # ------------------------------------------------------------------ the change log

    def changes(self, after: int, limit: int = 1000) -> list[Change]:
        def q(conn: psycopg.Connection[Any]) -> tuple[int, str, str, list[Any]]:
            with conn.pipeline():
                head = conn.execute(
                    "SELECT (SELECT seq FROM facecore_head), "
                    "(SELECT value FROM facecore_meta WHERE name = 'schema_version'), "
                    "(SELECT value FROM facecore_meta WHERE name = 'epoch')"
                )
                rows = conn.execute(
                    "SELECT seq, ops FROM facecore_log WHERE seq > %s ORDER BY seq LIMIT %s",
                    (after, limit),
                )
            h = head.fetchone()
            assert h is not None
            return int(h[0]), str(h[1]), str(h[2]), rows.fetchall()

        head, version, epoch, rows = self._run(q)
        if epoch != self.epoch:
            raise StoreGap(f"the database was replaced (epoch {epoch}, opened {self.epoch})")
        self._check_schema(version)
        if head < after:
            raise StoreGap(f"the change log went back from {after} to {head}")
        if (rows and int(rows[0][0]) != after + 1) or (not rows and head > after):
            raise StoreGap(f"the change log no longer holds the changes after {after}")
        return [Change(int(seq), decode_ops(bytes(ops))) for seq, ops in rows]

    def wait(self, timeout: float) -> int | None:
        """Block until a change is announced or `timeout` seconds pass; the highest number
        announced, or None. Also the probe: while the store is down it reconnects here, and
        marks the store up once the database answers."""
        with self._listen_lock:
            try:
                listener = self._listen()
                announced = None
                for note in listener.notifies(timeout=timeout, stop_after=1):
                    announced = int(note.payload or 0)
                for note in listener.notifies(timeout=0):  # those queued behind it
                    announced = max(announced or 0, int(note.payload or 0))
                return announced
            except psycopg.OperationalError as e:
                if self._listener is not None:
                    self._listener.close()
                self._listener = None
                self._failed(e)
                time.sleep(min(timeout, 1.0))
                return None

    def _listen(self) -> psycopg.Connection[Any]:
        """The LISTEN connection, (re)connected when needed; a reconnection while the store is
        down marks it up again."""
        if self._listener is None or self._listener.closed:
            self._listener = psycopg.connect(self.url, **self._kwargs)
            self._listener.execute(f"LISTEN {CHANNEL}")
            self._listener.execute(f"LISTEN {self._wake}")
            if self._down is not None:
                self._recovered()
        return self._listener

    def interrupt(self) -> None:
        """Wake this store's `wait` now (closing: the follower need not sit out its poll)."""
        with contextlib.suppress(StoreUnavailable):
            self._run(lambda conn: conn.execute(f"NOTIFY {self._wake}"))

    def _recovered(self) -> None:
        """The database answers again: drop the pool's connections (they died with it)."""
        self._pool.drain()
        with self._down_lock:
            log.warning("the shared store %s is reachable again", redact(self.url))
            self._down = None

    def prune(self, keep: int, older_than_s: float) -> int:
        """Delete log entries older than `older_than_s` seconds, keeping at least the last `keep`;
        how many went. An instance further behind than what is kept reloads everything."""

        def q(conn: psycopg.Connection[Any]) -> int:
            cur = conn.execute(
                "DELETE FROM facecore_log WHERE seq <= (SELECT seq FROM facecore_head) - %s "
                "AND at < now() - make_interval(secs => %s)",
                (keep, older_than_s),
            )
            return int(cur.rowcount)

        return self._run(q)

    # ------------------------------------------------------------------ bulk reads

    @contextlib.contextmanager
    def view(self) -> Iterator[StoreView]:
        """One REPEATABLE READ snapshot (a transaction on one connection) for a full load: its
        scans, its vectors and its sequence number are of one point in the change log."""
        try:
            conn = self._pool.getconn()
        except PoolTimeout as e:
            raise self._failed(e) from None
        try:
            try:
                conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                row = conn.execute("SELECT seq FROM facecore_head").fetchone()
            except psycopg.OperationalError as e:
                raise self._failed(e) from None
            assert row is not None
            yield _View(self, conn, int(row[0]))
        finally:
            _rollback(conn)
            self._pool.putconn(conn)

    # ------------------------------------------------------------------ the rest

    def checkpoint(self, path: str | Path) -> None:
        raise BackupError(
            "a PostgreSQL store is backed up with PostgreSQL's own tools (pg_dump, "
            "pg_basebackup; docs/deploy.md), not by FaceCore"
        )

    def close(self) -> None:
        with self._listen_lock:
            if self._listener is not None:
                self._listener.close()
                self._listener = None
        self._pool.close()

    def describe(self) -> str:
        return f"PostgreSQL at {redact(self.url)} ({self.table})"


class _View(StoreView):
    def __init__(self, store: PostgresStore, conn: psycopg.Connection[Any], sequence: int) -> None:
        self._store, self._conn, self.sequence = store, conn, sequence

    def _run(self, fn: Callable[[psycopg.Connection[Any]], T]) -> T:
        try:
            return fn(self._conn)
        except psycopg.OperationalError as e:
            raise self._store._failed(e) from None

    def scan(self, start: bytes, end: bytes | None) -> Iterator[tuple[bytes, bytes]]:
        return _scan(self._run, self._store.table, start, end)

    def owned_vectors(
        self, prefix: bytes, dim: int
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """StoreView.owned_vectors by one binary COPY of fixed-size records that numpy parses
        without a loop per row: the key's 16 hex digits, the embedding and token, the value's
        length, and the user id cut or padded with zero bytes to the longest well-formed one's
        length (asked first). The server only filters, cuts and pads: sorting, converting or
        checking ids costs it more than it costs numpy."""
        width = 4 * dim
        n = len(prefix)
        where = (
            f"FROM {self._store.table} WHERE key >= %s AND key < %s AND length(key) = {n + 16} "
            f"AND length(value) >= {width + 16}"
        )
        args = (prefix, codec.end_of(prefix))

        def q(conn: psycopg.Connection[Any]) -> tuple[bytearray, int]:
            row = conn.execute(
                f"SELECT max(length(value)) {where} AND length(value) <= {width + 16 + MAX_USER_BYTES}",
                args,
            ).fetchone()
            longest = max(1, int(row[0]) - width - 16) if row and row[0] is not None else 1
            zeros = "'\\x" + "00" * longest + "'::bytea"
            sql = (
                f"COPY (SELECT substring(key from {n + 1}), substring(value from 1 for "
                f"{width + 16}), length(value), substring(value || {zeros} from {width + 17} "
                f"for {longest}) {where}) TO STDOUT (FORMAT BINARY)"
            )
            data = bytearray()
            with conn.cursor() as cur, cur.copy(sql, args) as copy:
                for chunk in copy:
                    data += chunk
            return data, longest

        data, longest = self._run(q)
        records = _records(data, 54 + width + longest)
        digits = codec.HEX[records[:, 6:22]]  # 16 hex digits a row; 255 where not one
        good = (digits != 255).all(axis=1)
        if not good.all():  # a damaged key: left out (verify reports it)
            records, digits = records[good], digits[good]
        rows = (digits.astype(np.int64) << codec.ROW_SHIFTS).sum(axis=1)
        if rows.size > 1 and not (rows[1:] > rows[:-1]).all():  # usually in order already
            order = np.argsort(rows, kind="stable")
            rows, records = rows[order], records[order]
        vecs = records[:, 26 : 26 + width].copy().view(np.float32)
        lengths = records[:, 46 + width : 50 + width].copy().view(">i4").ravel() - width - 16
        users = records[:, 54 + width :]
        return rows, vecs, records[:, 26 + width : 42 + width], users, lengths.astype(np.int64)

    def user_records(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """The U/ records under `prefix` whose user_info may not be empty: the server leaves out
        those that begin as the library writes an empty one (a filter only: the caller parses
        every record it gets)."""
        empty = b'{"user_info": "",'
        end = codec.end_of(prefix)

        def q(conn: psycopg.Connection[Any]) -> list[Any]:
            return conn.execute(
                f"SELECT key, value FROM {self._store.table} WHERE key >= %s AND key < %s "
                f"AND substring(value from 1 for {len(empty)}) <> %s",
                (prefix, end, empty),
            ).fetchall()

        return ((bytes(k), bytes(v)) for k, v in self._run(q))


def _records(data: bytearray, size: int) -> np.ndarray:
    """A binary COPY's records of `size` bytes each, as rows of a uint8 array: the PGCOPY header
    (11-byte signature, flags, extension length) and the -1 trailer cut off; a record is its
    field count (2 bytes), then each field's length (4) and bytes."""
    head = 11 + 4 + 4 + int.from_bytes(data[15:19], "big") if data else 0
    return np.frombuffer(data, np.uint8)[head : len(data) - 2].reshape(-1, size)


def _scan(
    run: Callable[[Callable[[psycopg.Connection[Any]], list[Any]]], list[Any]],
    table: str,
    start: bytes,
    end: bytes | None,
) -> Iterator[tuple[bytes, bytes]]:
    bound = "" if end is None else " AND key < %s"
    at, op = start, ">="
    for size in itertools.chain(_PAGES, itertools.repeat(_PAGES[-1])):
        sql = f"SELECT key, value FROM {table} WHERE key {op} %s{bound} ORDER BY key LIMIT {size}"
        args = (at,) if end is None else (at, end)

        def page(
            conn: psycopg.Connection[Any], sql: str = sql, args: tuple[bytes, ...] = args
        ) -> list[Any]:
            return conn.execute(sql, args).fetchall()

        rows = run(page)
        for key, value in rows:
            yield bytes(key), bytes(value)
        if len(rows) < size:
            return
        at, op = bytes(rows[-1][0]), ">"


def migrate(conn: psycopg.Connection[Any]) -> str:
    """Create the schema in an empty database, or bring an older one to SCHEMA_VERSION (one
    transaction per step, under an advisory lock: instances starting together migrate once).
    Returns the database's epoch. StoreUnavailable for a schema newer than this FaceCore's."""
    conn.execute("SELECT pg_advisory_lock(%s)", (_MIGRATION_LOCK,))
    try:
        conn.execute(
            "CREATE TABLE IF NOT EXISTS facecore_meta (name text PRIMARY KEY, value text NOT NULL)"
        )
        row = conn.execute(
            "SELECT value FROM facecore_meta WHERE name = 'schema_version'"
        ).fetchone()
        version = 0 if row is None else int(row[0])
        if version > SCHEMA_VERSION:
            raise StoreUnavailable(
                f"the database's FaceCore schema is version {version}, newer than this "
                f"FaceCore's ({SCHEMA_VERSION}): upgrade this instance"
            )
        while version < SCHEMA_VERSION:
            with conn.transaction():
                conn.execute(MIGRATIONS[version])
                version += 1
                conn.execute(
                    "INSERT INTO facecore_meta VALUES ('schema_version', %s) "
                    "ON CONFLICT (name) DO UPDATE SET value = excluded.value",
                    (str(version),),
                )
                conn.execute(
                    "INSERT INTO facecore_meta VALUES ('epoch', %s) ON CONFLICT DO NOTHING",
                    (uuid.uuid4().hex,),
                )
            log.info("FaceCore schema migrated to version %d", version)
        epoch = conn.execute("SELECT value FROM facecore_meta WHERE name = 'epoch'").fetchone()
        assert epoch is not None
        return str(epoch[0])
    finally:
        conn.execute("SELECT pg_advisory_unlock(%s)", (_MIGRATION_LOCK,))


def _rollback(conn: psycopg.Connection[Any]) -> None:
    """End whatever transaction the connection is in (a broken one: the pool discards it, and
    the server rolled back)."""
    with contextlib.suppress(psycopg.Error):
        if not conn.closed and conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
            conn.execute("ROLLBACK")


def _lost(e: psycopg.Error) -> bool:
    """Whether an error means the database cannot be reached (no SQLSTATE: the connection
    failed; class 08: connection exception; 57P0x: the server is shutting down or starting)."""
    code = e.sqlstate
    return code is None or code.startswith("08") or code in ("57P01", "57P02", "57P03")


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]
