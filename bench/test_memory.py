"""Bytes of memory per face of the exact int8 index at N = 1M, d = 128 and 512.

Builds ``facecore.VectorIndex(d, kind="i8", mode="exact")`` from the float32 faces in batches of
``ADD_ROWS`` (timed: the build rate) and reports ``memory_bytes() / len(index)`` and the growth of
the process's resident anonymous memory while building (``_data.rss_bytes``), against the target
1.1 x (d + 8) bytes a face.
The built index must answer like brute force.
"""

from __future__ import annotations

import gc
from typing import Any

import facecore
import numpy as np
import pytest
from _data import Dataset, agreement, rss_bytes
from _harness import MIN_AGREEMENT, MIN_CHECKED
from conftest import DIMS, dim_id

pytestmark = pytest.mark.parametrize("data", DIMS, indirect=True, ids=dim_id, scope="module")

# Vectors per add(): a server adds small batches (large ones would also leave large freed
# temporaries behind).
ADD_ROWS = 10_000
TARGET_FACTOR = 1.1  # target: bytes per face <= 1.1 x (d + 8)


def target_bytes_per_face(dim: int) -> float:
    return TARGET_FACTOR * (dim + 8)


@pytest.mark.benchmark(group="memory")
def test_memory_per_face(benchmark: Any, data: Dataset) -> None:
    """Build the 1M exact int8 index once; bytes held per face and RSS growth per face."""
    rss_growth: list[int] = []

    def build() -> facecore.VectorIndex:
        gc.collect()
        before = rss_bytes()
        index = facecore.VectorIndex(data.dim, kind="i8", mode="exact")
        for start in range(0, data.n, ADD_ROWS):
            stop = min(data.n, start + ADD_ROWS)
            index.add(np.arange(start, stop), data.base[start:stop])
        rss_growth.append(rss_bytes() - before)
        return index

    index = benchmark.pedantic(build, rounds=1, iterations=1, warmup_rounds=0)
    assert len(index) == data.n and not index.uses_hnsw
    checked = np.arange(MIN_CHECKED)
    agree = agreement(data, checked, index.search(data.queries[checked], 1).ids[:, 0])
    benchmark.extra_info.update(
        kind="memory",
        n=data.n,
        dim=data.dim,
        bytes_per_face=index.memory_bytes() / len(index),
        rss_growth_per_face=rss_growth[0] / len(index),
        target_bytes_per_face=target_bytes_per_face(data.dim),
        top1_exact=agree.exact,
        top1_near_tie=agree.near_tie,
    )
    assert agree.near_tie >= MIN_AGREEMENT, agree
