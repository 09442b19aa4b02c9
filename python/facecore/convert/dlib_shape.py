"""dlib's 5-point shape predictor (`shape_predictor_5_face_landmarks.dat`) as plain numpy arrays.

An ensemble of regression trees (Kazemi & Sullivan 2014) is not a neural network, so it is not
converted to ONNX: `facecore.pipeline.align.Shape5Predictor` evaluates it in numpy from the arrays written
here (`dlib_shape5.npz`). The .dat layout (dlib's `serialize(shape_predictor)`, version 1):
initial_shape (column matrix of x,y pairs in the detector box's unit square); forests (per cascade,
per tree: splits in heap order (idx1, idx2, thresh) and leaf value vectors); anchor_idx and
deltas (per cascade, per feature pixel: the landmark it hangs off and its offset).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facecore.convert.dlib_dnn import DlibFormatError, DlibReader
from facecore.convert.sources import member_path, source_entry

MEMBER = "dlib_shape5"
OUT_FILE = "dlib_shape5.npz"


def _column(r: DlibReader) -> list[float]:
    """A dlib column matrix<float,0,1> (dims written negated by current dlib)."""
    nr, nc = r.read_int(), r.read_int()
    if nr > 0 or nc != -1:
        raise r.fail(f"expected a column matrix, got dims {nr}x{nc}")
    return [r.read_float() for _ in range(-nr)]


def _count(r: DlibReader, limit: int, what: str) -> int:
    n = r.read_int()
    if not 0 < n <= limit:
        raise r.fail(f"implausible {what} count {n}")
    return n


def parse(data: bytes, name: str = "<bytes>") -> dict[str, np.ndarray]:
    """The predictor's arrays; every tree must be complete and of one depth (dlib's are)."""
    r = DlibReader(data, name)
    r.expect(1, "shape_predictor version")
    initial = _column(r)
    n_coords = len(initial)
    n_casc = _count(r, 1000, "cascade")
    idx1: list[list[list[int]]] = []
    idx2: list[list[list[int]]] = []
    thresh: list[list[list[float]]] = []
    leaves: list[list[list[list[float]]]] = []
    for _ in range(n_casc):
        ci1, ci2, cth, clv = [], [], [], []
        for _ in range(_count(r, 100_000, "tree")):
            splits = [
                (r.read_int(), r.read_int(), r.read_float())
                for _ in range(_count(r, 1 << 16, "split"))
            ]
            values = [_column(r) for _ in range(_count(r, 1 << 17, "leaf"))]
            if len(values) != len(splits) + 1 or any(len(v) != n_coords for v in values):
                raise r.fail("tree is not complete or its leaves have the wrong size")
            ci1.append([s[0] for s in splits])
            ci2.append([s[1] for s in splits])
            cth.append([s[2] for s in splits])
            clv.append(values)
        idx1.append(ci1)
        idx2.append(ci2)
        thresh.append(cth)
        leaves.append(clv)
    if r.read_int() != n_casc:
        raise r.fail("anchor_idx does not match the cascades")
    anchors = [[r.read_int() for _ in range(r.read_int())] for _ in range(n_casc)]
    if r.read_int() != n_casc:
        raise r.fail("deltas do not match the cascades")
    deltas = [
        [(r.read_float(), r.read_float()) for _ in range(r.read_int())] for _ in range(n_casc)
    ]
    if not r.at_end():
        raise r.fail("trailing bytes after the shape predictor")
    try:
        out = {
            "initial_shape": np.asarray(initial, np.float32),
            "split_idx1": np.asarray(idx1, np.int32),
            "split_idx2": np.asarray(idx2, np.int32),
            "split_thresh": np.asarray(thresh, np.float32),
            "leaf_values": np.asarray(leaves, np.float32),
            "anchor_idx": np.asarray(anchors, np.int32),
            "deltas": np.asarray(deltas, np.float32),
        }
    except ValueError:  # ragged: trees of several depths or cascades of several pixel counts
        raise DlibFormatError(f"{name}: cascades or trees differ in size") from None
    n_pix = out["deltas"].shape[1]
    n_split = out["split_idx1"].shape[2]
    if (n_split + 1) & n_split:
        raise DlibFormatError(f"{name}: {n_split} splits is not a complete binary tree")
    if out["anchor_idx"].shape != (n_casc, n_pix) or out["anchor_idx"].max() >= n_coords // 2:
        raise DlibFormatError(f"{name}: anchor indices out of range")
    if max(out["split_idx1"].max(), out["split_idx2"].max()) >= n_pix:
        raise DlibFormatError(f"{name}: split pixel index out of range")
    return out


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Convert the pinned 5-point predictor into `out_dir/dlib_shape5.npz`; manifest entry."""
    src = member_path(MEMBER, cache)
    arrays = parse(src.read_bytes(), str(src))
    out = out_dir / OUT_FILE
    tmp = out.with_name(out.stem + ".tmp.npz")
    np.savez(tmp, **arrays)  # type: ignore[arg-type]  # uncompressed: the npz is small and loads at start-up
    tmp.replace(out)
    c, t, s = arrays["split_idx1"].shape
    return {
        "shape5": {
            "file": OUT_FILE,
            "format": "npz",
            "inputs": [
                {
                    "name": "image + box",
                    "meaning": "grey image (dlib's (R+G+B)//3 of the 8-bit colour image) and the "
                    "face box of dlib's HOG detector; see facecore.pipeline.align.Shape5Predictor",
                }
            ],
            "outputs": [
                {
                    "name": "landmarks",
                    "shape": ["N", 5, 2],
                    "meaning": "x,y in image pixels: outer and inner corner of the eye on the "
                    "image's right, outer and inner corner of the eye on the image's left, base "
                    "of the nose (dlib's order)",
                }
            ],
            "source": source_entry(MEMBER, cache),
            "licence": "CC0 (public domain), Davis E. King",
            "converter": "facecore.convert.dlib_shape",
            "notes": f"ensemble of regression trees: {c} cascades x {t} trees of {s} splits; "
            "evaluated in numpy by facecore.pipeline.align.Shape5Predictor, not an ONNX model",
        }
    }
