"""Benchmark data: face-like vectors, their brute-force answers, and answer-quality measures.

The base set is N clustered unit vectors ("faces"): ``PER_IDENTITY`` noisy samples around each of
N / PER_IDENTITY random identity centres, so two samples of one identity have cosine ~0.73 and
two identities ~0. Queries are further samples of existing identities (never stored rows). The
reference answer of every query is an exact top-1 by float32 BLAS over the float32 base.

Everything is generated once, from a seeded ``numpy.random.Generator`` in float32 chunks, and cached
as ``.npy`` files under ``CACHE_DIR`` so reruns only read them back.
"""

from __future__ import annotations

import ctypes
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

CACHE_DIR = Path(os.environ.get("FACECORE_BENCH_CACHE", "/tmp/facecore-bench"))
N = 1_000_000
N_QUERIES = 1000
PER_IDENTITY = 4
NOISE = 0.6  # norm of the per-sample noise relative to the unit centre
SEED = 20240601
_CHUNK = 65_536


@dataclass(frozen=True)
class Dataset:
    """Base vectors, queries and their exact float32 top-1 answers."""

    base: np.ndarray  # (N, d) float32, unit rows
    queries: np.ndarray  # (Q, d) float32, unit rows
    ref_ids: np.ndarray  # (Q,) int64, exact top-1 row of each query
    ref_scores: np.ndarray  # (Q, 2) float32, exact best and second-best inner product

    @property
    def n(self) -> int:
        return int(self.base.shape[0])

    @property
    def dim(self) -> int:
        return int(self.base.shape[1])


def _unit(x: np.ndarray) -> np.ndarray:
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def _samples(rng: np.random.Generator, centres: np.ndarray, identity: np.ndarray) -> np.ndarray:
    dim = centres.shape[1]
    noise = rng.standard_normal((identity.shape[0], dim), dtype=np.float32)
    noise *= np.float32(NOISE / math.sqrt(dim))
    return _unit(centres[identity] + noise)


def _generate(n: int, dim: int, n_queries: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng([SEED, dim, n])
    centres = _unit(rng.standard_normal((math.ceil(n / PER_IDENTITY), dim), dtype=np.float32))
    base = np.empty((n, dim), np.float32)
    for start in range(0, n, _CHUNK):
        stop = min(n, start + _CHUNK)
        base[start:stop] = _samples(rng, centres, np.arange(start, stop) // PER_IDENTITY)
    queries = _samples(rng, centres, rng.integers(0, centres.shape[0], n_queries))
    return base, queries


def brute_force_top2(base: np.ndarray, queries: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-1 rows and (best, second-best) scores of ``queries`` against ``base`` (float32)."""
    best = np.full((queries.shape[0], 2), -np.inf, np.float32)
    best_ids = np.full((queries.shape[0], 2), -1, np.int64)
    for start in range(0, base.shape[0], _CHUNK):
        scores = queries @ base[start : start + _CHUNK].T
        top2 = np.argpartition(scores, -2, axis=1)[:, -2:]
        scores = np.concatenate([best, np.take_along_axis(scores, top2, axis=1)], axis=1)
        ids = np.concatenate([best_ids, top2 + start], axis=1)
        pick = np.argsort(-scores, axis=1, kind="stable")[:, :2]
        best, best_ids = np.take_along_axis(scores, pick, 1), np.take_along_axis(ids, pick, 1)
    return best_ids[:, 0], best


def load(dim: int, n: int = N, n_queries: int = N_QUERIES) -> Dataset:
    """The dataset for (n, dim), generated on first use and cached under ``CACHE_DIR``."""
    folder = CACHE_DIR / f"data-n{n}-d{dim}-q{n_queries}-s{SEED}"
    names = ("base", "queries", "ref_ids", "ref_scores")
    if not all((folder / f"{name}.npy").exists() for name in names):
        base, queries = _generate(n, dim, n_queries)
        ref_ids, ref_scores = brute_force_top2(base, queries)
        tmp = folder.with_name(folder.name + ".tmp")
        tmp.mkdir(parents=True, exist_ok=True)
        for name, array in zip(names, (base, queries, ref_ids, ref_scores)):
            np.save(tmp / f"{name}.npy", array)
        tmp.rename(folder)
        return Dataset(base, queries, ref_ids, ref_scores)
    arrays = [np.load(folder / f"{name}.npy") for name in names]
    return Dataset(*arrays)


# --------------------------------------------------------------------------- answer quality


def exact_scores(data: Dataset, query_index: np.ndarray, ids: np.ndarray) -> np.ndarray:
    """float64 inner product of query ``query_index[i]`` with stored row ``ids[i]`` (-inf if -1)."""
    out = np.full(ids.shape[0], -np.inf)
    ok = ids >= 0
    q = data.queries[query_index[ok]].astype(np.float64)
    out[ok] = np.einsum("ij,ij->i", q, data.base[ids[ok]].astype(np.float64))
    return out


@dataclass(frozen=True)
class Agreement:
    """How top-1 answers compare with the exact float32 top-1."""

    queries: int
    exact: float  # share with the very same id
    near_tie: float  # share whose returned row scores within TIE_TOL of the best (includes exact)
    worst_gap: float  # largest (best - returned) exact score over the answers


TIE_TOL = 1e-3


def agreement(data: Dataset, query_index: np.ndarray, ids: np.ndarray) -> Agreement:
    """Compare returned top-1 rows ``ids`` for queries ``query_index`` with the reference."""
    query_index = np.asarray(query_index, np.int64)
    ids = np.asarray(ids, np.int64).reshape(-1)
    got = exact_scores(data, query_index, ids)
    best = data.ref_scores[query_index, 0].astype(np.float64)
    gap = best - got
    same = ids == data.ref_ids[query_index]
    return Agreement(
        queries=int(ids.shape[0]),
        exact=float(same.mean()),
        near_tie=float((same | (gap <= TIE_TOL)).mean()),
        worst_gap=float(gap.max(initial=0.0)),
    )


def rss_bytes() -> int:
    """Resident anonymous memory of this process (``RssAnon``: heap and anonymous maps, not
    file pages), after handing freed heap memory back to the system, so that a difference of two
    readings counts new allocations instead of reused, already resident free memory."""
    _malloc_trim()
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("RssAnon:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no RssAnon in /proc/self/status")


def _malloc_trim() -> None:
    try:
        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):  # not glibc: readings may then undercount
        pass


def head(data: Dataset, n: int) -> Dataset:
    """The first ``n`` base vectors, with the queries of identities enrolled among them (their
    full-set answer lies there) and their own brute-force answers."""
    base = data.base[:n]
    queries = data.queries[data.ref_ids < n]
    return Dataset(base, queries, *brute_force_top2(base, queries))
