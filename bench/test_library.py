"""The face library (``facecore.store.library.FaceLibrary``) at N = 1M faces, d = 128.

Data: the suite's face-like base (``_data.load(128)``: 4 noisy samples around each of 250,000
identity centres) enrolled as one face per user: face ``i`` is user ``u{i}`` with token
``f"{i:032x}"``. Two libraries are built once and cached under ``_data.CACHE_DIR``:

- ``library-1m``: all 1M faces in one group, through ``face_add_many`` in batches of 1000 (the
  build is timed, per 100k faces too; later runs report it as cached);
- ``library-10x100k``: the same faces in 10 groups of 100k (faces ``100k j ..`` in group ``g{j}``).

Queries: ``QUERIES`` stored faces (seeded pick) plus noise of norm ``QUERY_NOISE`` (cosine ~0.995 to
the stored face, ~0.73 to its three look-alikes); the answer is right when the top-1 user is the
stored face's user. Every benchmark checks its answers (``MIN_TOP1``).

Measured:

- add throughput: the 1M build; every run also 100k faces in batches of 1000 and 10k single
  ``face_add`` calls into fresh scratch libraries;
- open + first identify in a fresh subprocess: from the saved index snapshot, and with the snapshot
  removed (rebuilt from RocksDB). The OS page cache is not dropped (no root): the files were
  usually just written or read, so this is a warm-cache open;
- resident memory per face in that subprocess: ``RssAnon`` growth across open + one identify
  (after ``malloc_trim``), and ``VmRSS`` growth (which also counts memory-mapped file pages: the
  snapshot's vectors and graph are memory-mapped, so they are file pages, not anonymous);
- identify latency, one query a call: 1 group of 1M (max_user_num 1 and 20) and 10 groups of
  100k, on 1 and 2 threads, against ``VectorIndex.search`` alone on the same saved indexes (with
  the library's candidate count k) and a numpy float32 brute force (``q @ base.T``, argmax).

Threads: ``identify`` passes no thread count to ``VectorIndex.search``, so the index's own default
applies (``threads=0``: every core of the process's CPU affinity). The 1-thread rows pin the
calling thread to one CPU (``os.sched_setaffinity``), which the scan kernel's thread count follows;
numpy's BLAS is limited with ``threadpoolctl`` as well.

The subprocess measurement is this file run as a script: ``python bench/test_library.py open ...``.
"""

from __future__ import annotations

import ctypes
import gc
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent
if str(BENCH) not in sys.path:  # run as a script (the subprocess): import _data like conftest does
    sys.path.insert(0, str(BENCH))

from _data import CACHE_DIR, SEED, Dataset

APPID = "bench"
GROUP_1M = "g1m"
N_GROUPS = 10
ADD_BATCH = 1000
SEGMENT = 100_000  # the 1M build is also timed per segment of this many faces
SCRATCH_MANY = 100_000  # faces added through face_add_many on every run
SCRATCH_SINGLE = 10_000  # faces added through face_add on every run
QUERIES = 1000
QUERY_NOISE = 0.1  # norm of the noise added to a stored face to make its query
QUERY_SEED = 7
MIN_TOP1 = 0.99  # share of answers whose top-1 user is the stored face's user
MIN_CHECKED = 100
BUDGET_S = 2.0
OPEN_TARGET_S = 5.0
BYTES_TARGET = 400.0
MAX_USERS = (1, 20)
THREADS = (1, 2)
# A smaller N (FACECORE_BENCH_LIBRARY_N, a multiple of 10) only to try the suite out quickly.
N_FACES = int(os.environ.get("FACECORE_BENCH_LIBRARY_N", "1000000"))
# The groups' index mode, FaceLibrary(index_mode=...): "exact" is the library's default (int8
# scans); "auto" adds an HNSW graph to a group from 500k faces, "hnsw" always.
INDEX_MODE = os.environ.get("FACECORE_BENCH_LIBRARY_INDEX", "exact")
_SUFFIX = ("" if N_FACES == 1_000_000 else f"-n{N_FACES}") + (
    "" if INDEX_MODE == "exact" else f"-{INDEX_MODE}"
)
LIB_1M = CACHE_DIR / f"library-1m{_SUFFIX}"
LIB_10 = CACHE_DIR / f"library-10x100k{_SUFFIX}"


def user(i: int) -> str:
    return f"u{i}"


def token(i: int) -> str:
    return f"{i:032x}"


def groups_10() -> list[str]:
    return [f"g{j}" for j in range(N_GROUPS)]


# --------------------------------------------------------------------------- memory, threads


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def proc_status() -> dict[str, int]:
    """RssAnon, RssFile, VmRSS of this process in bytes (after handing freed heap back)."""
    _malloc_trim()
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            name = line.split(":", 1)[0]
            if name in ("RssAnon", "RssFile", "VmRSS"):
                out[name] = int(line.split()[1]) * 1024
    return out


@contextmanager
def threads_limited(threads: int) -> Iterator[None]:
    """Run with ``threads`` threads: BLAS/OpenMP pools limited, and for one thread the calling
    thread pinned to one CPU (our scan's default thread count is the CPU affinity's size)."""
    from threadpoolctl import threadpool_limits

    cpus = os.sched_getaffinity(0)
    if threads > len(cpus):
        pytest.fail(f"{threads} threads asked, the process may use {len(cpus)} CPUs")
    pinned = threads < len(cpus)
    if pinned:
        os.sched_setaffinity(0, sorted(cpus)[:threads])
    try:
        with threadpool_limits(limits=threads):
            yield
    finally:
        if pinned:
            os.sched_setaffinity(0, cpus)


# --------------------------------------------------------------------------- data, libraries


def force_index_mode() -> None:
    """Check FACECORE_BENCH_LIBRARY_INDEX; the libraries are opened with it (open_library)."""
    if INDEX_MODE not in ("exact", "auto", "hnsw"):
        raise ValueError(f"FACECORE_BENCH_LIBRARY_INDEX must be exact, auto or hnsw: {INDEX_MODE}")


def open_library(path: str | Path) -> Any:
    from facecore.store.library import FaceLibrary

    return FaceLibrary(path, index_mode=INDEX_MODE)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Faces:
    base: np.ndarray  # (N, d) float32, the enrolled faces
    rows: np.ndarray  # (QUERIES,) the stored face each query comes from
    queries: np.ndarray  # (QUERIES, d) float32 unit

    @property
    def n(self) -> int:
        return int(self.base.shape[0])


def make_queries(base: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, QUERY_SEED])
    rows = rng.choice(base.shape[0], QUERIES, replace=False)
    noise = rng.standard_normal((QUERIES, base.shape[1]), dtype=np.float32)
    noise *= np.float32(QUERY_NOISE / np.sqrt(base.shape[1]))
    q = base[rows] + noise
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    return rows.astype(np.int64), q.astype(np.float32)


def add_many(lib: Any, group: str, base: np.ndarray, start: int, stop: int) -> None:
    """Faces [start, stop) into ``group`` through face_add_many, ADD_BATCH a call; all must land."""
    from facecore.store.library import NewFace

    for s in range(start, stop, ADD_BATCH):
        e = min(stop, s + ADD_BATCH)
        items = [(user(i), NewFace(token(i), base[i]), None) for i in range(s, e)]
        out = lib.face_add_many(APPID, group, items)
        bad = [r for r in out if isinstance(r, Exception)]
        assert not bad, f"face_add_many refused {len(bad)} faces: {bad[0]!r}"


def _record(path: Path) -> Path:
    return path.with_name(path.name + ".json")


def cached_library(
    path: Path, base: np.ndarray, layout: dict[str, tuple[int, int]]
) -> dict[str, Any]:
    """Build the library at ``path`` once (``layout``: group -> face range), timing each segment;
    return the build record (``cached`` True when an earlier run built it)."""

    record = _record(path)
    key = {"data": f"n{base.shape[0]}-d{base.shape[1]}-s{SEED}", "layout": layout}
    if record.exists() and path.exists():
        info: dict[str, Any] = json.loads(record.read_text())
        if info.get("key") == json.loads(json.dumps(key)):
            return {**info, "cached": True}
    shutil.rmtree(path, ignore_errors=True)
    record.unlink(missing_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    segments = []
    lib = open_library(tmp)
    t_all = time.perf_counter()
    for group, (start, stop) in layout.items():
        for s in range(start, stop, SEGMENT):
            t0 = time.perf_counter()
            add_many(lib, group, base, s, min(stop, s + SEGMENT))
            segments.append(time.perf_counter() - t0)
            # Progress of a long build (shown with pytest -s).
            print(f"{path.name}: {group} {min(stop, s + SEGMENT)} faces, +{segments[-1]:.1f} s")
    add_s = time.perf_counter() - t_all
    faces = lib.stats()["faces"]
    t0 = time.perf_counter()
    lib.close()
    close_s = time.perf_counter() - t0
    assert faces == sum(stop - start for start, stop in layout.values())
    tmp.rename(path)  # RocksDB and the snapshot refer to their files by relative names
    info = {"key": key, "faces": faces, "add_s": add_s, "segment_s": segments, "close_s": close_s}
    record.write_text(json.dumps(info))
    return {**info, "cached": False}


def saved_indexes(path: Path) -> dict[str, Any]:
    """group -> its VectorIndex from the library's saved snapshot (memory-mapped, as the library
    itself opens it): the same stored vectors the library searches."""
    from facecore.search import VectorIndex

    d = path / "indexes"
    manifest = json.loads((d / "manifest.json").read_text())
    return {e["group"]: VectorIndex.load(d / e["index"]) for e in manifest["groups"]}


# --------------------------------------------------------------------------- the subprocess


def child_open(lib_path: str, groups: str, queries_npy: str, expected_user: str) -> None:
    """Fresh process: memory before, open the library, one identify, memory after; JSON out."""
    t_start = time.perf_counter()

    force_index_mode()

    q = np.load(queries_npy)
    gc.collect()
    before = proc_status()
    import_s = time.perf_counter() - t_start
    t0 = time.perf_counter()
    lib = open_library(lib_path)
    t1 = time.perf_counter()
    matches = lib.identify(APPID, groups.split(","), q)
    t2 = time.perf_counter()
    gc.collect()
    after = proc_status()
    faces = lib.stats()["faces"]
    t3 = time.perf_counter()
    lib.close()
    close_s = time.perf_counter() - t3
    print(
        json.dumps(
            {
                "import_s": import_s,
                "open_s": t1 - t0,
                "identify_s": t2 - t1,
                "open_identify_s": t2 - t0,
                "close_s": close_s,
                "faces": faces,
                "top1_user": matches[0].user_id,
                "expected_user": expected_user,
                "before": before,
                "after": after,
            }
        )
    )


def run_child(
    lib_path: Path, groups: Sequence[str], query: np.ndarray, expected: str, tmp: Path
) -> dict[str, Any]:
    qfile = tmp / "query.npy"
    np.save(qfile, query)
    t0 = time.perf_counter()
    proc = subprocess.run(
        [sys.executable, __file__, "open", str(lib_path), ",".join(groups), str(qfile), expected],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    wall = time.perf_counter() - t0
    assert proc.returncode == 0, proc.stderr[-4000:]
    out: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    out["process_wall_s"] = wall
    return out


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def faces() -> Iterator[Faces]:
    import _data

    force_index_mode()
    data: Dataset = _data.load(128)
    base = data.base[:N_FACES]
    rows, queries = make_queries(base)
    yield Faces(base, rows, queries)
    gc.collect()


@pytest.fixture(scope="module")
def build_1m(faces: Faces) -> dict[str, Any]:
    return cached_library(LIB_1M, faces.base, {GROUP_1M: (0, faces.n)})


@pytest.fixture(scope="module")
def build_10(faces: Faces) -> dict[str, Any]:
    per = faces.n // N_GROUPS
    layout = {g: (j * per, (j + 1) * per) for j, g in enumerate(groups_10())}
    return cached_library(LIB_10, faces.base, layout)


class Opened:
    """The two libraries opened in this process on first use (after the subprocess tests, which
    need them closed: RocksDB allows one process at a time), with their saved indexes."""

    def __init__(self) -> None:
        self.libs: dict[Path, Any] = {}
        self.indexes: dict[Path, dict[str, Any]] = {}

    def lib(self, path: Path) -> Any:

        if path not in self.libs:
            self.libs[path] = open_library(path)
            self.indexes[path] = saved_indexes(path)
        return self.libs[path]

    def close(self) -> None:
        self.indexes.clear()
        for lib in self.libs.values():
            lib.close()
        self.libs.clear()


@pytest.fixture(scope="module")
def opened(build_1m: dict[str, Any], build_10: dict[str, Any]) -> Iterator[Opened]:
    o = Opened()
    yield o
    o.close()


# --------------------------------------------------------------------------- add throughput


@pytest.mark.benchmark(group="library add")
@pytest.mark.parametrize("call", ["add_many", "add_single"])
def test_library_add(
    benchmark: Any,
    faces: Faces,
    build_1m: dict[str, Any],
    build_10: dict[str, Any],
    tmp_path: Path,
    call: str,
) -> None:
    """Faces a second into a fresh library (one new group): 100k through face_add_many in batches
    of 1000, or 10k single face_add calls; plus the 1M build's record. Answers checked after."""
    from facecore.store.library import NewFace

    n = min(faces.n, SCRATCH_MANY if call == "add_many" else SCRATCH_SINGLE)
    lib = open_library(tmp_path / "lib")

    def add() -> None:
        if call == "add_many":
            add_many(lib, "scratch", faces.base, 0, n)
        else:
            for i in range(n):
                lib.face_add(APPID, "scratch", user(i), NewFace(token(i), faces.base[i]))

    try:
        benchmark.pedantic(add, rounds=1, iterations=1, warmup_rounds=0)
        assert lib.stats()["faces"] == n
        mine = np.flatnonzero(faces.rows < n)[:MIN_CHECKED]
        got = [lib.identify(APPID, ["scratch"], faces.queries[i])[0].user_id for i in mine]
        correct = float(np.mean([g == user(int(faces.rows[i])) for g, i in zip(got, mine)]))
    finally:
        lib.close()
    benchmark.extra_info.update(
        kind="library-add",
        index_mode=INDEX_MODE,
        call=call,
        batch=ADD_BATCH if call == "add_many" else 1,
        faces=n,
        build_1m=build_1m,
        build_10=build_10,
        top1_correct=correct,
        checked_queries=len(mine),
    )
    assert correct >= MIN_TOP1, f"top-1 user right for {correct:.3f} of the queries"


# --------------------------------------------------------------------------- open + first identify


@pytest.mark.benchmark(group="library open + first identify (fresh process)")
@pytest.mark.parametrize("start", ["snapshot", "rebuild"])
def test_library_open(
    benchmark: Any, faces: Faces, build_1m: dict[str, Any], tmp_path: Path, start: str
) -> None:
    """Open the 1M library in a fresh process and answer one identify; memory growth per face.
    ``rebuild`` removes the saved snapshot first (the child's close saves it again)."""
    if start == "rebuild":
        shutil.rmtree(LIB_1M / "indexes")
    qi = 0
    expected = user(int(faces.rows[qi]))
    out = benchmark.pedantic(
        run_child,
        args=(LIB_1M, [GROUP_1M], faces.queries[qi], expected, tmp_path),
        rounds=1,
        iterations=1,
        warmup_rounds=0,
    )
    assert (LIB_1M / "indexes" / "manifest.json").exists(), "close() did not save the snapshot"
    before, after = out["before"], out["after"]
    n = out["faces"]
    benchmark.extra_info.update(
        kind="library-open",
        index_mode=INDEX_MODE,
        start=start,
        faces=n,
        import_s=out["import_s"],
        open_s=out["open_s"],
        first_identify_s=out["identify_s"],
        open_identify_s=out["open_identify_s"],
        close_s=out["close_s"],
        process_wall_s=out["process_wall_s"],
        rss_anon_per_face=(after["RssAnon"] - before["RssAnon"]) / n,
        rss_file_per_face=(after["RssFile"] - before["RssFile"]) / n,
        vm_rss_per_face=(after["VmRSS"] - before["VmRSS"]) / n,
        rss_anon_before_mb=before["RssAnon"] / 2**20,
        rss_anon_after_mb=after["RssAnon"] / 2**20,
        open_target_s=OPEN_TARGET_S,
        bytes_target=BYTES_TARGET,
        top1_user=out["top1_user"],
        expected_user=expected,
    )
    assert n == faces.n
    assert out["top1_user"] == expected, out


# --------------------------------------------------------------------------- identify latency


@dataclass(frozen=True)
class Case:
    name: str
    engine: str  # library | index | numpy-f32
    groups: int  # 1 (1M) or 10 (100k each)
    max_users: int

    @property
    def k(self) -> int:
        """The candidates identify_many asks each group's index for (its first try)."""
        return max(4 * self.max_users, 16)


CASES = [
    Case(f"{engine}-{g}g-m{m}", engine, g, m)
    for g in (1, N_GROUPS)
    for m in MAX_USERS
    for engine in ("library", "index")
] + [Case("numpy-f32", "numpy-f32", 1, 1)]


def _searcher(case: Case, opened: Opened, faces: Faces) -> Callable[[np.ndarray], str]:
    """A call ``query (d,) -> top-1 user`` for the case."""
    path = LIB_1M if case.groups == 1 else LIB_10
    groups = [GROUP_1M] if case.groups == 1 else groups_10()
    if case.engine == "library":
        lib = opened.lib(path)

        def ask_library(q: np.ndarray) -> str:
            matches = lib.identify(APPID, groups, q, max_user_num=case.max_users)
            assert len(matches) == case.max_users
            return str(matches[0].user_id)

        return ask_library
    if case.engine == "index":
        opened.lib(path)
        indexes = [opened.indexes[path][g] for g in groups]
        per = faces.n // len(groups)

        def ask_index(q: np.ndarray) -> str:
            best, best_score = -1, -np.inf
            for j, index in enumerate(indexes):
                hits = index.search(q, case.k)
                if hits.scores[0, 0] > best_score:
                    best, best_score = j * per + int(hits.ids[0, 0]), hits.scores[0, 0]
            return user(best)

        return ask_index
    base = faces.base

    def ask_numpy(q: np.ndarray) -> str:
        return user(int(np.argmax(base @ q)))

    return ask_numpy


@pytest.mark.parametrize("threads", THREADS, ids=lambda t: f"{t}t")
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.name)
def test_library_identify(
    benchmark: Any, faces: Faces, opened: Opened, case: Case, threads: int
) -> None:
    """One query a call; round i asks query i; every answer's top-1 user is checked."""
    benchmark.group = f"library identify, {case.groups} group(s), {threads} thread(s)"
    ask = _searcher(case, opened, faces)
    asked: list[int] = []
    answers: list[str] = []

    def one_call() -> None:
        i = len(asked) % QUERIES
        answers.append(ask(faces.queries[i]))
        asked.append(i)

    with threads_limited(threads):
        t0 = time.perf_counter()
        one_call()
        rounds = max(1, min(1000, int(BUDGET_S / max(time.perf_counter() - t0, 1e-9))))
        benchmark.pedantic(one_call, rounds=rounds, iterations=1, warmup_rounds=0)
        while len(asked) < MIN_CHECKED:
            one_call()
    correct = float(np.mean([a == user(int(faces.rows[i])) for a, i in zip(answers, asked)]))
    uses_hnsw = None
    if case.engine != "numpy-f32":
        path = LIB_1M if case.groups == 1 else LIB_10
        uses_hnsw = any(ix.uses_hnsw for ix in opened.indexes[path].values())
    benchmark.extra_info.update(
        kind="library-identify",
        index_mode=INDEX_MODE,
        engine=case.engine,
        groups=case.groups,
        faces_per_group=faces.n // case.groups,
        max_user_num=case.max_users,
        k=case.k if case.engine == "index" else None,
        threads=threads,
        rounds=rounds,
        checked_queries=len(set(asked)),
        top1_correct=correct,
        index_uses_hnsw=uses_hnsw,
    )
    assert correct >= MIN_TOP1, f"top-1 user right for {correct:.3f} of the queries"


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "open":
        child_open(*sys.argv[2:])
    else:
        sys.exit(f"usage: {sys.argv[0]} open LIBRARY GROUPS QUERY.npy EXPECTED_USER")
