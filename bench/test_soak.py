"""The soak (bench/soak.py) under pytest-benchmark: FACECORE_SOAK_SECONDS (default 1800) of
bounded mixed load on a live server with the liveness models, sampled every 10 s. One round; the
whole verdict and every sample go into the benchmark's extra_info (--benchmark-json). It fails
when memory, open files or threads grow past the bounds of soak.py after the warm-up, on any
222302 or transport failure, an ERROR in the server log, or a non-zero server exit.

Not a timing: the samples' latencies are reported, never asserted. Deselect with -k 'not soak'.
"""

from __future__ import annotations

import os
from typing import Any

import soak


def test_soak(benchmark: Any) -> None:
    seconds = float(os.environ.get("FACECORE_SOAK_SECONDS", "1800"))
    result: dict[str, Any] = benchmark.pedantic(
        soak.soak, args=(seconds,), rounds=1, iterations=1, warmup_rounds=0
    )
    benchmark.extra_info.update(result)
    assert not result["problems"], result["problems"]
    assert result["checks"].get("the real clip passes: ok", 0) >= 1
