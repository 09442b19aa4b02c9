"""Verification on a labelled photo set: the engine's embedding of each photo's central face, the
similarity of listed pairs, pair accuracy, FAR thresholds, ROC.

A set is laid out as LFW is in ../shared/data/lfw: `images/<person>/<person>_0001.jpg`, and a
pairs file naming images relative to the set's root. Used by tools/calibrate.py (score
calibration), tools/fit_alignment.py, the LFW tests and bench/, and usable on a customer's own
labelled photos. Similarities are cosine similarities (higher = more alike).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np


def nearest_to_centre(boxes: np.ndarray | list[np.ndarray], width: int, height: int) -> int:
    """Index of the (x1, y1, x2, y2) box whose centre is nearest the centre of a width x height
    image: the labelled person of an LFW photo is its central face."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    centres = (b[:, :2] + b[:, 2:]) / 2
    return int(np.argmin(np.linalg.norm(centres - np.array([width / 2, height / 2]), axis=1)))


def read_pairs(path: str | Path) -> tuple[list[str], list[str], np.ndarray]:
    """A pairs file, one `image_a image_b same` line per pair (same: 1 or 0), as LFW's pairs.txt
    of ../shared/data: (images a, images b, same as bool array)."""
    a, b, same = [], [], []
    for line in Path(path).read_text().split("\n"):
        if line.strip():
            x, y, s = line.split()
            a.append(x)
            b.append(y)
            same.append(s == "1")
    return a, b, np.array(same, dtype=bool)


def lfw_images(root: str | Path) -> list[Path]:
    """Every image of the set at `root` (`images/<person>/*.jpg`), sorted: the row order of
    `embed_central_faces` and the `paths` of `pair_similarities`."""
    return sorted((Path(root) / "images").glob("*/*.jpg"))


def embed_central_faces(paths: Sequence[Path], threads: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(embeddings (n, 128), found (n,)): the engine's unit-norm embedding of the face nearest each
    image's centre; a row of zeros and found False where it finds no face."""
    from facecore.pipeline.engine import Engine  # the pipeline loads only here
    from facecore.pipeline.image import decode_image

    engine = Engine(threads=threads)
    emb = np.zeros((len(paths), 128), dtype=np.float32)
    found = np.zeros(len(paths), dtype=bool)
    for i, p in enumerate(paths):
        img = decode_image(Path(p).read_bytes())
        faces = engine.detect(img, max_faces=10, fields=("embedding",))
        if not faces:
            continue
        e = faces[nearest_to_centre([f.box for f in faces], img.shape[1], img.shape[0])].embedding
        assert e is not None
        emb[i], found[i] = e, True
    return emb, found


def pair_similarities(
    emb: np.ndarray, found: np.ndarray, paths: Sequence[Path], root: str | Path
) -> tuple[np.ndarray, np.ndarray]:
    """(cosine, same) for each line of `root`/pairs.txt, whose images are rows of `emb` by their
    `paths`. A pair with a face missing on either side scores -1, "different": what a user of a
    pipeline that finds no face gets."""
    root = Path(root)
    row = {str(Path(p).relative_to(root)): i for i, p in enumerate(paths)}
    a, b, same = read_pairs(root / "pairs.txt")
    ia, ib = np.array([row[x] for x in a]), np.array([row[y] for y in b])
    sims = np.einsum("ij,ij->i", emb[ia], emb[ib])
    return np.where(found[ia] & found[ib], sims, -1.0), same


def best_threshold_accuracy(sims: np.ndarray, same: np.ndarray) -> tuple[float, float]:
    """(accuracy, threshold) of the best single threshold `sim >= t` on these pairs."""
    s = np.asarray(sims, dtype=np.float64)
    y = np.asarray(same, dtype=bool)
    order = np.argsort(-s, kind="stable")
    s_sorted, y_sorted = s[order], y[order]
    # Predict "same" for the first k pairs (k = 0..n): correct = same among first k + diff after k.
    tp = np.concatenate([[0], np.cumsum(y_sorted)])
    fp = np.concatenate([[0], np.cumsum(~y_sorted)])
    correct = tp + (np.count_nonzero(~y) - fp)
    # Only cut between distinct values.
    valid = np.ones(len(s) + 1, dtype=bool)
    valid[1:-1] = s_sorted[:-1] != s_sorted[1:]
    k = int(np.argmax(np.where(valid, correct, -1)))
    if k == 0:
        t = float(s_sorted[0]) + 1e-6
    elif k == len(s):
        t = float(s_sorted[-1])
    else:
        t = float((s_sorted[k - 1] + s_sorted[k]) / 2)
    return float(correct[k]) / len(s), t


def cross_validated_accuracy(sims: np.ndarray, same: np.ndarray, folds: np.ndarray) -> float:
    """Mean accuracy over folds, each tested at the threshold chosen on the other folds."""
    s, y, f = np.asarray(sims), np.asarray(same, dtype=bool), np.asarray(folds)
    accs = []
    for k in np.unique(f):
        _, t = best_threshold_accuracy(s[f != k], y[f != k])
        accs.append(float(np.mean((s[f == k] >= t) == y[f == k])))
    return float(np.mean(accs))


def threshold_at_far(impostor_sims: np.ndarray, far: float) -> float:
    """Smallest threshold t such that the fraction of impostor pairs with sim >= t is <= far."""
    s = np.sort(np.asarray(impostor_sims, dtype=np.float64))[::-1]
    allowed = int(np.floor(far * len(s)))  # impostors that may pass
    if allowed >= len(s):
        return float(s[-1])
    # Pass the first `allowed` (strictly above s[allowed]); the threshold sits just above s[allowed].
    return float(np.nextafter(s[allowed], np.inf))


@dataclass(frozen=True)
class RocPoint:
    far: float
    threshold: float
    tar: float  # fraction of genuine pairs with sim >= threshold
    impostors_passing: int


def roc(genuine: np.ndarray, impostor: np.ndarray, fars: list[float]) -> list[RocPoint]:
    g = np.asarray(genuine, dtype=np.float64)
    i = np.asarray(impostor, dtype=np.float64)
    out = []
    for far in fars:
        t = threshold_at_far(i, far)
        out.append(RocPoint(far, t, float(np.mean(g >= t)), int(np.count_nonzero(i >= t))))
    return out


def all_pairs(embeddings: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(genuine, impostor) cosine similarities over every unordered pair of rows.

    `embeddings` unit-norm (n, d); `labels` identity per row. Memory: one n x n float32 matrix."""
    e = np.asarray(embeddings, dtype=np.float32)
    lab = np.asarray(labels)
    sims = e @ e.T
    iu = np.triu_indices(len(e), k=1)
    same = lab[iu[0]] == lab[iu[1]]
    flat = sims[iu]
    return flat[same], flat[~same]
