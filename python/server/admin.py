"""The admin socket: `facecore keys`, `backup` and `verify` reach a running server's stores
through it (the server holds them: RocksDB admits one process at a time).

A Unix socket in the data directory, mode 0600: only the user the server runs as (and root) can
connect, which is the same set of users that could open the data directory itself. One JSON
request per line, one JSON answer per line (facecore.store.keys.administer for the keys,
facecore.store.backup.administer for backup and verify).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from pathlib import Path

import anyio.to_thread
from facecore.store import backup
from facecore.store.keys import KeyStore, administer
from facecore.store.library import FaceLibrary

log = logging.getLogger("facecore.server")
_MAX_LINE = 64 * 1024
_UNIX_PATH_MAX = 107


async def serve(
    store: KeyStore, path: Path, library: FaceLibrary | None = None
) -> asyncio.AbstractServer | None:
    """Listen on `path` (a stale socket left by a killed server is replaced). None when the path
    is too long for a Unix socket; the server then runs without one. Without `library`, only the
    key requests are served."""
    path = path.absolute()
    if len(os.fsencode(path)) > _UNIX_PATH_MAX:
        log.warning("admin socket disabled: %s is longer than a Unix socket path may be", path)
        return None
    with contextlib.suppress(FileNotFoundError):
        path.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    old = os.umask(0o177)  # created 0600, with no moment at a wider mode
    try:
        sock.bind(str(path))
    finally:
        os.umask(old)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readuntil(b"\n")
            request = json.loads(line)
            if not isinstance(request, dict):
                raise ValueError("the request must be a JSON object")  # noqa: TRY004 (one answer)
            if library is not None and request.get("op") in backup.LIBRARY_OPS:
                # A worker thread: a backup or a verify of a large library takes a while.
                answer = await anyio.to_thread.run_sync(backup.administer, library, store, request)
            else:
                answer = await anyio.to_thread.run_sync(administer, store, request)
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as e:
            answer = {"ok": False, "error": f"bad admin request ({type(e).__name__})"}
        if answer.get("ok"):
            log.info("admin: %s done", request.get("op"))  # never the secret or the key
        writer.write(json.dumps(answer).encode() + b"\n")
        with contextlib.suppress(ConnectionError):
            await writer.drain()
        writer.close()

    return await asyncio.start_unix_server(handle, sock=sock, limit=_MAX_LINE)


async def stop(server: asyncio.AbstractServer | None, path: Path) -> None:
    if server is None:
        return
    server.close()
    await server.wait_closed()
    with contextlib.suppress(FileNotFoundError):
        path.absolute().unlink()


__all__ = ["serve", "stop"]
