"""The `facecore` command line: bulk import, re-index after a model change, library statistics,
API keys, backup, restore and verify (docs/operations.md), and licences (`facecore license`,
docs/license.md).

Detection runs in worker processes (spawned, one single-threaded Engine each); the main process is
the only writer to the FaceLibrary, because RocksDB is opened by one process at a time (with
`--store postgresql://...` it is one more instance of the shared library, beside the running
servers, which follow its writes). docs/import.md
describes the input layouts, the id rule, the report and how an interrupted import resumes.
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import json
import multiprocessing as mp
import os
import re
import signal
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import numpy as np

from facecore.errors import (
    BadUserInfo,
    FaceCoreError,
    FaceExists,
    ImageUnreadable,
    NoFace,
)
from facecore.pipeline.image import face_crop
from facecore.store.kv import shared_url

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".gif"})
JOURNAL = "import"  # FaceLibrary.kv_put namespace of the import journal
INTERNAL = "error"  # the report's code for an unexpected exception (not journaled: retried)
_NOT_ID = re.compile(r"[^A-Za-z0-9_]")


# ---------------------------------------------------------------------------- ids and inputs


def report_code(error: FaceCoreError | type[FaceCoreError]) -> int | str:
    """An error's code in the import report: its wire code, INTERNAL when it has none."""
    return INTERNAL if error.code is None else error.code


def safe_user_id(name: str) -> str:
    """The user id for a folder name: every character outside [A-Za-z0-9_] becomes '_'."""
    return _NOT_ID.sub("_", name)


@dataclass(frozen=True)
class Item:
    """One image to import. `error` is set when the row is refused before detection."""

    rel: str  # path relative to the input directory, with '/' separators
    path: Path
    user_id: str
    user_info: str | None
    size: int = 0
    mtime_ns: int = 0
    error: tuple[int | str, str] | None = None


def _check_user(user_id: str) -> tuple[int | str, str] | None:
    from facecore.store.library import check_user

    try:
        check_user(user_id)
    except FaceCoreError as e:
        return (report_code(e), str(e))
    return None


def _stat(item: Item) -> Item:
    try:
        st = item.path.stat()
    except OSError as e:
        return Item(
            item.rel,
            item.path,
            item.user_id,
            item.user_info,
            error=(report_code(ImageUnreadable), str(e)),
        )
    return Item(
        item.rel, item.path, item.user_id, item.user_info, st.st_size, st.st_mtime_ns, item.error
    )


def scan_folders(root: Path) -> list[Item]:
    """One folder per user under `root`; raises SystemExit when two folders map to one id."""
    owners: dict[str, list[str]] = {}
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for folder in folders:
        owners.setdefault(safe_user_id(folder.name), []).append(folder.name)
    clashes = {uid: names for uid, names in owners.items() if len(names) > 1}
    if clashes:
        lines = "\n".join(f"  {uid}: {', '.join(names)}" for uid, names in sorted(clashes.items()))
        raise SystemExit(
            f"error: these folders map to the same user id; rename them or use --csv:\n{lines}"
        )
    items = []
    for folder in folders:
        uid = safe_user_id(folder.name)
        info = folder.name if len(folder.name.encode("utf-8")) <= 256 else None
        error = _check_user(uid)
        for p in sorted(folder.rglob("*")):
            if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file():
                rel = p.relative_to(root).as_posix()
                items.append(_stat(Item(rel, p, uid, info, error=error)))
    return items


def read_csv(root: Path, csv_path: Path) -> list[Item]:
    """Rows `path,user_id[,user_info]`, path relative to `root`; a header row is optional.
    Ids are taken as written (a bad one fails its row), unlike folder names."""
    items = []
    with open(csv_path, newline="", encoding="utf-8") as f:
        for n, row in enumerate(csv.reader(f)):
            if not row or (n == 0 and [c.strip().lower() for c in row[:2]] == ["path", "user_id"]):
                continue
            if len(row) < 2:
                raise SystemExit(f"error: {csv_path}:{n + 1}: expected path,user_id[,user_info]")
            rel, uid = row[0].strip(), row[1].strip()
            info = row[2] if len(row) > 2 and row[2] != "" else None
            error = _check_user(uid)
            if error is None and info is not None and len(info.encode("utf-8")) > 256:
                error = (report_code(BadUserInfo), "user_info is longer than 256 UTF-8 bytes")
            items.append(_stat(Item(rel, root / rel, uid, info, error=error)))
    return items


def journal_key(appid: str, group: str, item: Item) -> str:
    """The journal key of an image: a changed file (size or mtime) is a new image."""
    return f"{appid}/{group}/{item.size}/{item.mtime_ns}/{item.rel}"


# ---------------------------------------------------------------------------- worker processes

_engine: Any = None
_init_error: str | None = None


class WorkerError(RuntimeError):
    """A worker could not start (models missing, ...): the whole run stops, not one image."""


_max_faces = 1


def _init_worker(models_dir: str | None, max_faces: int) -> None:
    """Runs once in each worker: a single-threaded Engine (the workers are the parallelism)."""
    global _engine, _max_faces, _init_error
    import cv2

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the main process's to handle

    cv2.setNumThreads(1)
    from facecore.pipeline.engine import Engine

    try:
        _engine = Engine(models_dir, threads=1)
    except Exception as e:  # noqa: BLE001  (a failing initializer makes Pool respawn forever)
        _init_error = f"{type(e).__name__}: {e}"
    _max_faces = max_faces


def _ready() -> Any:
    if _init_error is not None:
        raise WorkerError(f"the detection worker could not start: {_init_error}")
    return _engine


@dataclass
class Detected:
    """A worker's answer for one image: faces (token, embedding, box, crop) or an error."""

    index: int
    faces: list[tuple[str, np.ndarray, tuple[float, float, float, float], bytes]]
    error: tuple[int | str, str] | None = None


def _detect_file(task: tuple[int, str]) -> Detected:
    from facecore.pipeline.image import decode_image

    engine = _ready()
    index, path = task
    try:
        with open(path, "rb") as f:
            data = f.read()
        image = decode_image(data)
    except OSError as e:
        return Detected(index, [], (report_code(ImageUnreadable), f"cannot read the file: {e}"))
    except FaceCoreError as e:
        return Detected(index, [], (report_code(e), str(e)))
    try:
        found = engine.detect(image, max_faces=_max_faces, fields=("embedding",))
        faces = [
            (
                f.token,
                f.embedding,
                tuple(float(v) for v in f.box),
                face_crop(image, f.box),
            )
            for f in found
        ]
    except Exception as e:  # noqa: BLE001  (one odd image must not end a long import)
        return Detected(index, [], (INTERNAL, f"{type(e).__name__}: {e}"))
    if not faces:
        return Detected(index, [], (report_code(NoFace), "no face found"))
    return Detected(index, faces)  # type: ignore[arg-type]


def _embed_crop(task: tuple[int, bytes]) -> tuple[int, np.ndarray | None, str]:
    """Reindex: the largest face of a stored crop, or None with the reason."""
    from facecore.pipeline.image import decode_image

    engine = _ready()
    index, data = task
    try:
        image = decode_image(data)
    except FaceCoreError as e:
        return index, None, f"{e.code}: {e}"
    found = engine.detect(image, max_faces=1, fields=("embedding",))
    if not found:
        return index, None, f"{NoFace.code}: no face found in the stored image"
    return index, found[0].embedding, ""


def _pool(workers: int, models_dir: str | None, max_faces: int) -> Any:
    return mp.get_context("spawn").Pool(
        workers, initializer=_init_worker, initargs=(models_dir, max_faces)
    )


# ---------------------------------------------------------------------------- import


def default_workers() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def _progress(total: int, initial: int, desc: str, quiet: bool) -> Any:
    from tqdm import tqdm

    return tqdm(
        total=total,
        initial=initial,
        desc=desc,
        unit="img",
        file=sys.stderr,
        disable=quiet or not sys.stderr.isatty(),
        smoothing=0.05,
    )


class _Importer:
    """The single writer: adds detected faces in small batches, journals them, logs acks."""

    def __init__(
        self,
        lib: Any,
        appid: str,
        group: str,
        items: list[Item],
        report: Any,  # a csv.writer
        ack: IO[str] | None,
    ) -> None:
        self.lib, self.appid, self.group, self.items = lib, appid, group, items
        self.report, self.ack = report, ack
        self.pending: list[Detected] = []
        self.counts = {"imported": 0, "skipped": 0, "failed": 0, "faces": 0}

    def row(
        self, item: Item, status: str, code: int | str = "", reason: str = "", token: str = ""
    ) -> None:
        self.report.writerow([item.rel, item.user_id, status, code, reason, token])
        self.counts[status] += 1

    def flush(self) -> None:
        """One face_add_many for the pending images; journal entries and acks after it returns."""
        if not self.pending:
            return
        from facecore.store.library import NewFace

        batch, owners = [], []
        for d in self.pending:
            item = self.items[d.index]
            for token, emb, box, crop in d.faces:
                face = NewFace(token, emb, box, crop)
                batch.append((item.user_id, face, item.user_info))
                owners.append(d.index)
        results = self.lib.face_add_many(self.appid, self.group, batch) if batch else []
        outcome: dict[int, list[tuple[str, str, int | str, str]]] = {}
        for idx, (_, face, _), res in zip(owners, batch, results):
            if isinstance(res, FaceCoreError):
                status = "skipped" if isinstance(res, FaceExists) else "failed"
                outcome.setdefault(idx, []).append(
                    (status, face.face_token, report_code(res), str(res))
                )
            else:
                outcome.setdefault(idx, []).append(("imported", face.face_token, "", ""))
                if self.ack is not None:
                    item = self.items[idx]
                    self.ack.write(f"{item.rel},{item.user_id},{face.face_token}\n")
        if self.ack is not None:
            self.ack.flush()
        for d in self.pending:
            item = self.items[d.index]
            key = journal_key(self.appid, self.group, item)
            if d.error is not None:
                self.row(item, "failed", d.error[0], d.error[1])
                if d.error[0] != INTERNAL:  # a verdict on the file itself: kept, not redone
                    entry = {"failed": d.error[0], "reason": d.error[1]}
                    self.lib.kv_put(JOURNAL, key, json.dumps(entry).encode())
                continue
            faces = outcome[d.index]
            statuses = {s for s, _, _, _ in faces}
            tokens = " ".join(t for _, t, _, _ in faces)
            if "imported" in statuses:
                self.row(item, "imported", token=tokens)
                self.counts["faces"] += sum(s == "imported" for s, _, _, _ in faces)
            elif statuses == {"skipped"}:
                self.row(
                    item,
                    "skipped",
                    report_code(FaceExists),
                    "the face is already in the group",
                    tokens,
                )
            else:
                bad = next(f for f in faces if f[0] == "failed")
                self.row(item, "failed", bad[2], bad[3], tokens)
                continue  # not journaled: a later run tries again
            self.lib.kv_put(JOURNAL, key, json.dumps({"tokens": tokens}).encode())
        self.pending = []


def _shared_url(args: argparse.Namespace) -> str | None:
    """The --store URL when it names PostgreSQL; None for the embedded store of --data."""
    try:
        return shared_url(getattr(args, "store", ""))
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None


def open_library(args: argparse.Namespace) -> Any:
    """The library the command works on: the shared PostgreSQL store of --store (this process is
    then one more instance beside the running servers), else the embedded store in --data (no
    other process may hold it)."""
    from facecore.store.library import FaceLibrary

    url = _shared_url(args)
    if url is None:
        return FaceLibrary(Path(args.data), sync_writes=getattr(args, "sync", False))
    from facecore.store.postgres import PostgresStore, redact

    try:
        return FaceLibrary(Path(args.data), store=PostgresStore(url))
    except FaceCoreError as e:
        raise SystemExit(f"error: cannot open the library at {redact(url)} ({e})") from None


def cmd_import(args: argparse.Namespace) -> int:
    from facecore.store.library import check_appid, check_group

    root = Path(args.dir)
    if not root.is_dir():
        raise SystemExit(f"error: {root} is not a directory")
    try:
        appid, group = check_appid(args.appid), check_group(args.group)
    except FaceCoreError as e:
        raise SystemExit(f"error: {e}") from None
    if args.max_faces < 1:
        raise SystemExit("error: --max-faces must be at least 1")
    items = read_csv(root, Path(args.csv)) if args.csv else scan_folders(root)
    data = Path(args.data)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report_path = (
        Path(args.report)
        if args.report
        else (data / "reports" / f"import-{appid}-{group}-{stamp}.csv")
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    interrupted = False
    detected = 0  # images the workers answered in this run
    with contextlib.ExitStack() as stack:
        lib = open_library(args)
        stack.callback(lib.close)
        rf = stack.enter_context(open(report_path, "w", newline="", encoding="utf-8"))
        ack = (
            stack.enter_context(open(args.ack_log, "a", encoding="utf-8")) if args.ack_log else None
        )
        report = csv.writer(rf)
        report.writerow(["path", "user_id", "status", "code", "reason", "face_token"])
        imp = _Importer(lib, appid, group, items, report, ack)
        todo: list[tuple[int, str]] = []
        for i, item in enumerate(items):
            if item.error is not None:
                imp.row(item, "failed", item.error[0], item.error[1])
                continue
            done = lib.kv_get(JOURNAL, journal_key(appid, group, item))
            if done is None:
                todo.append((i, str(item.path)))
                continue
            entry = json.loads(done)
            if "failed" in entry and args.retry_failed:
                todo.append((i, str(item.path)))
            elif "failed" in entry:
                imp.row(item, "failed", entry["failed"], f"{entry['reason']} (earlier run)")
            else:
                imp.row(item, "skipped", "", "imported by an earlier run", entry["tokens"])
        bar = stack.enter_context(
            _progress(len(items), len(items) - len(todo), "import", args.quiet)
        )
        if todo:
            pool = _pool(args.workers, args.models, args.max_faces)
            stack.callback(pool.join)
            stack.callback(pool.terminate)
            try:
                last = time.monotonic()
                for d in pool.imap_unordered(_detect_file, todo, chunksize=1):
                    detected += 1
                    imp.pending.append(d)
                    bar.update(1)
                    if len(imp.pending) >= args.batch or time.monotonic() - last > 0.5:
                        imp.flush()
                        last = time.monotonic()
            except KeyboardInterrupt:
                interrupted = True
            except WorkerError as e:
                imp.flush()
                raise SystemExit(f"error: {e}") from None
            except FaceCoreError as e:  # from the library, e.g. the group is being deleted
                raise SystemExit(f"error: {e}") from None
            imp.flush()  # what the workers finished is kept, also after Ctrl-C
    seconds = time.monotonic() - started
    summary = {
        **imp.counts,
        "images": len(items),
        "detected": detected,
        "seconds": round(seconds, 2),
        "images_per_s": round(detected / seconds, 1) if seconds > 0 else None,
        "report": str(report_path),
        "interrupted": interrupted,
    }
    print(json.dumps(summary))
    return 130 if interrupted else 0


# ---------------------------------------------------------------------------- reindex and stats


def _chunks(it: Iterable[Any], n: int) -> Iterator[list[Any]]:
    chunk = []
    for x in it:
        chunk.append(x)
        if len(chunk) == n:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def cmd_reindex(args: argparse.Namespace) -> int:
    """New embeddings for every stored face from its stored crop; failures are reported only."""
    data = Path(args.data)
    lib = open_library(args)
    started = time.monotonic()
    faces = list(lib.iter_faces(args.appid))
    counts = {"faces": len(faces), "reindexed": 0, "failed": 0}
    report_path = (
        Path(args.report)
        if args.report
        else (data / "reports" / f"reindex-{time.strftime('%Y%m%d-%H%M%S')}.csv")
    )
    report_path.parent.mkdir(parents=True, exist_ok=True)
    bar = _progress(len(faces), 0, "reindex", args.quiet)
    pool = _pool(args.workers, args.models, 1) if faces else None
    try:
        with open(report_path, "w", newline="", encoding="utf-8") as rf:
            report = csv.writer(rf)
            report.writerow(["appid", "group_id", "user_id", "face_token", "reason"])

            def tasks(chunk: list[int]) -> Iterator[tuple[int, bytes]]:
                for i in chunk:
                    appid, group, user, token = faces[i]
                    image = lib.face_image(appid, group, token)
                    if image is None:
                        report.writerow([appid, group, user, token, "no stored image"])
                        counts["failed"] += 1
                        bar.update(1)
                        continue
                    yield i, image

            # Chunks bound the crops held in memory; the pool keeps both workers busy within one.
            for chunk in _chunks(range(len(faces)), 256):
                assert pool is not None
                work = list(tasks(chunk))  # read here: imap consumes its iterable in a thread
                for i, emb, reason in pool.imap_unordered(_embed_crop, work, chunksize=1):
                    appid, group, user, token = faces[i]
                    if emb is None:
                        report.writerow([appid, group, user, token, reason])
                        counts["failed"] += 1
                    else:
                        lib.set_embedding(appid, group, token, emb)
                        counts["reindexed"] += 1
                    bar.update(1)
    except WorkerError as e:
        raise SystemExit(f"error: {e}") from None
    finally:
        if pool is not None:
            pool.terminate()
            pool.join()
        bar.close()
        lib.close()
    seconds = time.monotonic() - started
    print(json.dumps({**counts, "seconds": round(seconds, 2), "report": str(report_path)}))
    return 0


def cmd_stats(args: argparse.Namespace) -> int:
    with open_library(args) as lib:
        print(json.dumps(lib.stats(), indent=2))
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """create / list / revoke API keys: through a running server's admin socket, or on the store
    directly when no server runs (RocksDB admits one process at a time)."""
    from facecore.store.keys import ADMIN_SOCKET, STORE_DIR, KeyStore, admin_call, administer

    request: dict[str, object] = {"op": args.action}
    if args.action == "create":
        request.update(appid=args.appid, name=args.name)
    elif args.action == "list" and args.appid is not None:
        request["appid"] = args.appid
    elif args.action == "revoke":
        request["api_key"] = args.api_key
    data = Path(args.data)
    sock = data / ADMIN_SOCKET
    try:
        answer = admin_call(sock, request)
    except OSError:  # no server listens (no socket, or a stale one): open the store here
        url = _shared_url(args)
        try:
            shared = None
            if url is not None:
                from facecore.store.postgres import PostgresStore

                shared = PostgresStore(url, "auth", pool_size=1)
            store = KeyStore(data / STORE_DIR, store=shared)
        except Exception as e:  # noqa: BLE001 (rocksdict raises a bare Exception for a held lock)
            raise SystemExit(
                f"error: cannot open the key store {data / STORE_DIR} ({e}); if a server runs "
                f"on {data}, its admin socket {sock} must be reachable"
            ) from None
        try:
            answer = administer(store, request)
        finally:
            store.close()
    if not answer.get("ok"):
        print(f"error: {answer.get('error')}", file=sys.stderr)
        return 1
    result = answer["result"]
    if args.action == "list":
        for key in result:
            print(json.dumps(key))
    else:
        print(json.dumps(result, indent=2))
    if args.action == "create":
        print("The secret key is shown only this once; store it now.", file=sys.stderr)
    return 0


# ---------------------------------------------------------------------------- backup, restore, verify

ADMIN_TIMEOUT = 24 * 3600.0  # a backup or verify of a large library runs for minutes, not a day


def _through_server(data: Path, request: dict[str, object]) -> dict[str, Any] | None:
    """A running server's answer over its admin socket; None when no server listens there."""
    from facecore.store.backup import server_listens
    from facecore.store.keys import ADMIN_SOCKET, admin_call

    if not server_listens(data):
        return None
    try:
        return admin_call(data / ADMIN_SOCKET, request, ADMIN_TIMEOUT)
    except (OSError, ValueError) as e:  # it listened a moment ago: say so, do not open the store
        raise SystemExit(f"error: the server on {data} did not answer: {e}") from None


def _answered(answer: dict[str, Any]) -> Any:
    if not answer.get("ok"):
        raise SystemExit(f"error: {answer.get('error')}")
    return answer["result"]


def _show_report(report: dict[str, Any], as_json: bool) -> None:
    from facecore.store.backup import iter_report

    if as_json:
        print(json.dumps(report, indent=2))
    else:
        for line in iter_report(report):
            print(line)


def cmd_backup(args: argparse.Namespace) -> int:
    """An online backup through a running server's admin socket, or of a data directory that no
    process holds."""
    from facecore.store.backup import BackupError, backup_offline

    data, dest = Path(args.data), Path(args.dest).absolute()  # the server resolves nothing
    answer = _through_server(data, {"op": "backup", "dest": str(dest)})
    if answer is not None:
        manifest = _answered(answer)
    else:
        try:
            manifest = backup_offline(data, dest)
        except BackupError as e:
            raise SystemExit(f"error: {e}") from None
    print(json.dumps(manifest, indent=2))
    return 0


def _verify_here(args: argparse.Namespace, repair: bool) -> dict[str, Any]:
    """Open the library of --store, or of a data directory no process holds, and verify it."""
    from facecore.store.library import STORE_DIR

    data = Path(args.data)
    if _shared_url(args) is None and not (data / STORE_DIR).is_dir():
        raise SystemExit(f"error: {data} holds no face library ({STORE_DIR}/ is missing)")
    try:
        lib = open_library(args)
    except Exception as e:  # noqa: BLE001 (rocksdict raises a bare Exception for a held lock)
        raise SystemExit(f"error: cannot open the library in {data} ({e})") from None
    try:
        lib.wait_deletions()  # groups left being deleted: gone before the check, not skipped
        report: dict[str, Any] = lib.verify(repair).as_dict()
    finally:
        lib.close()
    return report


def cmd_verify(args: argparse.Namespace) -> int:
    """Check (and with --repair fix) the library; exit 1 while problems remain."""
    # A shared store is verified here, as one more instance (the servers' admin sockets are for
    # the embedded store, which only they can open).
    answer = (
        None
        if _shared_url(args)
        else _through_server(Path(args.data), {"op": "verify", "repair": args.repair})
    )
    report = _answered(answer) if answer is not None else _verify_here(args, args.repair)
    _show_report(report, args.json)
    return 0 if report["ok"] else 1


def cmd_restore(args: argparse.Namespace) -> int:
    """Restore a backup into a data directory no process holds, then verify it."""
    from facecore.store.backup import BackupError, counts_match, restore

    data = Path(args.data)
    try:
        manifest = restore(Path(args.src), data, force=args.force)
    except BackupError as e:
        raise SystemExit(f"error: {e}") from None
    report = _verify_here(args, repair=False)
    report["matches_manifest"] = counts_match(manifest, report["counts"])
    report["backup"] = {k: manifest[k] for k in ("created", "facecore_version", "library")}
    _show_report(report, args.json)
    if not args.json:
        print(
            f"restored the backup of {manifest['created']} into {data}"
            + ("" if report["matches_manifest"] else "; its counts differ from the manifest's")
        )
    return 0 if report["ok"] and report["matches_manifest"] else 1


# ---------------------------------------------------------------------------- entry point


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="facecore", description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="command", required=True)

    def common(s: argparse.ArgumentParser, workers: bool = True) -> None:
        s.add_argument("--data", default="./data", help="library directory (default ./data)")
        if workers:
            s.add_argument(
                "--workers",
                type=int,
                default=default_workers(),
                help="detection processes (default: the usable cores)",
            )
            s.add_argument("--models", default=None, help="models directory (default: built-in)")
            s.add_argument("--report", default=None, help="CSV report path")
            s.add_argument("--quiet", action="store_true", help="no progress bar")
            s.add_argument(
                "--sync",
                action="store_true",
                help="fsync every write (survives power loss, not only a crash)",
            )

    def shared(s: argparse.ArgumentParser) -> None:
        s.add_argument(
            "--store",
            default=os.environ.get("FACECORE_STORE", ""),
            help="the servers' --store, when it is a postgresql:// URL: work on that shared "
            "library (beside running servers) instead of --data's (default: $FACECORE_STORE)",
        )

    s = sub.add_parser("import", help="add one folder per user, or a CSV list, to a group")
    s.add_argument("dir", help="input directory: one sub-folder per user, or the CSV's base")
    s.add_argument("--appid", required=True)
    s.add_argument("--group", required=True)
    s.add_argument("--csv", default=None, help="rows path,user_id[,user_info]; path under DIR")
    s.add_argument(
        "--max-faces",
        type=int,
        default=1,
        help="register up to this many faces per image, largest first (default 1)",
    )
    s.add_argument("--batch", type=int, default=32, help="images per library write (default 32)")
    s.add_argument(
        "--ack-log",
        default=None,
        help="append 'path,user_id,face_token' per face once its add is durable",
    )
    s.add_argument(
        "--retry-failed",
        action="store_true",
        help="detect again images an earlier run could not import",
    )
    common(s)
    shared(s)
    s.set_defaults(func=cmd_import)

    s = sub.add_parser("reindex", help="recompute every embedding from the stored face images")
    s.add_argument("--appid", default=None, help="only this appid (default: all)")
    common(s)
    shared(s)
    s.set_defaults(func=cmd_reindex)

    s = sub.add_parser("stats", help="print the library's face counts as JSON")
    common(s, workers=False)
    shared(s)
    s.set_defaults(func=cmd_stats)

    s = sub.add_parser("keys", help="API keys for the server's --auth (create, list, revoke)")
    keys = s.add_subparsers(dest="action", required=True)
    k = keys.add_parser("create", help="a new API key and secret key for an appid")
    k.add_argument("--appid", required=True)
    k.add_argument("--name", default="", help="a note to tell keys apart (who, which device)")
    common(k, workers=False)
    k = keys.add_parser("list", help="the keys (never their secrets), one JSON object a line")
    k.add_argument("--appid", default=None, help="only this appid's keys")
    common(k, workers=False)
    k = keys.add_parser("revoke", help="revoke a key; its access tokens stop working at once")
    k.add_argument("api_key")
    common(k, workers=False)
    for k in keys.choices.values():
        shared(k)
    s.set_defaults(func=cmd_keys)

    s = sub.add_parser(
        "backup",
        help="copy the library and the keys into DEST, online through a running server",
    )
    s.add_argument("dest", help="the backup directory to create (it must not exist)")
    common(s, workers=False)
    s.set_defaults(func=cmd_backup)

    s = sub.add_parser(
        "restore", help="restore a backup into a data directory no server holds, then verify it"
    )
    s.add_argument("src", help="a directory made by `facecore backup`")
    s.add_argument("--force", action="store_true", help="replace the stores already in --data")
    s.add_argument("--json", action="store_true", help="print the verify report as JSON")
    common(s, workers=False)
    s.set_defaults(func=cmd_restore)

    s = sub.add_parser(
        "verify", help="check every record and group index; exit 1 while problems remain"
    )
    s.add_argument("--repair", action="store_true", help="fix what can be fixed, then check again")
    s.add_argument("--json", action="store_true", help="print the report as JSON")
    common(s, workers=False)
    shared(s)
    s.set_defaults(func=cmd_verify)

    from facecore_license.cli import fill

    s = sub.add_parser(
        "license",
        help="licences and authd: keygen, fingerprint, issue, verify, secret, serve, status",
    )
    fill(s)  # docs/license.md
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "license":
        from facecore_license.cli import run

        return run(args)
    if getattr(args, "workers", 1) < 1:
        raise SystemExit("error: --workers must be at least 1")
    code: int = args.func(args)
    return code


if __name__ == "__main__":
    # Run the importable module, not this __main__ copy, so that what the spawned workers pickle
    # (functions, WorkerError) names facecore.cli on both sides.
    from facecore.cli import main as _main

    sys.exit(_main())
