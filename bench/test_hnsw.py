"""HNSW at N = 1M, d = 128: our ``VectorIndex(mode="hnsw")`` and a raw USearch index.

``facecore-hnsw`` is ``facecore.VectorIndex(128, kind="i8", mode="hnsw")``: a USearch graph over the
int8 codes whose candidates are re-scored by the exact kernel. ``usearch-hnsw`` is
``usearch.index.Index(ndim=128, metric="cos", dtype="i8")`` fed the float32 vectors, searched as
it is. Both use VectorIndex's defaults: connectivity 32, expansion_add 128, expansion_search 80.

``test_hnsw_expansion`` sweeps ``expansion_search`` to show what recall costs in latency.

Building 1M vectors takes minutes, so each 1M index is built once and saved under
``_data.CACHE_DIR`` with its build time; later runs load it (fully into memory) and report that
time with ``build_cached=True``. Every run times a 100k build of both (``test_hnsw_build``).
Recall@1 is measured against the exact scan of the same index and against the float32 reference.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import facecore
import numpy as np
import pytest
from _data import CACHE_DIR, SEED, Dataset, agreement, head
from _harness import Lazy, Search, measure_search
from conftest import dim_id
from usearch.index import Index

pytestmark = pytest.mark.parametrize("data", [128], indirect=True, ids=dim_id, scope="module")

HNSW = {"connectivity": 32, "expansion_add": 128, "expansion_search": 80}  # VectorIndex's defaults
BUILD_TEST_N = 100_000
_ADD_ROWS = 100_000  # vectors per add() call while building
TARGET_RECALL = 0.99  # recall@1 against the exact scan, at the default parameters
# Answers against the float32 reference: a working graph is far above this, a broken one far below.
# (Recall is a property of graph and data; the target is asserted in test_hnsw_search.)
SANITY_RECALL = 0.5
EXPANSIONS = (64, 96, 128, 256)  # expansion_search values swept beside the default 80


@dataclass(frozen=True)
class Built:
    index: Any
    build_s: float
    cached: bool  # loaded from CACHE_DIR: build_s is from the run that built it


def _build_facecore(base: np.ndarray) -> facecore.VectorIndex:
    index = facecore.VectorIndex(base.shape[1], kind="i8", mode="hnsw", **HNSW)
    for start in range(0, base.shape[0], _ADD_ROWS):
        stop = min(base.shape[0], start + _ADD_ROWS)
        index.add(np.arange(start, stop), base[start:stop])
    return index


def _load_facecore(path: Path) -> facecore.VectorIndex:
    index = facecore.VectorIndex.load(path, mmap=False)
    # A saved index keeps the expansion_search it was saved with; the cache key leaves it out.
    index.expansion_search = HNSW["expansion_search"]
    return index


def _new_usearch(dim: int) -> Index:
    return Index(
        ndim=dim,
        metric="cos",
        dtype="i8",
        connectivity=HNSW["connectivity"],
        expansion_add=HNSW["expansion_add"],
        expansion_search=HNSW["expansion_search"],
    )


def _build_usearch(base: np.ndarray) -> Index:
    index = _new_usearch(base.shape[1])
    for start in range(0, base.shape[0], _ADD_ROWS):
        stop = min(base.shape[0], start + _ADD_ROWS)
        index.add(np.arange(start, stop, dtype=np.uint64), base[start:stop], threads=0)
    return index


def _load_usearch(path: Path, dim: int) -> Index:
    index = _new_usearch(dim)
    index.load(str(path))
    return index


def _expansion(index: Any) -> int:
    return int(index.expansion_search)


def _set_expansion(index: Any, value: int) -> None:
    index.expansion_search = value  # VectorIndex and usearch's Index both have this setter


@dataclass(frozen=True)
class Engine:
    name: str
    build: Callable[[np.ndarray], Any]
    save: Callable[[Any, Path], None]
    load: Callable[[Path, int], Any]
    search: Callable[[Any], Search]


ENGINES = (
    Engine(
        "facecore-hnsw",
        _build_facecore,
        lambda index, path: index.save(path),
        lambda path, dim: _load_facecore(path),
        lambda index: lambda q, t: index.search(q, 1, threads=t).ids[:, 0],
    ),
    Engine(
        "usearch-hnsw",
        _build_usearch,
        lambda index, path: index.save(str(path)),
        _load_usearch,
        lambda index: (
            lambda q, t: np.asarray(index.search(q, 1, threads=t).keys, np.int64).reshape(-1)
        ),
    ),
)


def _cached_build(engine: Engine, data: Dataset) -> Built:
    params = "-".join(f"{k}{v}" for k, v in HNSW.items() if k != "expansion_search")
    path = CACHE_DIR / f"{engine.name}-n{data.n}-d{data.dim}-{params}-s{SEED}"
    record = path.with_name(path.name + ".json")
    if record.exists():
        return Built(
            engine.load(path, data.dim), json.loads(record.read_text())["build_s"], cached=True
        )
    t0 = time.perf_counter()
    index = engine.build(data.base)
    build_s = time.perf_counter() - t0
    path.parent.mkdir(parents=True, exist_ok=True)
    engine.save(index, path)
    record.write_text(json.dumps({"build_s": build_s, "n": data.n, "dim": data.dim}))
    return Built(index, build_s, cached=False)


class Indexes(Lazy):
    """The 1M indexes and the exact-scan answers, built or loaded on first use."""

    def __init__(self, data: Dataset) -> None:
        super().__init__()
        self.data = data

    def built(self, engine: Engine) -> Built:
        return self.get(engine.name, lambda: _cached_build(engine, self.data))  # type: ignore[no-any-return]

    def exact_ids(self) -> np.ndarray:
        """Exact-scan top-1 row of every query over the same int8 codes (our index, exact=True)."""
        index = self.built(ENGINES[0]).index
        return self.get("exact", lambda: index.search(self.data.queries, 1, exact=True).ids[:, 0])  # type: ignore[no-any-return]


@pytest.fixture(scope="module")
def indexes(data: Dataset) -> Iterator[Indexes]:
    built = Indexes(data)
    yield built
    built.clear()


def _memory_bytes(index: Any) -> int:
    return int(
        index.memory_bytes() if isinstance(index, facecore.VectorIndex) else index.memory_usage
    )


@pytest.mark.benchmark(group="hnsw build")
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_hnsw_build(benchmark: Any, data: Dataset, engine: Engine) -> None:
    """Build a 100k-vector graph (all cores), once; check its answers against brute force (the
    ~100 queries whose identity is among the first 100k faces)."""
    small = head(data, BUILD_TEST_N)
    index = benchmark.pedantic(
        engine.build, args=(small.base,), rounds=1, iterations=1, warmup_rounds=0
    )
    ids = engine.search(index)(small.queries, 0)
    agree = agreement(small, np.arange(ids.shape[0]), ids)
    benchmark.extra_info.update(
        kind="hnsw-build",
        engine=engine.name,
        n=BUILD_TEST_N,
        dim=data.dim,
        bytes_per_face=_memory_bytes(index) / BUILD_TEST_N,
        top1_exact=agree.exact,
        top1_near_tie=agree.near_tie,
        checked_queries=agree.queries,
    )
    assert agree.near_tie >= SANITY_RECALL, agree


def _measure_hnsw(
    benchmark: Any,
    data: Dataset,
    indexes: Indexes,
    engine: Engine,
    batch: int,
    threads: int,
    kind: str = "hnsw",
) -> float:
    """Time ``engine``'s 1M graph; record and return recall@1 against the exact scan (over all
    queries: single-query runs are topped up with untimed calls)."""
    built = indexes.built(engine)
    exact_ids = indexes.exact_ids()
    answers = measure_search(
        benchmark,
        data,
        engine.search(built.index),
        batch=batch,
        threads=threads,
        min_agreement=SANITY_RECALL,
        min_checked=data.queries.shape[0],
    )
    recall = float(np.mean(answers.ids == exact_ids[answers.query_index]))
    benchmark.extra_info.update(
        kind=kind,
        engine=engine.name,
        recall_at1_vs_exact_scan=recall,
        build_s=built.build_s,
        build_cached=built.cached,
        bytes_per_face=_memory_bytes(built.index) / data.n,
        expansion_search=_expansion(built.index),
    )
    return recall


@pytest.mark.parametrize("threads", (1, 2), ids=lambda t: f"{t}t")
@pytest.mark.parametrize("batch", (1, 1000), ids=lambda b: f"{b}q")
@pytest.mark.parametrize(
    "engine", ENGINES, ids=lambda e: e.name
)
def test_hnsw_search(
    benchmark: Any, data: Dataset, indexes: Indexes, engine: Engine, batch: int, threads: int
) -> None:
    """Top-1 through the default graph; for ours, the recall@1 target against the exact scan."""
    benchmark.group = f"hnsw d={data.dim} batch={batch}"
    recall = _measure_hnsw(benchmark, data, indexes, engine, batch, threads)
    if engine is ENGINES[0]:
        assert recall >= TARGET_RECALL, f"recall@1 against the exact scan is {recall:.3f}"


@pytest.mark.benchmark(group="hnsw expansion_search sweep, 1 query, 1 thread")
@pytest.mark.parametrize("expansion", EXPANSIONS, ids=lambda e: f"ef{e}")
@pytest.mark.parametrize("engine", ENGINES, ids=lambda e: e.name)
def test_hnsw_expansion(
    benchmark: Any, data: Dataset, indexes: Indexes, engine: Engine, expansion: int
) -> None:
    """One-query latency and recall@1 as the search beam widens (recall over all queries)."""
    index = indexes.built(engine).index
    default = _expansion(index)
    _set_expansion(index, expansion)
    try:
        _measure_hnsw(benchmark, data, indexes, engine, 1, 1, kind="hnsw-sweep")
    finally:
        _set_expansion(index, default)
