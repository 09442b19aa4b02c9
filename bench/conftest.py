"""Benchmark-suite configuration: the per-dimension dataset fixture and run metadata.

Modules parametrise the module-scoped ``data`` fixture indirectly with the dimensions they
measure (``DIMS``), so pytest runs all tests of one dimension, frees that dataset, then loads the
next: at most one dimension's arrays are alive at a time.
"""

from __future__ import annotations

import gc
import platform
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# The test modules import bench's own modules (`import _data`) and the tests' server launcher
# (`tests.server.live_server`), however pytest was started.
BENCH = Path(__file__).resolve().parent
sys.path[:0] = [str(BENCH), str(BENCH.parent)]

import _data

DIMS = (128, 512)


def dim_id(dim: int) -> str:
    return f"d{dim}"


@pytest.fixture(scope="module")
def data(request: pytest.FixtureRequest) -> Iterator[_data.Dataset]:
    """The face-like dataset of dimension ``request.param`` (N = 1M, 1000 queries)."""
    yield _data.load(int(request.param))
    gc.collect()  # the arrays die with the fixture; do not wait for the next collection


def pytest_benchmark_update_machine_info(
    config: pytest.Config, machine_info: dict[str, Any]
) -> None:
    """Record what the numbers depend on: SIMD level, cores, library versions."""
    import facecore
    import faiss
    import numpy
    import usearch

    machine_info.update(
        facecore_simd_level=facecore.simd_level(),
        facecore_available_simd_levels=facecore.available_simd_levels(),
        hardware_threads=facecore.hardware_threads(),
        cpu_model=_cpu_model(),
        versions={
            "facecore": facecore.__version__,
            "numpy": numpy.__version__,
            "faiss": faiss.__version__,
            "usearch": usearch.__version__,
            "python": platform.python_version(),
        },
    )


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()
