"""What the library keeps in memory per group, how it is built from the store, and its snapshot.

One `GroupState` per (appid, group): its int8 `VectorIndex` (rows numbered per group, never
reused), its row counter and face count, its deletion mark and the lock its writers hold. It is
built by one prefix scan over the group's R/ rows, or loaded from the snapshot under `indexes/`
when that provably matches the store: the snapshot records the store's change sequence at save
time, and any write after it changes that number.
"""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from facecore.errors import FaceCoreError
from facecore.search import VectorIndex
from facecore.store import codec
from facecore.store.kv import Store, scan_prefix
from facecore.store.owners import RowOwners

Mode = Literal["exact", "auto", "hnsw"]
SNAPSHOT_FORMAT = 1
INDEX_DIR = "indexes"  # the snapshot inside the library's directory (+ ".tmp" while written)
_CHUNK = 65536  # rows added to an index at once while rebuilding


class GroupState:
    """In-memory state of one (appid, group). Writers hold `lock`; readers take none."""

    def __init__(self, dim: int, mode: Mode = "exact", threads: int = 0) -> None:
        self.index = VectorIndex(dim, kind="i8", mode=mode, threads=threads)
        self.lock = threading.Lock()
        self.next_row = 0  # rows are assigned in order and never reused
        self.faces = 0
        self.deleting = False
        # A shared store's instance: who each row belongs to (identify while the store is down).
        self.owners: RowOwners | None = None


def add_rows(g: GroupState, dim: int, rows: list[int], vecs: list[bytes]) -> None:
    emb = np.frombuffer(b"".join(vecs), np.float32).reshape(len(rows), dim)
    g.index.add(np.array(rows, np.int64), emb)
    g.faces += len(rows)
    g.next_row = max(g.next_row, rows[-1] + 1)


def rebuild(store: Store, appid: str, group: str, g: GroupState, dim: int) -> GroupState:
    """Fill the empty `g` with the group's R/ rows (one sequential scan, in row order)."""
    prefix = codec.scope("R", appid, group)
    width = 4 * dim
    rows: list[int] = []
    vecs: list[bytes] = []
    for key, value in scan_prefix(store, prefix):
        row = codec.row_of(key[len(prefix) :])
        if row is None or len(value) < width + 16:
            continue  # damaged: verify reports it
        rows.append(row)
        vecs.append(value[:width])
        if len(rows) == _CHUNK:
            add_rows(g, dim, rows, vecs)
            rows, vecs = [], []
    if rows:
        add_rows(g, dim, rows, vecs)
    return g


def load_snapshot(
    path: Path, dim: int, sequence: int, threads: int, new: Callable[[], GroupState]
) -> dict[tuple[str, str], GroupState]:
    """The groups saved under `path`/indexes if the snapshot is whole, of this dim, and was saved
    at change sequence `sequence`; else {} (the caller rebuilds)."""
    d = path / INDEX_DIR
    manifest = d / "manifest.json"
    if not manifest.exists():
        return {}
    try:
        m = json.loads(manifest.read_text())
        if m.get("format") != SNAPSHOT_FORMAT or m.get("dim") != dim:
            return {}
        if m.get("sequence") != sequence:
            return {}  # the store changed after the snapshot: rebuild
        groups = {}
        for entry in m["groups"]:
            g = new()
            if entry["index"] is not None:
                g.index = VectorIndex.load(str(d / entry["index"]))
                g.index.threads = threads  # this library's setting, not the saver's
            g.next_row, g.faces = int(entry["next_row"]), int(entry["faces"])
            if len(g.index) != g.faces:
                return {}
            groups[(entry["appid"], entry["group"])] = g
    except (OSError, ValueError, KeyError, FaceCoreError):
        return {}
    return groups


def save_snapshot(
    path: Path,
    groups: dict[tuple[str, str], GroupState],
    dim: int,
    store: Store,
) -> None:
    """Write every live group's index into `path`/indexes.tmp, flush the store, record its
    change sequence in the manifest, then rename the directory into place. A crash at any point
    leaves no snapshot or one whose sequence no longer matches."""
    d = path / INDEX_DIR
    tmp = path / f"{INDEX_DIR}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    entries = []
    for i, ((appid, group), g) in enumerate(sorted(groups.items())):
        if g.deleting:
            continue
        if g.faces:  # empty groups need no file (saving each one costs an fsync)
            g.index.save(str(tmp / f"{i}.idx"))
        entries.append(
            {
                "appid": appid,
                "group": group,
                "index": f"{i}.idx" if g.faces else None,
                "next_row": g.next_row,
                "faces": g.faces,
            }
        )
    store.flush()
    manifest = {
        "format": SNAPSHOT_FORMAT,
        "dim": dim,
        "sequence": store.sequence(),
        "groups": entries,
    }
    (tmp / "manifest.json").write_text(json.dumps(manifest))
    shutil.rmtree(d, ignore_errors=True)
    tmp.rename(d)
