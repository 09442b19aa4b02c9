"""Backups of a data directory, taken while the server runs, and their restore.

A backup is a directory of RocksDB checkpoints, one per store, and a manifest:
    manifest.json   format, FaceCore version, time, each store's sequence number and key counts
    rocksdb/        the face library (facecore.store.library.FaceLibrary)
    auth/           the API keys (facecore.store.keys.KeyStore), when the data directory has them
A checkpoint hard-links RocksDB's immutable files and copies the rest, so it is cheap and stops
no reader or writer. Each store's copy is one point in its write order: every operation
acknowledged before the backup began is in it, and one running meanwhile is in it whole or not at
all (an operation is one write batch). The two stores are copied one after the other, each
consistent on its own. The index snapshot is not copied: it is valid only at the sequence number
it was saved at, and the restored library rebuilds its indexes on first open.

The backup is built in DEST.partial and renamed to DEST once complete: DEST exists only whole.
While a server runs it holds both stores, so `facecore backup` asks it over the admin socket
(`administer`); otherwise the CLI opens the stores itself (`backup_offline`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import time
from collections.abc import Callable, Collection, Iterator
from pathlib import Path
from typing import Any

from rocksdict import AccessType, Checkpoint, Options, Rdict

import facecore
from facecore.errors import BackupError, FaceCoreError
from facecore.search import fsync_path
from facecore.store.keys import ADMIN_SOCKET, KeyStore
from facecore.store.keys import STORE_DIR as KEYS_DIR
from facecore.store.library import INDEX_DIR, PROBLEMS, FaceLibrary, iter_prefix
from facecore.store.library import STORE_DIR as LIBRARY_DIR

FORMAT = 1
MANIFEST = "manifest.json"


def _open_raw(path: Path, read_only: bool = False) -> Rdict:
    """A store as raw bytes; BackupError when another process (or this one) holds it."""
    opts = Options(raw_mode=True)
    access = AccessType.read_only(False) if read_only else AccessType.read_write()
    try:
        return Rdict(str(path), opts, access_type=access)
    except Exception as e:  # noqa: BLE001 -- rocksdict raises a bare Exception (a held lock, ...)
        raise BackupError(f"cannot open {path}: {e}") from None


def _count(db: Rdict, prefix: bytes, skip: Collection[bytes] = ()) -> int:
    """Keys under `prefix`, leaving out those of the groups in `skip` (b"appid/group/")."""
    n = 0
    for key in db.keys(from_key=prefix):
        assert isinstance(key, bytes)  # raw mode
        if not key.startswith(prefix):
            break
        if skip and b"/".join(key.split(b"/", 3)[1:3]) + b"/" in skip:
            continue
        n += 1
    return n


def _library_summary(path: Path) -> dict[str, int]:
    """A library checkpoint's sequence number and what it holds, groups being deleted left out
    (the restored library finishes deleting them), so that a verify can be compared with it."""
    db = _open_raw(path, read_only=True)
    try:
        deleting: set[bytes] = set()
        groups = 0
        for key, value in iter_prefix(db, b"G/"):
            try:
                gone = json.loads(value).get("deleting") is True
            except (ValueError, AttributeError):
                gone = False  # damaged: verify will say so
            if gone:
                deleting.add(key[2:] + b"/")
            else:
                groups += 1
        return {
            "sequence": int(db.latest_sequence_number()),
            "groups": groups,
            "users": _count(db, b"U/", deleting),
            "faces": _count(db, b"F/", deleting),
            "detected_tokens": _count(db, b"D/"),
        }
    finally:
        db.close()


def _keys_summary(path: Path) -> dict[str, int]:
    db = _open_raw(path, read_only=True)
    try:
        return {
            "sequence": int(db.latest_sequence_number()),
            "keys": _count(db, b"a/"),
            "tokens": _count(db, b"t/"),
        }
    finally:
        db.close()


def _write_backup(
    dest: str | Path,
    library: Callable[[Path], None],
    keys: Callable[[Path], None] | None,
    source: Path,
) -> dict[str, Any]:
    """Build a backup in DEST.partial with the given checkpoint functions, then rename it."""
    dest = Path(dest)
    if not dest.is_absolute():
        raise BackupError(f"the backup path must be absolute, got {str(dest)!r}")
    if dest.exists():
        raise BackupError(f"{dest} already exists; a backup goes into a new directory")
    if not dest.parent.is_dir():
        raise BackupError(f"{dest.parent} is not a directory")
    tmp = dest.with_name(dest.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)  # what an interrupted backup left
    tmp.mkdir()
    try:
        started = time.time()
        library(tmp / LIBRARY_DIR)
        if keys is not None:
            keys(tmp / KEYS_DIR)
        manifest = {
            "format": FORMAT,
            "facecore_version": facecore.__version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(started)),
            "created_unix": round(started, 3),
            "source": str(source),
            "library": _library_summary(tmp / LIBRARY_DIR),
            "keys": _keys_summary(tmp / KEYS_DIR) if keys is not None else None,
            "indexes": "not included: rebuilt from the rows when the restored library opens",
        }
        with open(tmp / MANIFEST, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.flush()
            os.fsync(f.fileno())
        fsync_path(tmp)
        tmp.rename(dest)
        fsync_path(dest.parent)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def backup(library: FaceLibrary, keys: KeyStore | None, dest: str | Path) -> dict[str, Any]:
    """Back up open stores (a running server's) into `dest`; the manifest."""
    return _write_backup(
        dest,
        library.checkpoint,
        keys.checkpoint if keys is not None else None,
        library.path.absolute(),
    )


def backup_offline(data: Path, dest: str | Path) -> dict[str, Any]:
    """Back up the stores of a data directory that no process holds; the manifest."""
    if not (data / LIBRARY_DIR).is_dir():
        raise BackupError(f"{data} holds no face library ({LIBRARY_DIR}/ is missing)")
    with contextlib.ExitStack() as stack:
        lib = _open_raw(data / LIBRARY_DIR)
        stack.callback(lib.close)
        keys = None
        if (data / KEYS_DIR).is_dir():
            keys = _open_raw(data / KEYS_DIR)
            stack.callback(keys.close)

        def checkpoint(db: Rdict) -> Callable[[Path], None]:
            return lambda path: Checkpoint(db).create_checkpoint(str(path))

        return _write_backup(
            Path(dest).absolute(),
            checkpoint(lib),
            checkpoint(keys) if keys is not None else None,
            data.absolute(),
        )


def read_manifest(src: Path) -> dict[str, Any]:
    """A backup's manifest, checked to be one this version restores."""
    try:
        manifest: dict[str, Any] = json.loads((src / MANIFEST).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BackupError(f"{src} is not a FaceCore backup ({MANIFEST}: {e})") from None
    if manifest.get("format") != FORMAT:
        raise BackupError(f"{src} is a backup of format {manifest.get('format')!r}, not {FORMAT}")
    if not (src / LIBRARY_DIR).is_dir():
        raise BackupError(f"{src} is incomplete: {LIBRARY_DIR}/ is missing")
    return manifest


def server_listens(data: Path) -> bool:
    """Whether a server answers on the data directory's admin socket."""
    path = data / ADMIN_SOCKET
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        try:
            s.connect(str(path))
        except OSError:  # no socket, a stale one, or a path too long to have one
            return False
    return True


def _check_not_held(data: Path) -> None:
    """BackupError when a process holds a store of `data` (a server, an import...)."""
    if server_listens(data):
        raise BackupError(
            f"a server is running on {data} (its admin socket answers); stop it before restoring"
        )
    for name in (LIBRARY_DIR, KEYS_DIR):
        if (data / name).is_dir():
            try:
                _open_raw(data / name).close()
            except BackupError as e:
                raise BackupError(f"{data / name} is in use by another process ({e})") from None


def restore(src: Path, data: Path, force: bool = False) -> dict[str, Any]:
    """Restore the backup `src` into the data directory `data`: refused while a process holds
    `data`, and when `data` already has stores unless `force` (they are then replaced). The
    stores are copied (not linked: the restored library writes to its files) under temporary
    names, then renamed into place. Returns the backup's manifest; the caller verifies."""
    manifest = read_manifest(src)
    data.mkdir(parents=True, exist_ok=True)
    _check_not_held(data)
    present = [n for n in (LIBRARY_DIR, KEYS_DIR, INDEX_DIR) if (data / n).exists()]
    if present and not force:
        raise BackupError(
            f"{data} already holds {', '.join(p + '/' for p in present)}; restore into an empty "
            "directory, or pass --force to replace them"
        )
    parts = [n for n in (LIBRARY_DIR, KEYS_DIR) if (src / n).is_dir()]
    for name in parts:
        staged = data / f"{name}.restoring"
        shutil.rmtree(staged, ignore_errors=True)
        shutil.copytree(src / name, staged)
    # The old index snapshot goes too: its sequence number could equal the restored store's.
    for name in (LIBRARY_DIR, KEYS_DIR, INDEX_DIR, f"{INDEX_DIR}.tmp"):
        shutil.rmtree(data / name, ignore_errors=True)
    for name in parts:
        (data / f"{name}.restoring").rename(data / name)
    fsync_path(data)
    return manifest


def counts_match(manifest: dict[str, Any], counts: dict[str, int]) -> bool:
    """Whether a verified library has the groups, users and faces its backup's manifest says."""
    lib = manifest["library"]
    return all(counts.get(k) == lib.get(k) for k in ("groups", "users", "faces"))


# ---------------------------------------------------------------------------- administration
# Requests on the admin socket (facecore_server.admin) that need the library as well as the keys.

LIBRARY_OPS = frozenset({"backup", "verify"})


def administer(
    library: FaceLibrary, keys: KeyStore | None, request: dict[str, object]
) -> dict[str, object]:
    """{"op": "backup", "dest": absolute path} -> the manifest; {"op": "verify", "repair": bool}
    -> the report (FaceLibrary.verify). {"ok": true, "result": ...} or {"ok": false, "error"}."""
    op = request.get("op")
    try:
        if op == "backup":
            dest = request.get("dest")
            if not isinstance(dest, str) or not dest:
                raise BackupError("backup needs 'dest', an absolute path")
            return {"ok": True, "result": backup(library, keys, dest)}
        if op == "verify":
            report = library.verify(repair=request.get("repair") is True)
            return {"ok": True, "result": report.as_dict()}
    except FaceCoreError as e:
        return {"ok": False, "error": str(e)}
    except Exception as e:  # noqa: BLE001 -- the destination (OSError), rocksdict's bare
        return {"ok": False, "error": f"{type(e).__name__}: {e}"}  # Exception: answered
    return {"ok": False, "error": f"unknown op {op!r}"}


def iter_report(report: dict[str, Any]) -> Iterator[str]:
    """A verify report (VerifyReport.as_dict) as lines for a person."""
    counts = report["counts"]
    yield ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in counts.items())
    if not report["problems"]:
        yield "no problems found"
    for kind, n in sorted(report["problems"].items()):
        yield f"{kind}: {n} -- {PROBLEMS.get(kind, '')}"
        for key in report["examples"].get(kind, []):
            yield f"    {key}"
    if report["repaired"]:
        remaining = report["remaining"]
        yield "repaired; " + (
            "nothing remains"
            if not remaining
            else "remaining: " + ", ".join(f"{k} {v}" for k, v in sorted(remaining.items()))
        )


__all__ = [
    "FORMAT",
    "LIBRARY_OPS",
    "MANIFEST",
    "BackupError",
    "administer",
    "backup",
    "backup_offline",
    "counts_match",
    "iter_report",
    "read_manifest",
    "restore",
    "server_listens",
]
