"""The measuring loop shared by all search benchmarks: calibrated rounds, then an answer check.

A search under test is a function ``(queries float32 (m, d), threads) -> top-1 rows (m,)``. One
untimed call warms caches and thread pools and sizes the number of timed rounds to a time budget;
``benchmark.pedantic`` then times the rounds. Single-query runs walk through the query set (round
``i`` asks query ``i``), so every answer of every round is checked against the brute-force
reference afterwards (topped up with untimed calls to at least ``MIN_CHECKED`` answers).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
from _data import Agreement, Dataset, agreement, rss_bytes
from threadpoolctl import threadpool_limits

Search = Callable[[np.ndarray, int], np.ndarray]

BUDGET_S = 2.0  # timed seconds a benchmark aims for (at least MIN_ROUNDS rounds)
MIN_ROUNDS = 1
MAX_ROUNDS = 1000
MIN_AGREEMENT = 0.99  # share of top-1 answers equal to the reference, or a near tie
MIN_CHECKED = 100  # answers checked at least (untimed extra calls when the rounds gave fewer)


@dataclass(frozen=True)
class Answers:
    """Every answer given while measuring: ``ids[i]`` is the top-1 row for query ``query_index[i]``."""

    query_index: np.ndarray
    ids: np.ndarray
    agreement: Agreement


class Lazy:
    """Objects built on first use (stored forms, indexes) and dropped together with ``clear``."""

    def __init__(self) -> None:
        self._cache: dict[str, Any] = {}

    def get(self, key: str, make: Callable[[], Any]) -> Any:
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def clear(self) -> None:
        self._cache.clear()


def warm_up(call: Callable[[], object], budget_s: float = BUDGET_S) -> int:
    """Make one untimed warm-up ``call``; return how many timed rounds of it fit the budget."""
    t0 = time.perf_counter()
    call()
    seconds = time.perf_counter() - t0
    return max(MIN_ROUNDS, min(MAX_ROUNDS, int(budget_s / max(seconds, 1e-9))))


def measure_search(
    benchmark: Any,
    data: Dataset,
    search: Search,
    *,
    batch: int,
    threads: int,
    min_agreement: float = MIN_AGREEMENT,
    min_checked: int = MIN_CHECKED,
    budget_s: float = BUDGET_S,
) -> Answers:
    """Time ``search`` on ``batch`` queries a call with ``threads`` threads; check every answer.

    BLAS and OpenMP pools are limited to ``threads`` for the whole measurement (numpy's matmul);
    the search itself gets ``threads`` too (our kernels, FAISS, USearch take it per call).
    Untimed calls top the answers up to ``min_checked``.
    Asserts that at least ``min_agreement`` of the answers agree with the reference (same row or a
    near tie, see :func:`_data.agreement`). Fills ``benchmark.extra_info``.
    """
    n_queries = data.queries.shape[0]
    assert n_queries % batch == 0, "the batch size must divide the query set"
    asked: list[int] = []
    answered: list[np.ndarray] = []

    def one_call() -> None:
        start = (len(asked) * batch) % n_queries
        answered.append(
            np.asarray(search(data.queries[start : start + batch], threads)).reshape(-1)
        )
        asked.append(start)

    with threadpool_limits(limits=threads):
        rounds = warm_up(one_call, budget_s)
        benchmark.pedantic(one_call, rounds=rounds, iterations=1, warmup_rounds=0)
        while len(asked) * batch < min(min_checked, n_queries):
            one_call()

    query_index = np.concatenate([np.arange(start, start + batch) for start in asked])
    ids = np.concatenate(answered)
    agree = agreement(data, query_index, ids)
    benchmark.extra_info.update(
        n=data.n,
        dim=data.dim,
        batch=batch,
        threads=threads,
        rounds=rounds,
        checked_queries=int(np.unique(query_index).shape[0]),
        rss_anon_mb=rss_bytes() / 2**20,
        **_prefixed(agree),
    )
    assert agree.near_tie >= min_agreement, f"top-1 answers disagree with brute force: {agree}"
    return Answers(query_index, ids, agree)


def _prefixed(agree: Agreement) -> dict[str, float]:
    return {f"top1_{k}": v for k, v in asdict(agree).items()}
