"""Every SIMD level this machine runs, against the serial level and numpy float64, on tail dims."""

from __future__ import annotations

import facecore
import numpy as np
import pytest
from facecore import _simd_search as native

from tests.conftest import face_like

LEVELS = facecore.available_simd_levels()
DIMS = [1, 3, 7, 15, 16, 17, 31, 33, 64, 127, 128, 129, 512]


def test_levels_reported() -> None:
    assert LEVELS[-1] == "serial"
    assert facecore.simd_level() in LEVELS
    assert facecore.hardware_threads() >= 1


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("d", [*DIMS, 2048, 2049])  # 2049: past the transposed batch kernel's limit
def test_int8_dot_exact(level: str, d: int, rng: np.random.Generator) -> None:
    # 37 rows and 1, 6 or 19 queries exercise the row, query-group and d tails of both the
    # single-query and the batch kernels.
    x = rng.integers(-127, 128, (37, d), dtype=np.int8)
    q = rng.integers(-127, 128, (19, d), dtype=np.int8)
    q[0] = 127  # extremes: largest sums the int32 accumulators must hold
    x[0] = -127
    for nq in (1, 6, 19):
        got = native.dot("i8", x, q[:nq], level)
        assert got.dtype == np.int32
        np.testing.assert_array_equal(got, q[:nq].astype(np.int64) @ x.T.astype(np.int64))
        np.testing.assert_array_equal(got, native.dot("i8", x, q[:nq], "serial"))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("d", DIMS)
@pytest.mark.parametrize("kind", ["f16", "f32"])
def test_float_dot_close(level: str, d: int, kind: str, rng: np.random.Generator) -> None:
    x = rng.standard_normal((37, d)).astype(np.float32)
    q = rng.standard_normal((6, d)).astype(np.float32)
    stored = x.astype(np.float16) if kind == "f16" else x
    ref = q.astype(np.float64) @ stored.astype(np.float64).T
    got = native.dot(kind, stored, q, level)
    # fp32 accumulation error grows with the number of terms and their size.
    tol = 4 * np.finfo(np.float32).eps * d * (np.abs(q).max() * np.abs(x).max()) + 1e-6
    np.testing.assert_allclose(got, ref, rtol=0, atol=tol)
    np.testing.assert_allclose(got, native.dot(kind, stored, q, "serial"), rtol=0, atol=tol)


def test_f16_special_values_serial_matches_numpy() -> None:
    # Every finite half, including subnormals, must widen exactly in the serial reference.
    halves = np.arange(0, 1 << 16, dtype=np.uint32).astype(np.uint16).view(np.float16)
    finite = halves[np.isfinite(halves)].reshape(-1, 1)
    got = native.dot("f16", np.ascontiguousarray(finite), np.ones((1, 1), np.float32), "serial")
    np.testing.assert_array_equal(got[0], finite[:, 0].astype(np.float32))


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("kind", ["i8", "f16", "f32"])
@pytest.mark.parametrize("threads", [1, 2])
def test_scan_topk_matches_reference(level: str, kind: str, threads: int) -> None:
    x = face_like(600, 5, 65, seed=7)
    q = face_like(600, 5, 65, seed=7)[::97].copy()
    if kind == "i8":
        codes, scales = facecore.quantize_int8(x)
        res = facecore.exact_search(codes, q, 10, scales=scales, threads=threads, level=level)
        qc, qs = facecore.quantize_int8(q)
        ref = (qc.astype(np.float64) * qs[:, None]) @ (codes.astype(np.float64) * scales[:, None]).T
    else:
        stored = x.astype(np.float16) if kind == "f16" else x
        ref = q.astype(np.float64) @ stored.astype(np.float64).T
        res = facecore.exact_search(stored, q, 10, threads=threads, level=level)
    expect = np.argsort(-ref, axis=1, kind="stable")[:, :10]
    np.testing.assert_array_equal(res.ids[:, 0], expect[:, 0])
    top = np.take_along_axis(ref, res.ids, axis=1)
    np.testing.assert_allclose(res.scores, top, rtol=1e-5, atol=1e-5)
    assert (np.diff(res.scores, axis=1) <= 0).all()


@pytest.mark.parametrize("level", LEVELS)
def test_scan_levels_agree_exactly_for_int8(level: str) -> None:
    x = face_like(2000, 3, 128, seed=3)
    codes, scales = facecore.quantize_int8(x)
    q = x[::211].copy()
    a = facecore.exact_search(codes, q, 25, scales=scales, level=level, threads=2)
    b = facecore.exact_search(codes, q, 25, scales=scales, level="serial", threads=1)
    np.testing.assert_array_equal(a.ids, b.ids)
    np.testing.assert_array_equal(a.scores, b.scores)


def test_batch_equals_single_queries() -> None:
    x = face_like(3000, 4, 128, seed=5)
    codes, scales = facecore.quantize_int8(x)
    q = x[::157].copy()  # 77 queries: several query groups plus a remainder
    batch = facecore.exact_search(codes, q, 7, scales=scales)
    for i in range(q.shape[0]):
        one = facecore.exact_search(codes, q[i], 7, scales=scales)
        np.testing.assert_array_equal(one.ids[0], batch.ids[i])
        np.testing.assert_array_equal(one.scores[0], batch.scores[i])


def test_ties_rank_lower_row_first_across_threads() -> None:
    x = np.zeros((50_000, 16), np.float32)
    x[:, 0] = 1.0  # every row scores exactly the same
    res1 = facecore.exact_search(x, x[:1], 5, threads=1)
    res2 = facecore.exact_search(x, x[:1], 5, threads=2)
    np.testing.assert_array_equal(res1.ids[0], [0, 1, 2, 3, 4])
    np.testing.assert_array_equal(res2.ids[0], [0, 1, 2, 3, 4])


def test_k_larger_than_n_pads() -> None:
    x = np.eye(3, dtype=np.float32)
    res = facecore.exact_search(x, x[1], 5)
    np.testing.assert_array_equal(res.ids[0], [1, 0, 2, -1, -1])
    assert res.scores[0, 0] == 1.0 and np.isneginf(res.scores[0, 3:]).all()


def test_quantize_int8_scheme() -> None:
    x = np.array([[0.5, -0.25, 0.0], [0.0, 0.0, 0.0]], np.float32)
    codes, scales = facecore.quantize_int8(x)
    np.testing.assert_array_equal(codes, [[127, -64, 0], [0, 0, 0]])
    np.testing.assert_allclose(scales, [0.5 / 127, 0.0])


def test_forced_level_from_environment() -> None:
    import os
    import subprocess
    import sys

    code = "import facecore; print(facecore.simd_level())"
    env = dict(os.environ, FACECORE_SIMD_LEVEL="serial")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "serial"
    env["FACECORE_SIMD_LEVEL"] = "sse9"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=False)
    assert bad.returncode != 0 and "unknown SIMD level 'sse9'" in bad.stderr
