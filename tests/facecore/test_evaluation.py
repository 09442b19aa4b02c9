"""Metrics used for calibration and accuracy claims, checked against brute force."""

from __future__ import annotations

import numpy as np
from facecore.evaluation import (
    all_pairs,
    best_threshold_accuracy,
    cross_validated_accuracy,
    roc,
    threshold_at_far,
)


def test_best_threshold_matches_brute_force(rng: np.random.Generator) -> None:
    for _ in range(20):
        n = int(rng.integers(2, 60))
        sims = np.round(rng.standard_normal(n), 1)  # ties on purpose
        same = rng.random(n) < 0.5
        acc, t = best_threshold_accuracy(sims, same)
        brute = max(np.mean((sims >= c) == same) for c in np.concatenate([sims, [np.inf]]))
        assert acc == brute
        assert np.mean((sims >= t) == same) == acc


def test_separable_pairs_are_perfect() -> None:
    acc, t = best_threshold_accuracy(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0]))
    assert acc == 1.0 and 0.2 < t <= 0.8
    folds = np.array([0, 1, 0, 1])
    assert (
        cross_validated_accuracy(np.array([0.9, 0.8, 0.1, 0.2]), np.array([1, 1, 0, 0]), folds)
        == 1.0
    )


def test_threshold_at_far(rng: np.random.Generator) -> None:
    imp = rng.standard_normal(100_000)
    for far in (1e-1, 1e-2, 1e-3, 1e-4, 1e-5):
        t = threshold_at_far(imp, far)
        assert np.mean(imp >= t) <= far
        # The threshold is tight: one step lower lets more than `far` through.
        assert np.mean(imp >= np.sort(imp)[::-1][int(far * len(imp))]) > far


def test_roc_and_all_pairs(rng: np.random.Generator) -> None:
    e = rng.standard_normal((30, 8)).astype(np.float32)
    e /= np.linalg.norm(e, axis=1, keepdims=True)
    labels = np.repeat(np.arange(10), 3)
    genuine, impostor = all_pairs(e, labels)
    assert len(genuine) == 10 * 3 and len(impostor) == 30 * 29 // 2 - 30
    points = roc(genuine, impostor, [0.1, 0.01])
    assert points[0].tar >= points[1].tar
    assert points[1].impostors_passing <= 0.01 * len(impostor)


def test_read_pairs_of_the_lfw_set() -> None:
    from facecore.evaluation import read_pairs

    from tests.conftest import SHARED_DATA

    a, b, same = read_pairs(SHARED_DATA / "lfw" / "pairs.txt")
    assert len(a) == len(b) == len(same) == 2400
    assert int(same.sum()) == 1200 and same[:300].all() and not same[300:600].any()
    assert a[0].startswith("images/") and a[0].endswith(".jpg")


def test_nearest_to_centre() -> None:
    from facecore.evaluation import nearest_to_centre

    boxes = np.array([[0, 0, 20, 20], [100, 90, 160, 150], [200, 200, 250, 250]], np.float32)
    assert nearest_to_centre(boxes, 250, 250) == 1
    assert nearest_to_centre(list(boxes), 40, 40) == 0
    assert nearest_to_centre(boxes[2:], 250, 250) == 0
