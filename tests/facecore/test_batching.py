"""facecore.runtime.batching.BatchingBackend: concurrent calls of one model share one backend run.

A fake inner backend records every run and answers x*2 (plus a per-item row sum), so each caller
can check it got exactly its own rows back. Batches are made deterministic without timing: with a
long max_wait the leader waits until the batch is full, so N callers with max_batch = N items
always make one run. The last test runs the real recogniser through ONNX Runtime and compares
merged results with unmerged ones.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facecore.errors import InvalidArgument
from facecore.runtime.backend import OnnxRuntimeBackend
from facecore.runtime.batching import BatchingBackend

REPO = Path(__file__).resolve().parents[2]
MODELS_DIR = REPO / "models" / "onnx"
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"

LONG = 60.0  # max_wait long enough that a batch only closes when full (never reached in a pass)


class Fake:
    """Inner backend: records (role, items, {input: (shape, dtype)}) of each run; outputs batch-major results."""

    def __init__(self, fail: bool = False, batch_major: bool = True) -> None:
        self.calls: list[tuple[str, int, dict[str, tuple[tuple[int, ...], str]]]] = []
        self.fail = fail
        self.batch_major = batch_major
        self.lock = threading.Lock()

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = feeds["x"]
        with self.lock:
            self.calls.append((role, len(x), {k: (v.shape, v.dtype.str) for k, v in feeds.items()}))
        if self.fail:
            raise RuntimeError(f"inner failure on {len(x)} items")
        if not self.batch_major:
            return [x.sum(axis=0, keepdims=True)]
        return [x * 2, x.reshape(len(x), -1).sum(axis=1)]

    def has(self, role: str) -> bool:
        return role == "known"

    def path(self, role: str) -> Path:
        return Path("/models") / role


def items(caller: int, n: int, width: int = 3, dtype: Any = np.float32) -> dict[str, np.ndarray]:
    """n rows, every value unique to (caller, row), so a wrong slice shows."""
    base = np.arange(n * width, dtype=np.float64).reshape(n, width)
    return {"x": (base + 1000 * (caller + 1)).astype(dtype)}


def concurrently(calls: list[Callable[[], Any]]) -> list[Any]:
    """Run the calls on one thread each, started together; results or raised exceptions."""
    out: list[Any] = [None] * len(calls)
    start = threading.Barrier(len(calls))

    def worker(i: int) -> None:
        start.wait()
        try:
            out[i] = calls[i]()
        except BaseException as e:  # noqa: BLE001 - handed to the test
            out[i] = e

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(len(calls))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=LONG / 2)
        assert not t.is_alive(), "a caller hung"
    return out


def check_own_rows(result: Any, feeds: dict[str, np.ndarray]) -> None:
    assert not isinstance(result, BaseException), result
    doubled, sums = result
    assert doubled.dtype == feeds["x"].dtype
    np.testing.assert_array_equal(doubled, feeds["x"] * 2)
    np.testing.assert_array_equal(sums, feeds["x"].sum(axis=1))


def test_same_shapes_merge_and_each_caller_gets_its_rows() -> None:
    fake = Fake()
    runs: list[tuple[str, int, int]] = []
    b = BatchingBackend(fake, max_batch=8, max_wait=LONG, on_run=lambda *a: runs.append(a))
    sizes = [1, 2, 1, 3, 1]  # 8 items: the batch fills and closes without waiting out LONG
    feeds = [items(i, n) for i, n in enumerate(sizes)]
    results = concurrently([partial(b.run, "rec", f) for f in feeds])
    for r, f in zip(results, feeds):
        check_own_rows(r, f)
    assert [c[:2] for c in fake.calls] == [("rec", 8)]
    assert runs == [("rec", 5, 8)]


def test_different_shapes_dtypes_and_roles_never_merge() -> None:
    fake = Fake()
    b = BatchingBackend(fake, max_batch=2, max_wait=LONG)
    kinds: list[tuple[str, dict[str, np.ndarray]]] = []
    for caller in range(2):  # two callers of each kind: each kind fills its own batch of 2
        kinds.append(("rec", items(caller, 1, width=3)))
        kinds.append(("rec", items(caller, 1, width=4)))
        kinds.append(("rec", items(caller, 1, width=3, dtype=np.float64)))
        kinds.append(("det", items(caller, 1, width=3)))
    results = concurrently([partial(b.run, r, f) for r, f in kinds])
    for r, (_, f) in zip(results, kinds):
        check_own_rows(r, f)
    assert len(fake.calls) == 4
    seen = set()
    for role, n, shapes in fake.calls:
        assert n == 2
        shape, dtype = shapes["x"]
        seen.add((role, shape[1:], dtype))
    assert seen == {
        ("rec", (3,), "<f4"),
        ("rec", (4,), "<f4"),
        ("rec", (3,), "<f8"),
        ("det", (3,), "<f4"),
    }


def test_max_batch_is_respected() -> None:
    fake = Fake()
    b = BatchingBackend(fake, max_batch=3, max_wait=0.05)
    sizes = [1, 1, 2, 1, 1, 2, 1, 1, 1]
    feeds = [items(i, n) for i, n in enumerate(sizes)]
    results = concurrently([partial(b.run, "rec", f) for f in feeds])
    for r, f in zip(results, feeds):
        check_own_rows(r, f)
    assert all(n <= 3 for _, n, _ in fake.calls), fake.calls
    assert sum(n for _, n, _ in fake.calls) == sum(sizes)
    assert len(fake.calls) < len(sizes)  # at least some merging happened


def test_a_call_as_large_as_max_batch_runs_alone() -> None:
    fake = Fake()
    b = BatchingBackend(fake, max_batch=3, max_wait=LONG)
    f = items(0, 5)
    check_own_rows(b.run("rec", f), f)  # not split, not made to wait for others
    assert [c[1] for c in fake.calls] == [5]


def test_max_batch_one_turns_batching_off() -> None:
    fake = Fake()
    b = BatchingBackend(fake, max_batch=1, max_wait=LONG)
    feeds = [items(i, 1) for i in range(4)]
    results = concurrently([partial(b.run, "rec", f) for f in feeds])
    for r, f in zip(results, feeds):
        check_own_rows(r, f)
    assert [c[1] for c in fake.calls] == [1, 1, 1, 1]


def test_inner_exception_reaches_every_caller_of_the_batch() -> None:
    fake = Fake(fail=True)
    b = BatchingBackend(fake, max_batch=3, max_wait=LONG)
    results = concurrently([partial(b.run, "rec", items(i, 1)) for i in range(3)])
    assert len(fake.calls) == 1
    for r in results:
        assert isinstance(r, RuntimeError) and "inner failure on 3 items" in str(r)
    # The failed batch is gone: the next call opens a fresh one.
    fake.fail = False
    f = items(9, 1)
    b2 = BatchingBackend(fake, max_batch=3, max_wait=0)
    check_own_rows(b2.run("rec", f), f)


def test_lone_caller_never_waits() -> None:
    fake = Fake()
    asked: list[int] = []

    def peers() -> int:
        asked.append(1)
        return 1

    # With max_wait = 10 minutes, a leader that waited for joiners would hang the test.
    b = BatchingBackend(fake, max_batch=8, max_wait=600, peers=peers)
    f = items(0, 2)
    (r,) = concurrently([partial(b.run, "rec", f)])
    check_own_rows(r, f)
    assert asked and [c[1] for c in fake.calls] == [2]


def test_not_batch_major_outputs_are_refused() -> None:
    fake = Fake(batch_major=False)
    b = BatchingBackend(fake, max_batch=2, max_wait=LONG)
    results = concurrently([partial(b.run, "rec", items(i, 1)) for i in range(2)])
    for r in results:
        assert isinstance(r, InvalidArgument) and "batch-major" in str(r)


def test_arguments_and_delegation() -> None:
    with pytest.raises(InvalidArgument):
        BatchingBackend(Fake(), max_batch=0)
    with pytest.raises(InvalidArgument):
        BatchingBackend(Fake(), max_wait=-1)
    b = BatchingBackend(Fake())
    assert b.has("known") and not b.has("other")
    assert b.path("rec") == Path("/models/rec")


def lfw_chips(n: int) -> np.ndarray:
    """(n, 3, 150, 150) float32: the centre of LFW images (the face, roughly; real pixels)."""
    import cv2

    paths = sorted(LFW.glob("*/*_0001.jpg"))[:n]
    assert len(paths) == n
    chips = [np.asarray(cv2.imread(str(p)))[50:200, 50:200, ::-1] for p in paths]
    return np.ascontiguousarray(np.stack(chips).transpose(0, 3, 1, 2), dtype=np.float32)


def test_real_recognizer_merged_equals_unmerged() -> None:
    inner = OnnxRuntimeBackend(MODELS_DIR, threads=1)
    chips = lfw_chips(6)
    sizes = [1, 2, 1, 2]
    bounds = np.cumsum([0, *sizes])
    feeds = [{"image": chips[a:b]} for a, b in itertools.pairwise(bounds)]
    alone = [inner.run("recognizer", f)[0] for f in feeds]
    runs: list[tuple[str, int, int]] = []
    b = BatchingBackend(inner, max_batch=6, max_wait=LONG, on_run=lambda *a: runs.append(a))
    merged = concurrently([partial(b.run, "recognizer", f) for f in feeds])
    assert runs == [("recognizer", 4, 6)]  # one run for the four callers
    for got, want, n in zip(merged, alone, sizes):
        assert not isinstance(got, BaseException), got
        assert got[0].shape == want.shape == (n, 128)
        np.testing.assert_allclose(got[0], want, atol=1e-5, rtol=0)
    # And the descriptors tell the six people apart (the chips were real faces).
    v = np.concatenate([g[0] for g in merged])
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    assert np.all(np.abs(v @ v.T - np.eye(6)).max(axis=1) < 0.999)
