"""Similarity -> 0..100 score, calibrated on impostor pairs so that 80 means FAR 1e-4.

The score is piecewise linear in the cosine similarity of two unit-norm embeddings between anchor
points measured by `tools/calibrate.py` on every different-identity image pair of the LFW developer
set (docs/accuracy.md has the method, the ROC and the table). The anchors fix FAR 1e-2 at 60,
1e-3 at 70, 1e-4 at 80 and 1e-5 at 90; cosine -1 maps to 0 and 1 to 100. Monotonic by construction.
The table holds for Engine's default alignment ("dual"); a different recogniser or alignment needs
a new calibration (the table names what it was made with).
"""

from __future__ import annotations

import functools

import numpy as np

from facecore.errors import InvalidArgument

# Written by tools/calibrate.py; do not edit by hand.
CALIBRATION = {
    "model": "dlib_resnet128, alignment=dual: mean of the embeddings of two 150 px chips",
    "impostor_pairs": 4719512,
    "far_cosine": {"0.01": 0.908934, "0.001": 0.927279, "0.0001": 0.941816, "1e-05": 0.95341},
}

SCORE_AT_FAR = {1e-2: 60.0, 1e-3: 70.0, 1e-4: 80.0, 1e-5: 90.0}


def _anchors(far_cosine: dict[float, float]) -> tuple[np.ndarray, np.ndarray]:
    cos = [-1.0] + [far_cosine[f] for f in sorted(SCORE_AT_FAR, reverse=True)] + [1.0]
    score = [0.0] + [SCORE_AT_FAR[f] for f in sorted(SCORE_AT_FAR, reverse=True)] + [100.0]
    c = np.asarray(cos, dtype=np.float64)
    if np.any(np.diff(c) <= 0):
        raise InvalidArgument(f"calibration cosines must increase with score: {cos}")
    return c, np.asarray(score, dtype=np.float64)


@functools.cache
def _table() -> tuple[np.ndarray, np.ndarray]:
    far_cosine = CALIBRATION["far_cosine"]
    assert isinstance(far_cosine, dict)
    return _anchors({float(k): float(v) for k, v in far_cosine.items()})


# Two float32 unit vectors of the same face have a dot product of 1 - 1e-7 or so, not 1: within
# this of 1, a cosine is 1 (score 100), so an identical face meets match_threshold 100. The score
# this forgives is 0.0002 at most (the top segment's slope is ~215 score per unit cosine).
UNIT_TOLERANCE = 1e-6


def similarity_to_score(cosine: float | np.ndarray) -> np.ndarray:
    """Score(s) in [0, 100] for cosine similarity values (clipped to [-1, 1]; within
    UNIT_TOLERANCE of 1 is 1)."""
    cos, score = _table()
    c = np.asarray(cosine, dtype=np.float64)
    c = np.clip(np.where(c >= 1.0 - UNIT_TOLERANCE, 1.0, c), -1.0, 1.0)
    return np.asarray(np.interp(c, cos, score), dtype=np.float64)


def score_to_similarity(score: float) -> float:
    """The cosine at which `score` is reached (for pruning searches by match_threshold)."""
    if not 0.0 <= score <= 100.0:
        raise InvalidArgument(f"score must be in [0, 100], got {score}")
    cos, scores = _table()
    return float(np.interp(score, scores, cos))
