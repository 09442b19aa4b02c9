"""VectorIndex: add/remove/search semantics, filters, persistence, threads, HNSW, bad input."""

from __future__ import annotations

import threading
from pathlib import Path

import facecore
import numpy as np
import pytest
from facecore import InvalidArgument, InvalidType, UnknownId, VectorIndex

from tests.conftest import face_like

KINDS = ["i8", "f16", "f32"]


def brute_force(x: np.ndarray, ids: np.ndarray, q: np.ndarray, k: int) -> np.ndarray:
    s = q.astype(np.float64) @ x.astype(np.float64).T
    return ids[np.argsort(-s, axis=1, kind="stable")[:, :k]]


@pytest.fixture(scope="module")
def gallery() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = face_like(1500, 4, 128, seed=11)
    ids = np.arange(x.shape[0], dtype=np.int64) * 7 + 3  # ids unrelated to row numbers
    q = face_like(1500, 4, 128, seed=11, noise=0.0)[::4][::13].copy()  # identity centres
    return x, ids, q


@pytest.mark.parametrize("kind", KINDS)
def test_exact_search_finds_identity(kind: str, gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, q = gallery
    index = VectorIndex(128, kind=kind, mode="exact")
    index.add(ids, x)
    assert len(index) == x.shape[0] and not index.uses_hnsw
    res = index.search(q, 4)
    ref = brute_force(x, ids, q, 4)
    np.testing.assert_array_equal(np.sort(res.ids, axis=1), np.sort(ref, axis=1))
    assert res.scores.dtype == np.float32 and (np.diff(res.scores, axis=1) <= 0).all()


def test_single_query_shape_and_contains(gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, _ = gallery
    index = VectorIndex(128)
    index.add(ids[:10], x[:10])
    res = index.search(x[3], 2)
    assert res.ids.shape == (1, 2) and res.ids[0, 0] == ids[3]
    assert int(ids[3]) in index and 5 not in index and -1 not in index and "x" not in index


def test_empty_index_and_k_beyond_size() -> None:
    index = VectorIndex(8)
    q = np.ones(8, np.float32)
    res = index.search(q, 3)
    np.testing.assert_array_equal(res.ids, [[-1, -1, -1]])
    assert np.isneginf(res.scores).all()
    index.add([10, 20], np.eye(8, dtype=np.float32)[:2])
    res = index.search(q, 5)
    assert sorted(res.ids[0, :2]) == [10, 20] and (res.ids[0, 2:] == -1).all()


def test_remove_then_readd(gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, _ = gallery
    index = VectorIndex(128)
    index.add(ids, x)
    gone = ids[:100]
    index.remove(gone)
    assert len(index) == x.shape[0] - 100
    res = index.search(x[:100], 5)
    assert not np.isin(res.ids, gone).any()
    with pytest.raises(UnknownId, match=str(gone[0])):
        index.remove(gone[:1])
    index.add(gone[:1], x[:1])  # the id is free again, its old row stays dead
    assert index.search(x[0], 1).ids[0, 0] == gone[0]
    assert len(index) == x.shape[0] - 99
    index.add([10**12], x[5:6])  # additions after removals stay visible
    assert 10**12 in index.search(x[5], 2).ids[0]


def test_remove_is_all_or_nothing() -> None:
    index = VectorIndex(4)
    index.add([1, 2, 3], np.eye(4, dtype=np.float32)[:3])
    with pytest.raises(UnknownId):
        index.remove([1, 99])
    assert len(index) == 3 and 1 in index
    with pytest.raises(InvalidArgument, match="already in the index"):
        index.add([4, 2], np.eye(4, dtype=np.float32)[:2])
    with pytest.raises(InvalidArgument, match="already in the index"):
        index.add([5, 5], np.eye(4, dtype=np.float32)[:2])
    assert len(index) == 3 and 4 not in index and 5 not in index


@pytest.mark.parametrize("n_allowed", [3, 2000])  # gathered rows, and a bitmask over a full scan
def test_filter_allow_list(n_allowed: int, gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, q = gallery
    index = VectorIndex(128, kind="f32", mode="exact")  # f32: the reference ranks the same
    index.add(ids, x)
    rng = np.random.default_rng(0)
    allowed = rng.choice(ids, n_allowed, replace=False)
    index.remove(allowed[:1])  # a removed id in the allow-list stays out
    res = index.search(q, 5, filter=np.concatenate([allowed, [999_999_999]]))
    live = allowed[1:]
    mask = np.isin(ids, live)
    ref = brute_force(x[mask], ids[mask], q, 5)
    got = res.ids[:, : min(5, live.size)]
    np.testing.assert_array_equal(np.sort(got, axis=1), np.sort(ref[:, : got.shape[1]], axis=1))
    assert np.isin(res.ids[res.ids >= 0], live).all()
    assert (index.search(q, 2, filter=[]).ids == -1).all()


def test_growth_over_many_chunks_keeps_rows() -> None:
    x = face_like(5000, 8, 32, seed=2)
    index = VectorIndex(32, kind="f32", mode="exact")
    for start in range(0, x.shape[0], 3331):  # uneven batches straddle chunk boundaries
        index.add(np.arange(start, min(start + 3331, x.shape[0])), x[start : start + 3331])
    res = index.search(x[::997], 1)
    np.testing.assert_array_equal(res.ids[:, 0], np.arange(0, x.shape[0], 997))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind: str, tmp_path: Path, gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, q = gallery
    index = VectorIndex(128, kind=kind, mode="exact")
    index.add(ids, x)
    index.remove(ids[5:50])
    before = index.search(q, 6)
    index.save(tmp_path / "ix")
    for mmap in (True, False):
        loaded = VectorIndex.load(tmp_path / "ix", mmap=mmap)
        assert len(loaded) == len(index) and loaded.kind == kind
        after = loaded.search(q, 6)
        np.testing.assert_array_equal(after.ids, before.ids)
        np.testing.assert_array_equal(after.scores, before.scores)
        with pytest.raises(UnknownId):
            loaded.remove(ids[5:6])
        loaded.add([1], x[60:61])  # grows past the memory-mapped part
        assert sorted(loaded.search(x[60], 2).ids[0].tolist()) == sorted([1, int(ids[60])])
    index.save(tmp_path / "ix")  # overwrite in place
    assert len(VectorIndex.load(tmp_path / "ix")) == len(index)


def test_load_rejects_missing_and_corrupt(tmp_path: Path) -> None:
    with pytest.raises(InvalidArgument, match="no saved VectorIndex"):
        VectorIndex.load(tmp_path)
    index = VectorIndex(4)
    index.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    index.save(tmp_path / "ix")
    np.save(tmp_path / "ix" / "ids.npy", np.array([1, 1], np.int64))
    with pytest.raises(ValueError, match="corrupt"):
        VectorIndex.load(tmp_path / "ix")


def test_concurrent_searches_equal_sequential(gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, q = gallery
    index = VectorIndex(128, mode="exact", threads=2)
    index.add(ids, x)
    expected = [index.search(q[i], 5) for i in range(q.shape[0])]
    errors: list[BaseException] = []

    def worker(offset: int) -> None:
        try:
            for rep in range(3):
                for i in range(q.shape[0]):
                    j = (i + offset + rep) % q.shape[0]
                    r = index.search(q[j], 5)
                    np.testing.assert_array_equal(r.ids, expected[j].ids)
                    np.testing.assert_array_equal(r.scores, expected[j].scores)
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(t,)) for t in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors[0]


def test_searches_during_writes_never_see_removed_ids(gallery: tuple[np.ndarray, np.ndarray, np.ndarray]) -> None:
    x, ids, _ = gallery
    index = VectorIndex(128, mode="exact")
    index.add(ids[:3000], x[:3000])
    removed: set[int] = set()
    lock = threading.Lock()
    stop = threading.Event()
    errors: list[BaseException] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                with lock:
                    gone = set(removed)
                r = index.search(x[:50], 3)
                assert not gone.intersection(r.ids.ravel().tolist())
        except BaseException as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    readers = [threading.Thread(target=reader) for _ in range(4)]
    for t in readers:
        t.start()
    for start in range(0, 300, 30):
        index.remove(ids[start : start + 30])
        with lock:
            removed.update(ids[start : start + 30].tolist())
        index.add(ids[3000 + start : 3030 + start], x[3000 + start : 3030 + start])
    stop.set()
    for t in readers:
        t.join()
    assert not errors, errors[0]


@pytest.mark.slow
def test_hnsw_recall_at_100k(tmp_path: Path) -> None:
    # 10,000 people x 10 faces: each query's true top-10 are that person's faces.
    x = face_like(10_000, 10, 128, seed=21)
    rng = np.random.default_rng(22)
    q = face_like(10_000, 10, 128, seed=21)[rng.choice(x.shape[0], 300, replace=False)]
    q += rng.standard_normal(q.shape).astype(np.float32) * np.float32(0.3 / np.sqrt(128))
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    index = VectorIndex(128, mode="auto", hnsw_threshold=50_000)
    index.add(np.arange(40_000), x[:40_000])
    assert not index.uses_hnsw
    index.add(np.arange(40_000, 100_000), x[40_000:])  # crosses the threshold: graph is built
    assert index.uses_hnsw
    approx = index.search(q, 10)
    exact = index.search(q, 10, exact=True)
    recall = np.mean([np.intersect1d(a, e).size / 10 for a, e in zip(approx.ids, exact.ids)])
    assert recall >= 0.99, recall
    # Re-scored: a returned score is the exact score of that id.
    both = approx.ids[:, :1] == exact.ids[:, :1]
    np.testing.assert_array_equal(approx.scores[:, :1][both], exact.scores[:, :1][both])
    # Removed ids never come back from the graph either, before or after a save/load.
    index.remove(exact.ids[:, 0])
    assert not np.isin(index.search(q, 10).ids, exact.ids[:, 0]).any()
    index.save(tmp_path / "h")
    loaded = VectorIndex.load(tmp_path / "h")
    assert loaded.uses_hnsw and not np.isin(loaded.search(q, 10).ids, exact.ids[:, 0]).any()
    loaded.add([10**9], q[:1])  # the memory-mapped graph becomes writable on first change
    assert loaded.search(q[0], 1).ids[0, 0] == 10**9


# ------------------------------------------------------------------------ bad input


@pytest.mark.parametrize(
    ("vectors", "error", "match"),
    [
        (np.ones((2, 8), np.float64), InvalidType, "vectors must have dtype float32"),
        (np.ones((2, 8), np.int8), InvalidType, "vectors must have dtype float32"),
        ([[1.0] * 8] * 2, InvalidType, "vectors must be a numpy array"),
        (np.ones((2, 9), np.float32), InvalidArgument, "dimension 8, got 9"),
        (np.ones((2, 2, 8), np.float32), InvalidArgument, "1-D or 2-D"),
        (np.array([[np.nan] * 8, [1.0] * 8], np.float32), InvalidArgument, "NaN or infinite"),
        (np.array([[np.inf] * 8, [1.0] * 8], np.float32), InvalidArgument, "NaN or infinite"),
    ],
)
def test_add_rejects_bad_vectors(vectors: object, error: type, match: str) -> None:
    index = VectorIndex(8)
    with pytest.raises(error, match=match):
        index.add([1, 2], vectors)  # type: ignore[arg-type]
    assert len(index) == 0


@pytest.mark.parametrize(
    ("ids", "error", "match"),
    [
        ([1.5, 2.0], InvalidType, "ids must be integers"),
        ([-1, 2], InvalidArgument, "ids must be >= 0"),
        ([1, 2, 3], InvalidArgument, "ids has 3 entries but vectors has 2 rows"),
        (np.array([2**64 - 1, 1], np.uint64), InvalidArgument, "2\\*\\*63"),
    ],
)
def test_add_rejects_bad_ids(ids: object, error: type, match: str) -> None:
    index = VectorIndex(8)
    with pytest.raises(error, match=match):
        index.add(ids, np.ones((2, 8), np.float32))
    assert len(index) == 0


def test_f16_range_checked() -> None:
    index = VectorIndex(2, kind="f16")
    with pytest.raises(InvalidArgument, match="float16 range"):
        index.add([1], np.array([[1e6, 0.0]], np.float32))


@pytest.mark.parametrize("k", [0, -1, 1.5, True, "3"])
def test_search_rejects_bad_k(k: object) -> None:
    index = VectorIndex(4)
    index.add([1], np.ones((1, 4), np.float32))
    with pytest.raises(InvalidArgument, match="k must be a positive integer"):
        index.search(np.ones(4, np.float32), k)  # type: ignore[arg-type]


def test_search_rejects_bad_queries_and_options() -> None:
    index = VectorIndex(4)
    index.add([1], np.ones((1, 4), np.float32))
    with pytest.raises(InvalidArgument, match="queries must have dimension 4"):
        index.search(np.ones(5, np.float32))
    with pytest.raises(InvalidArgument, match="queries contains NaN"):
        index.search(np.full(4, np.nan, np.float32))
    with pytest.raises(InvalidType, match="queries must have dtype float32"):
        index.search(np.ones(4, np.float64))
    with pytest.raises(InvalidArgument, match="threads must be"):
        index.search(np.ones(4, np.float32), threads=-1)
    with pytest.raises(InvalidType, match="filter must be integers"):
        index.search(np.ones(4, np.float32), filter=["a"])
    with pytest.raises(InvalidArgument, match="exact=False needs an HNSW graph"):
        index.search(np.ones(4, np.float32), exact=False)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"dim": 0}, "dim must be"),
        ({"dim": 8, "kind": "i4"}, "kind must be"),
        ({"dim": 8, "mode": "fast"}, "mode must be"),
        ({"dim": 8, "hnsw_threshold": 0}, "hnsw_threshold"),
        ({"dim": 8, "threads": -2}, "threads must be"),
    ],
)
def test_constructor_rejects_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(InvalidArgument, match=match):
        VectorIndex(**kwargs)  # type: ignore[arg-type]


def test_native_boundary_rejects_bad_buffers() -> None:
    from facecore import _simd_search as native

    m = np.ones((4, 8), np.int8)
    q = np.ones((1, 8), np.int8)
    with pytest.raises(TypeError, match="chunk matrix must have dtype int8"):
        native.search("i8", [(m.astype(np.int16), None)], q, None, 1, 1, None, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        native.search("i8", [(np.ones((8, 4), np.int8).T, None)], q, None, 1, 1, None, None)
    with pytest.raises(ValueError, match="k must be a positive integer"):
        native.search("i8", [(m, None)], q, None, 0, 1, None, None)
    with pytest.raises(ValueError, match="allow_rows must be sorted"):
        native.search("i8", [(m, None)], q, None, 1, 1, None, np.array([2, 1], np.int64))
    with pytest.raises(ValueError, match="allow_bits covers"):
        native.search("i8", [(np.ones((20, 8), np.int8), None)], q, None, 1, 1, np.zeros(1, np.uint8), None)
    with pytest.raises(ValueError, match="not available|unknown SIMD level"):
        native.search("i8", [(m, None)], q, None, 1, 1, None, None, "neon" if facecore.simd_level() != "neon" else "avx2")


def test_expansion_search_setting() -> None:
    index = VectorIndex(4, mode="hnsw")
    index.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    index.expansion_search = 300
    assert index.expansion_search == 300 and index.search(np.eye(4, dtype=np.float32)[1], 1).ids[0, 0] == 2
    with pytest.raises(InvalidArgument, match="expansion_search must be a positive integer"):
        index.expansion_search = 0


def test_hit_removed_after_the_snapshot_becomes_a_miss() -> None:
    # A search maps rows to ids after its scan; a row removed in between must not surface as a
    # hit with id -1 in the middle of the ranking.
    index = VectorIndex(4, kind="f32", mode="exact")
    index.add([1, 2, 3], np.eye(4, dtype=np.float32)[:3])
    rows = np.array([[1, 0, 2]], np.int64)  # as a scan before the removal would have ranked them
    scores = np.array([[0.75, 0.5, 0.25]], np.float32)
    index.remove([2])  # row 1
    res = index._result(rows, scores)
    assert res.ids.tolist() == [[1, 3, -1]]
    assert res.scores[0, :2].tolist() == [0.5, 0.25] and np.isneginf(res.scores[0, 2])


@pytest.mark.parametrize("mode", ["exact", "hnsw"])
def test_compact_frees_removed_rows(mode: str, tmp_path: Path) -> None:
    x = face_like(2000, 3, 32, seed=9)
    ids = np.arange(x.shape[0]) * 2
    index = VectorIndex(32, mode=mode)  # type: ignore[arg-type]
    index.add(ids, x)
    index.remove(ids[::2])
    before = index.search(x[1::2][:50], 3)
    size = index.memory_bytes()
    index.compact()
    assert len(index) == x.shape[0] // 2 and index.memory_bytes() < size
    after = index.search(x[1::2][:50], 3)
    np.testing.assert_array_equal(after.ids[:, 0], before.ids[:, 0])
    np.testing.assert_array_equal(after.scores[:, 0], before.scores[:, 0])
    assert not np.isin(index.search(x[::2][:50], 5).ids, ids[::2]).any()
    index.remove(ids[1:2])  # the rebuilt id table keeps working
    index.add(ids[:1], x[:1])
    assert index.search(x[0], 1).ids[0, 0] == ids[0]
    index.save(tmp_path / "c")
    assert len(VectorIndex.load(tmp_path / "c")) == len(index)
    index.compact()  # a second compact after new removals
    assert index.search(x[0], 1).ids[0, 0] == ids[0]


def test_compact_after_removing_everything() -> None:
    index = VectorIndex(4)
    index.add([1, 2], np.eye(4, dtype=np.float32)[:2])
    index.remove([1, 2])
    index.compact()
    assert len(index) == 0 and (index.search(np.ones(4, np.float32), 1).ids == -1).all()
    index.add([1], np.eye(4, dtype=np.float32)[:1])
    assert index.search(np.eye(4, dtype=np.float32)[0], 1).ids[0, 0] == 1


def test_arrays_from_another_process_are_accepted() -> None:
    """An unpickled float32 array carries its own dtype object (worker processes send them)."""
    import pickle

    x = face_like(4, 5, 64, seed=7)
    y = pickle.loads(pickle.dumps(x))
    assert y.dtype == np.float32 and y.dtype is not np.dtype(np.float32)
    index = VectorIndex(64, kind="i8")
    index.add(np.arange(len(y)), y)
    assert index.search(pickle.loads(pickle.dumps(x[:3])), k=1).ids[:, 0].tolist() == [0, 1, 2]
