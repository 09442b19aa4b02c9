"""Metrics used for calibration and accuracy claims, checked against brute force; the LFW set's
images, pairs and central-face embeddings as facecore.evaluation reads them."""

from __future__ import annotations

import numpy as np
from facecore.evaluation import (
    all_pairs,
    best_threshold_accuracy,
    cross_validated_accuracy,
    embed_central_faces,
    lfw_images,
    pair_similarities,
    read_pairs,
    roc,
    threshold_at_far,
)

from tests.conftest import SHARED_DATA

LFW = SHARED_DATA / "lfw"


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
    a, b, same = read_pairs(LFW / "pairs.txt")
    assert len(a) == len(b) == len(same) == 2400
    assert int(same.sum()) == 1200 and same[:300].all() and not same[300:600].any()
    assert a[0].startswith("images/") and a[0].endswith(".jpg")


def test_nearest_to_centre() -> None:
    from facecore.evaluation import nearest_to_centre

    boxes = np.array([[0, 0, 20, 20], [100, 90, 160, 150], [200, 200, 250, 250]], np.float32)
    assert nearest_to_centre(boxes, 250, 250) == 1
    assert nearest_to_centre(list(boxes), 40, 40) == 0
    assert nearest_to_centre(boxes[2:], 250, 250) == 0


def test_lfw_images_hold_every_pair() -> None:
    paths = lfw_images(LFW)
    assert len(paths) == 3074 and paths == sorted(paths)
    assert len({p.parent.name for p in paths}) == 1664
    a, b, _ = read_pairs(LFW / "pairs.txt")
    assert set(a) | set(b) <= {str(p.relative_to(LFW)) for p in paths}


def test_pair_similarities_follow_the_pairs_file() -> None:
    """One axis per person: a same-person pair scores 1, any other 0, one with a missing face -1.
    A pair read against the wrong rows would score otherwise."""
    paths = lfw_images(LFW)
    person = {name: k for k, name in enumerate(sorted({p.parent.name for p in paths}))}
    emb = np.zeros((len(paths), len(person)), np.float32)
    emb[np.arange(len(paths)), [person[p.parent.name] for p in paths]] = 1
    a, b, same = read_pairs(LFW / "pairs.txt")
    found = np.ones(len(paths), dtype=bool)
    found[paths.index(LFW / b[1000])] = False  # a different-person pair's second image
    sims, same_out = pair_similarities(emb, found, paths, LFW)
    assert (same_out == same).all()
    expected = np.where(same, 1.0, 0.0)
    expected[[i for i, (x, y) in enumerate(zip(a, b)) if b[1000] in (x, y)]] = -1.0
    assert not same[1000] and expected[1000] == -1.0
    np.testing.assert_array_equal(sims, expected)
    # The rows may come in any order: only the paths tie them to the pairs.
    back = slice(None, None, -1)
    sims_reversed, _ = pair_similarities(emb[back], found[back], paths[back], LFW)
    np.testing.assert_array_equal(sims_reversed, expected)


def test_embed_central_faces_of_real_photos() -> None:
    """Two photos of one person, one of another, and one without a face."""
    people = LFW / "images"
    paths = [
        people / "Aaron_Sorkin" / "Aaron_Sorkin_0001.jpg",
        people / "Aaron_Sorkin" / "Aaron_Sorkin_0002.jpg",
        people / "Abdullah_Gul" / "Abdullah_Gul_0001.jpg",
        SHARED_DATA / "misc" / "pilatus800.jpg",
    ]
    emb, found = embed_central_faces(paths)
    assert emb.shape == (4, 128) and found.tolist() == [True, True, True, False]
    np.testing.assert_allclose(np.linalg.norm(emb[:3], axis=1), 1.0, atol=1e-4)
    assert not emb[3].any()
    same, other = float(emb[0] @ emb[1]), float(emb[0] @ emb[2])
    assert same > other + 0.1, (same, other)
