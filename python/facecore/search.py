"""1:N search: exact SIMD scans (int8 / fp16 / fp32) and a growing, persistent VectorIndex.

The exact scan is ``facecore._simd_search`` (C++, GIL released, all cores). Above a size threshold
a :class:`VectorIndex` also keeps a USearch HNSW graph; its candidates are re-scored by the exact
kernel, so a returned score is always the exact score of that stored vector, whichever path found
it. Scores are inner products of the stored (quantised) vectors with the query.

int8 uses one scale per vector (``q = round(x * 127 / max|x|)``): on clustered unit vectors it
gave 1.3-3x lower RMS and 1.5-14x lower worst-case score error than fixed scales for unit vectors
(``tools/quant_error.py``, ``docs/search.md``).
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from facecore import _simd_search as _native
from facecore.errors import InvalidArgument, InvalidType, UnknownId

Kind = Literal["i8", "f16", "f32"]
Mode = Literal["auto", "exact", "hnsw"]

_KINDS: dict[str, np.dtype[Any]] = {
    "i8": np.dtype(np.int8),
    "f16": np.dtype(np.float16),
    "f32": np.dtype(np.float32),
}
_FORMAT = 1
_F16_MAX = float(np.finfo(np.float16).max)
# Chunks grow geometrically up to this many rows, then stay at it: adding never copies old rows,
# and a half-empty last chunk wastes at most this much.
_MAX_CHUNK_ROWS = 16384
_FIRST_CHUNK_ROWS = 256
# Below this share of the index, an allow-list is scored row by row (gathered) instead of by a
# full scan under a bitmask.
_GATHER_SHARE = 1 / 16


def simd_level() -> str:
    """The SIMD level the scan kernels run at (``FACECORE_SIMD_LEVEL`` forces one at import)."""
    return str(_native.simd_level())


def available_simd_levels() -> list[str]:
    """Levels this build and CPU can run, best first (``serial`` always last)."""
    return list(_native.available_levels())


def hardware_threads() -> int:
    """Cores a ``threads=0`` scan may use (the process's CPU affinity)."""
    return int(_native.hardware_threads())


@dataclass(frozen=True)
class SearchResult:
    """``ids`` and ``scores`` of shape (queries, k), best first; missing hits are id -1, -inf."""

    ids: np.ndarray
    scores: np.ndarray


# --------------------------------------------------------------------------- argument checks


def _as_matrix(x: Any, name: str, dim: int | None, dtypes: Sequence[np.dtype[Any]]) -> np.ndarray:
    if not isinstance(x, np.ndarray):
        raise InvalidType(f"{name} must be a numpy array, got {type(x).__name__}")
    if x.dtype not in dtypes:
        wanted = " or ".join(str(d) for d in dtypes)
        raise InvalidType(f"{name} must have dtype {wanted}, got {x.dtype} (convert it explicitly)")
    if x.ndim == 1:
        x = x[None, :]
    if x.ndim != 2:
        raise InvalidArgument(f"{name} must be 1-D or 2-D, got {x.ndim}-D")
    if dim is not None and x.shape[1] != dim:
        raise InvalidArgument(f"{name} must have dimension {dim}, got {x.shape[1]}")
    if x.shape[1] == 0:
        raise InvalidArgument(f"{name} must have at least one dimension")
    if x.dtype.kind == "f" and not np.isfinite(x).all():
        raise InvalidArgument(f"{name} contains NaN or infinite values")
    return np.ascontiguousarray(x)


def _as_ids(ids: Any, name: str = "ids") -> np.ndarray:
    a = np.asarray(ids)
    if a.ndim == 0:
        a = a.reshape(1)
    if a.size == 0:
        return np.empty(0, np.int64)
    if a.dtype.kind not in "iu" or a.dtype == np.bool_:
        raise InvalidType(f"{name} must be integers, got dtype {a.dtype}")
    if a.ndim != 1:
        raise InvalidArgument(f"{name} must be 1-D, got {a.ndim}-D")
    if a.dtype.kind == "u" and a.size and int(a.max()) > np.iinfo(np.int64).max:
        raise InvalidArgument(f"{name} must be < 2**63")
    if a.dtype.kind == "i" and a.size and int(a.min()) < 0:
        raise InvalidArgument(f"{name} must be >= 0, got {int(a.min())}")
    return np.ascontiguousarray(a, dtype=np.int64)


def _check_k(k: Any) -> int:
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k <= 0:
        raise InvalidArgument(f"k must be a positive integer, got {k!r}")
    return int(k)


def _check_threads(threads: Any) -> int:
    if isinstance(threads, bool) or not isinstance(threads, (int, np.integer)) or threads < 0:
        raise InvalidArgument(f"threads must be an integer >= 0 (0 = all cores), got {threads!r}")
    return int(threads)


def quantize_int8(vectors: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """float32 (n, d) -> (int8 codes (n, d), float32 scales (n,)); ``x ~= codes * scale``."""
    x = _as_matrix(vectors, "vectors", None, [np.dtype(np.float32)])
    codes = np.empty(x.shape, np.int8)
    scales = np.empty(x.shape[0], np.float32)
    _native.quantize_i8_into(x, codes, scales)
    return codes, scales


def _encode(kind: str, x: np.ndarray, name: str) -> tuple[np.ndarray, np.ndarray | None]:
    """float32 rows -> stored form of `kind` (and int8 scales)."""
    if kind == "i8":
        return quantize_int8(x)
    if kind == "f16":
        if np.abs(x).max(initial=0.0) > _F16_MAX:
            raise InvalidArgument(f"{name} has values beyond the float16 range (+-{_F16_MAX:g})")
        return x.astype(np.float16), None
    return x, None


def _prepare_queries(kind: str, q: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    if kind == "i8":
        return quantize_int8(q)
    return q, None


def exact_search(
    matrix: np.ndarray,
    queries: np.ndarray,
    k: int = 1,
    *,
    scales: np.ndarray | None = None,
    threads: int = 0,
    level: str | None = None,
) -> SearchResult:
    """Exact top-k inner product of float32 ``queries`` against a plain matrix.

    ``matrix`` is int8 (with per-row ``scales``, e.g. from :func:`quantize_int8`; queries are then
    quantised the same way), float16 or float32. Returned ids are row numbers. ``level`` runs a
    specific SIMD level (tests and benchmarks).
    """
    if not isinstance(matrix, np.ndarray) or matrix.dtype not in _KINDS.values():
        raise InvalidType("matrix must be a numpy array of dtype int8, float16 or float32")
    kind = next(n for n, dt in _KINDS.items() if dt == matrix.dtype)
    if matrix.ndim != 2:
        raise InvalidArgument(f"matrix must be 2-D, got {matrix.ndim}-D")
    q = _as_matrix(queries, "queries", matrix.shape[1], [np.dtype(np.float32)])
    k = _check_k(k)
    if scales is not None:
        scales = np.ascontiguousarray(scales, dtype=np.float32)
    qv, qs = _prepare_queries(kind, q)
    rows, sc = _native.search(
        kind,
        [(np.ascontiguousarray(matrix), scales)],
        qv,
        qs,
        k,
        _check_threads(threads),
        None,
        None,
        level,
    )
    return SearchResult(rows, sc)


# --------------------------------------------------------------------------- the index


@dataclass
class _Chunk:
    matrix: np.ndarray
    scales: np.ndarray | None
    filled: int

    @property
    def capacity(self) -> int:
        return int(self.matrix.shape[0])


class VectorIndex:
    """A growing set of (id, vector) pairs searched by inner product.

    - ``kind``: stored form, ``"i8"`` (d + 4 bytes a vector), ``"f16"`` or ``"f32"``.
    - ``mode``: ``"exact"`` always scans; ``"hnsw"`` always keeps a USearch graph; ``"auto"`` scans
      until the index holds ``hnsw_threshold`` vectors, then builds the graph (that one ``add`` call
      pays for the build) and keeps it up to date.
    - Searches with a ``filter`` (an allow-list of ids) always scan exactly, over those ids only.

    Thread-safe: any number of threads may search while one adds or removes. Searches see each
    completed ``add``/``remove``; a removed id never comes back from a later search.
    """

    DEFAULT_HNSW_THRESHOLD = 500_000

    def __init__(
        self,
        dim: int,
        *,
        kind: Kind = "i8",
        mode: Mode = "auto",
        hnsw_threshold: int = DEFAULT_HNSW_THRESHOLD,
        threads: int = 0,
        connectivity: int = 32,
        expansion_add: int = 128,
        expansion_search: int = 80,
    ) -> None:
        if isinstance(dim, bool) or not isinstance(dim, (int, np.integer)) or not 0 < dim <= 65536:
            raise InvalidArgument(f"dim must be an integer in 1..65536, got {dim!r}")
        if kind not in _KINDS:
            raise InvalidArgument(f"kind must be 'i8', 'f16' or 'f32', got {kind!r}")
        if mode not in ("auto", "exact", "hnsw"):
            raise InvalidArgument(f"mode must be 'auto', 'exact' or 'hnsw', got {mode!r}")
        if (
            isinstance(hnsw_threshold, bool)
            or not isinstance(hnsw_threshold, (int, np.integer))
            or hnsw_threshold < 1
        ):
            raise InvalidArgument(
                f"hnsw_threshold must be a positive integer, got {hnsw_threshold!r}"
            )
        self.dim = int(dim)
        self.kind: Kind = kind
        self.mode: Mode = mode
        self.hnsw_threshold = int(hnsw_threshold)
        self.threads = _check_threads(threads)
        self._hnsw_params = {
            "connectivity": int(connectivity),
            "expansion_add": int(expansion_add),
            "expansion_search": int(expansion_search),
        }
        self._lock = threading.Lock()
        self._ids = _native.IdMap()
        self._chunks: list[_Chunk] = []
        self._rows = 0
        # Bit r set = row r is live. None while nothing was ever removed. Replaced, never mutated
        # in place, so a search keeps a consistent snapshot without holding the lock.
        self._live: np.ndarray | None = None
        self._hnsw: Any = None
        self._hnsw_path: Path | None = None  # set while _hnsw is a read-only memory-mapped view

    # ------------------------------------------------------------------ basic facts

    def __len__(self) -> int:
        return int(self._ids.live)

    def __contains__(self, id_: object) -> bool:
        if isinstance(id_, bool) or not isinstance(id_, (int, np.integer)) or id_ < 0:
            return False
        with self._lock:
            return bool(self._ids.find(np.array([id_], np.int64))[0] >= 0)

    @property
    def uses_hnsw(self) -> bool:
        return self._hnsw is not None

    @property
    def expansion_search(self) -> int:
        """HNSW search breadth: higher finds true neighbours more often, and costs time."""
        return int(self._hnsw_params["expansion_search"])

    @expansion_search.setter
    def expansion_search(self, value: int) -> None:
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise InvalidArgument(f"expansion_search must be a positive integer, got {value!r}")
        with self._lock:
            self._hnsw_params["expansion_search"] = int(value)
            if self._hnsw is not None:
                self._hnsw.expansion_search = int(value)

    def memory_bytes(self) -> int:
        """Bytes held for this index: vectors, scales, ids and id hash, live mask, HNSW graph."""
        with self._lock:
            total = sum(
                c.matrix.nbytes + (c.scales.nbytes if c.scales is not None else 0)
                for c in self._chunks
            )
            total += int(self._ids.memory_bytes)
            total += self._live.nbytes if self._live is not None else 0
            if self._hnsw is not None:
                total += int(self._hnsw.memory_usage)
            return total

    def __repr__(self) -> str:
        return (
            f"VectorIndex(dim={self.dim}, kind={self.kind!r}, mode={self.mode!r}, size={len(self)}, "
            f"hnsw={self.uses_hnsw})"
        )

    # ------------------------------------------------------------------ writes

    def add(self, ids: Any, vectors: np.ndarray) -> None:
        """Add float32 ``vectors`` (n, dim) under new ``ids`` (n non-negative ints). All or nothing."""
        x = _as_matrix(vectors, "vectors", self.dim, [np.dtype(np.float32)])
        keys = _as_ids(ids)
        if keys.shape[0] != x.shape[0]:
            raise InvalidArgument(
                f"ids has {keys.shape[0]} entries but vectors has {x.shape[0]} rows"
            )
        if keys.shape[0] == 0:
            return
        codes, scales = _encode(self.kind, x, "vectors")
        with self._lock:
            try:  # validates the whole batch before changing anything
                first = int(self._ids.add(keys))
            except ValueError as e:
                raise InvalidArgument(str(e)) from None
            self._append(codes, scales)
            if self._live is not None:
                self._live = np.packbits(
                    self._live_bits(self._live, first, self._rows), bitorder="little"
                )
            if self._hnsw is not None:
                self._writable_hnsw().add(
                    np.arange(first, self._rows, dtype=np.uint64), codes, threads=self.threads
                )
            elif self.mode == "hnsw" or (self.mode == "auto" and len(self) >= self.hnsw_threshold):
                self._build_hnsw()

    def remove(self, ids: Any) -> None:
        """Remove ``ids``; raises :class:`UnknownId` (a KeyError) if any is absent. All or nothing."""
        keys = _as_ids(ids)
        if keys.shape[0] == 0:
            return
        with self._lock:
            try:
                rows = self._ids.erase(keys)
            except KeyError as e:
                raise UnknownId(str(e.args[0])) from None
            bits = self._live_bits(self._live, self._rows, self._rows)
            bits[rows] = 0
            self._live = np.packbits(bits, bitorder="little")
            if self._hnsw is not None:
                self._writable_hnsw().remove(rows.astype(np.uint64))

    def compact(self) -> None:
        """Drop removed rows for good: live vectors are copied (as stored, not re-encoded) into
        fresh chunks, the id table is rebuilt, and the HNSW graph too if there is one (which
        costs as much as building it). Searches running meanwhile finish on the old arrays."""
        with self._lock:
            if self._live is None:
                return
            parts = list(self._live_parts())
            rows = [start + keep for _, start, keep in parts] or [np.empty(0, np.int64)]
            ids = np.asarray(self._ids.ids_at(np.concatenate(rows)))
            self._chunks, self._rows, self._live = [], 0, None
            for c, _, keep in parts:
                self._append(c.matrix[keep], c.scales[keep] if c.scales is not None else None)
            fresh = _native.IdMap()
            fresh.restore(ids)
            self._ids = fresh
            if self._hnsw is not None:
                self._build_hnsw()

    def _append(self, codes: np.ndarray, scales: np.ndarray | None) -> None:
        done = 0
        n = codes.shape[0]
        while done < n:
            if not self._chunks or self._chunks[-1].filled == self._chunks[-1].capacity:
                cap = (
                    _FIRST_CHUNK_ROWS
                    if not self._chunks
                    else min(self._chunks[-1].capacity * 2, _MAX_CHUNK_ROWS)
                )
                self._chunks.append(
                    _Chunk(
                        np.empty((cap, self.dim), _KINDS[self.kind]),
                        np.empty(cap, np.float32) if scales is not None else None,
                        0,
                    )
                )
            c = self._chunks[-1]
            take = min(n - done, c.capacity - c.filled)
            if (
                not c.matrix.flags.writeable
            ):  # a loaded, memory-mapped chunk is full by construction
                raise AssertionError("memory-mapped chunk unexpectedly has free rows")
            c.matrix[c.filled : c.filled + take] = codes[done : done + take]
            if c.scales is not None and scales is not None:
                c.scales[c.filled : c.filled + take] = scales[done : done + take]
            c.filled += take
            done += take
        self._rows += n

    @staticmethod
    def _live_bits(live: np.ndarray | None, covered: int, rows: int) -> np.ndarray:
        """One uint8 per row [0, rows): 1 = live. ``live`` describes rows [0, covered) (its
        padding bits mean nothing); rows from ``covered`` on are new, hence live."""
        bits = np.ones(rows, np.uint8)
        if live is not None:
            bits[:covered] = np.unpackbits(live, count=covered, bitorder="little")
        return bits

    # ------------------------------------------------------------------ HNSW

    def _new_hnsw(self) -> Any:
        # The graph gets the stored codes as they are (int8 without their scales): it ranks by
        # cosine, which a per-vector scale does not change.
        from usearch.index import Index

        p = self._hnsw_params
        return Index(
            ndim=self.dim,
            metric="cos",
            dtype=self.kind,
            connectivity=p["connectivity"],
            expansion_add=p["expansion_add"],
            expansion_search=p["expansion_search"],
        )

    def _build_hnsw(self) -> None:
        index = self._new_hnsw()
        for c, start, keep in self._live_parts():
            index.add(
                (start + keep).astype(np.uint64),
                np.ascontiguousarray(c.matrix[keep]),
                threads=self.threads,
            )
        self._hnsw = index
        self._hnsw_path = None

    def _writable_hnsw(self) -> Any:
        if self._hnsw_path is not None:  # a memory-mapped view: load it for real before changing it
            index = self._new_hnsw()
            index.load(str(self._hnsw_path))
            self._hnsw = index
            self._hnsw_path = None
        return self._hnsw

    def _live_parts(self) -> Iterator[tuple[_Chunk, int, np.ndarray]]:
        """(chunk, its first global row, its live local rows as int64) for every chunk holding
        live rows, in row order."""
        bits = self._live_bits(self._live, self._rows, self._rows)
        start = 0
        for c in self._chunks:
            keep = np.flatnonzero(bits[start : start + c.filled]).astype(np.int64)
            if keep.size:
                yield c, start, keep
            start += c.filled

    # ------------------------------------------------------------------ search

    def search(
        self,
        queries: np.ndarray,
        k: int = 1,
        *,
        filter: Any = None,
        exact: bool | None = None,
        threads: int | None = None,
    ) -> SearchResult:
        """Top-k ids by inner product for float32 ``queries`` ((n, dim) or (dim,)).

        ``filter``: ids that may match (an allow-list); unknown ids in it are ignored.
        ``exact``: force (True) or forbid (False) the exact scan; default: HNSW when the index has one.
        """
        q = _as_matrix(queries, "queries", self.dim, [np.dtype(np.float32)])
        k = _check_k(k)
        nthreads = self.threads if threads is None else _check_threads(threads)
        allow = None if filter is None else _as_ids(filter, "filter")
        with self._lock:  # snapshot: row data below `rows` is never rewritten
            chunks = [
                (c.matrix[: c.filled], c.scales[: c.filled] if c.scales is not None else None)
                for c in self._chunks
            ]
            live, hnsw = self._live, self._hnsw
            allow_rows = None if allow is None else self._ids.find(allow)
            total = self._rows
        if exact is False and hnsw is None:
            raise InvalidArgument("exact=False needs an HNSW graph, which this index does not have")
        qv, qs = _prepare_queries(self.kind, q)
        if allow_rows is not None:
            rows, scores = self._scan_allowed(chunks, qv, qs, k, nthreads, live, allow_rows, total)
        elif hnsw is not None and exact is not True:
            rows, scores = self._search_hnsw(hnsw, chunks, q, qv, qs, k, nthreads, live)
        else:
            rows, scores = _native.search(self.kind, chunks, qv, qs, k, nthreads, live, None)
        return self._result(rows, scores)

    def _result(self, rows: np.ndarray, scores: np.ndarray) -> SearchResult:
        """Rows -> ids. A row removed after the search's snapshot maps to -1: such hits move behind
        the live ones as misses (id -1, score -inf), like the padding of a short result."""
        with self._lock:
            ids = np.asarray(self._ids.ids_at(rows.ravel())).reshape(rows.shape)
        gone = ids < 0
        if gone.any():
            order = np.argsort(gone, axis=1, kind="stable")
            ids = np.take_along_axis(ids, order, axis=1)
            scores = np.take_along_axis(scores, order, axis=1)
            scores[np.take_along_axis(gone, order, axis=1)] = -np.inf
        return SearchResult(ids, scores)

    def _scan_allowed(
        self,
        chunks: list[tuple[np.ndarray, np.ndarray | None]],
        qv: np.ndarray,
        qs: np.ndarray | None,
        k: int,
        threads: int,
        live: np.ndarray | None,
        allow_rows: np.ndarray,
        total: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        rows = np.unique(allow_rows[allow_rows >= 0])
        if live is not None and rows.size:
            rows = rows[self._live_bits(live, total, total)[rows].astype(bool)]
        if rows.size < _GATHER_SHARE * max(total, 1):
            return _native.search(self.kind, chunks, qv, qs, k, threads, None, rows)
        bits = np.zeros(total, np.uint8)
        bits[rows] = 1
        return _native.search(
            self.kind, chunks, qv, qs, k, threads, np.packbits(bits, bitorder="little"), None
        )

    def _search_hnsw(
        self,
        hnsw: Any,
        chunks: list[tuple[np.ndarray, np.ndarray | None]],
        q: np.ndarray,
        qv: np.ndarray,
        qs: np.ndarray | None,
        k: int,
        threads: int,
        live: np.ndarray | None,
    ) -> tuple[np.ndarray, np.ndarray]:
        # Ask the graph for more candidates than k, then rank them with the exact kernel: scores
        # are exact and ranking errors of the graph inside the candidate set are undone.
        count = max(4 * k, 32)
        found = hnsw.search(qv, count, threads=threads)
        if hasattr(found, "counts"):  # BatchMatches
            keys, counts = found.keys, found.counts
        else:  # usearch answers a one-row batch with a single Matches
            keys, counts = found.keys[None, :], np.array([len(found)])
        out_rows = np.full((q.shape[0], k), -1, np.int64)
        out_scores = np.full((q.shape[0], k), -np.inf, np.float32)
        for i in range(q.shape[0]):
            cand = np.unique(keys[i, : counts[i]].astype(np.int64))
            if cand.size == 0:
                continue
            qi = qv[i : i + 1]
            qsi = qs[i : i + 1] if qs is not None else None
            r, s = _native.search(self.kind, chunks, qi, qsi, k, 1, live, cand)
            out_rows[i], out_scores[i] = r[0], s[0]
        return out_rows, out_scores

    # ------------------------------------------------------------------ persistence

    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to directory ``path`` (replaced atomically if it exists)."""
        target = Path(path)
        tmp = target.with_name(target.name + ".tmp")
        if tmp.exists():
            shutil.rmtree(tmp)
        tmp.mkdir(parents=True)
        with self._lock:
            with open(tmp / "vectors.npy", "wb") as f:
                header = np.lib.format
                header.write_array_header_1_0(
                    f,
                    {
                        "descr": header.dtype_to_descr(_KINDS[self.kind]),
                        "fortran_order": False,
                        "shape": (self._rows, self.dim),
                    },
                )
                f.writelines(
                    np.ascontiguousarray(c.matrix[: c.filled]).tobytes() for c in self._chunks
                )
            if self.kind == "i8":
                np.save(
                    tmp / "scales.npy",
                    np.concatenate(
                        [c.scales[: c.filled] for c in self._chunks if c.scales is not None]
                        or [np.empty(0, np.float32)]
                    ),
                )
            np.save(tmp / "ids.npy", self._ids.ids_at(np.arange(self._rows, dtype=np.int64)))
            if self._hnsw is not None:
                self._hnsw.save(str(tmp / "hnsw.usearch"))
            meta = {
                "format": _FORMAT,
                "dim": self.dim,
                "kind": self.kind,
                "mode": self.mode,
                "hnsw_threshold": self.hnsw_threshold,
                "threads": self.threads,
                "hnsw_params": self._hnsw_params,
                "rows": self._rows,
                "live": len(self),
                "hnsw": self._hnsw is not None,
            }
            (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
        for written in tmp.iterdir():
            fsync_path(written)
        if target.exists():
            old = target.with_name(target.name + ".old")
            if old.exists():
                shutil.rmtree(old)
            target.rename(old)
            tmp.rename(target)
            shutil.rmtree(old)  # open memory maps of the old files stay valid
        else:
            tmp.rename(target)
        with self._lock:
            if self._hnsw_path is not None:
                self._hnsw_path = target / "hnsw.usearch"

    @classmethod
    def load(cls, path: str | os.PathLike[str], *, mmap: bool = True) -> VectorIndex:
        """Open an index saved by :meth:`save`. With ``mmap`` the vectors and the graph are
        memory-mapped (opening costs O(ids), not O(bytes)); later additions go to new memory."""
        src = Path(path)
        try:
            meta = json.loads((src / "meta.json").read_text())
        except FileNotFoundError:
            raise InvalidArgument(f"{src} holds no saved VectorIndex (meta.json missing)") from None
        if meta.get("format") != _FORMAT:
            raise InvalidArgument(f"{src}: unsupported index format {meta.get('format')!r}")
        idx = cls(
            meta["dim"],
            kind=meta["kind"],
            mode=meta["mode"],
            hnsw_threshold=meta["hnsw_threshold"],
            threads=meta["threads"],
            **meta["hnsw_params"],
        )
        mode: Literal["r"] | None = "r" if mmap else None
        vectors = np.load(src / "vectors.npy", mmap_mode=mode)
        scales = np.load(src / "scales.npy", mmap_mode=mode) if meta["kind"] == "i8" else None
        ids = np.load(src / "ids.npy")
        if (
            vectors.shape != (meta["rows"], meta["dim"])
            or ids.shape != (meta["rows"],)
            or vectors.dtype != _KINDS[meta["kind"]]
        ):
            raise InvalidArgument(f"{src}: saved arrays do not match meta.json")
        try:
            idx._ids.restore(ids)
        except ValueError as e:
            raise InvalidArgument(f"{src}: {e}") from None
        if meta["rows"]:
            idx._chunks.append(_Chunk(vectors, scales, int(meta["rows"])))
        idx._rows = int(meta["rows"])
        if int(idx._ids.live) != idx._rows:
            idx._live = np.packbits((ids >= 0).astype(np.uint8), bitorder="little")
        if meta["hnsw"]:
            hnsw = idx._new_hnsw()
            if mmap:
                hnsw.view(str(src / "hnsw.usearch"))
                idx._hnsw_path = src / "hnsw.usearch"
            else:
                hnsw.load(str(src / "hnsw.usearch"))
            idx._hnsw = hnsw
        return idx


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory's fsync makes a rename in it durable)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
