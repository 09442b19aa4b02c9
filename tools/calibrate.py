"""Calibrate the 0..100 score on LFW impostor pairs and report verification accuracy.

    python tools/calibrate.py [--write] [--threads 1]

Runs the engine on every image of ../shared/data/lfw (the face nearest the image centre), then:
- every different-identity image pair is an impostor pair (about 4.7 million), every same-identity
  pair a genuine pair; the cosine reaching FAR 1e-2 .. 1e-5 becomes the anchors of facecore.score;
- accuracy on pairs.txt at the best threshold, and 4-fold cross-validated (folds of 600 pairs).
--write replaces the CALIBRATION table in python/facecore/score.py and writes docs/accuracy.json,
from which docs/accuracy.md quotes. The embeddings are made by facecore.evaluation's
embed_central_faces, the same code that the bench's LFW comparison uses.
"""

from __future__ import annotations

import argparse
import json
import math
import re
import time
from pathlib import Path

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
)

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw"

ROC_FARS = [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 3e-5, 1e-5]


def evaluate(emb: np.ndarray, found: np.ndarray, paths: list[Path]) -> dict[str, object]:
    # A pair with a face missing on either side counts as "different" (similarity -1).
    sims, same = pair_similarities(emb, found, paths, LFW)
    folds = np.arange(len(sims)) // 600
    acc, thr = best_threshold_accuracy(sims, same)
    cv = cross_validated_accuracy(sims, same, folds)

    labels = np.array([p.parent.name for p in paths])[found]
    genuine, impostor = all_pairs(emb[found], labels)
    points = roc(genuine, impostor, ROC_FARS)
    missing = [str(p.relative_to(LFW)) for p, f in zip(paths, found) if not f]
    a, b, _ = read_pairs(LFW / "pairs.txt")
    return {
        "images": len(paths),
        "faces_found": int(found.sum()),
        "missing": missing,
        "pairs": len(sims),
        "pairs_with_missing_face": sum(x in missing or y in missing for x, y in zip(a, b)),
        "accuracy_best_threshold": acc,
        "best_threshold_cosine": thr,
        "accuracy_4fold_cv": cv,
        "genuine_pairs": len(genuine),
        "impostor_pairs": len(impostor),
        "roc": [p.__dict__ for p in points],
    }


def write_calibration(result: dict[str, object]) -> None:
    rocs = {p["far"]: p["threshold"] for p in result["roc"]}  # type: ignore[attr-defined]
    table = {
        "model": "dlib_resnet128, alignment=dual: mean of the embeddings of two 150 px chips",
        "impostor_pairs": result["impostor_pairs"],
        # Rounded up: a threshold may only get stricter, so FAR stays at or below its target.
        "far_cosine": {f: math.ceil(float(rocs[f]) * 1e6) / 1e6 for f in (1e-2, 1e-3, 1e-4, 1e-5)},
    }
    path = REPO / "python" / "facecore" / "score.py"
    text = path.read_text()
    block = "CALIBRATION = " + json.dumps(table, indent=4).replace(
        '"far_cosine": {', '"far_cosine": {'
    )
    new = re.sub(
        r"CALIBRATION = \{.*?\n\}\n", block.replace("\\", "\\\\") + "\n", text, flags=re.DOTALL
    )
    # json writes float keys as strings; score.py converts them with float().
    path.write_text(new)
    (REPO / "docs").mkdir(exist_ok=True)
    (REPO / "docs" / "accuracy.json").write_text(json.dumps(result, indent=2) + "\n")


def rewrite_from_json() -> None:
    """Re-write score.py's table from docs/accuracy.json (no re-embedding)."""
    write_calibration(json.loads((REPO / "docs" / "accuracy.json").read_text()))


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--write", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--from-json", action="store_true", help="re-write score.py from docs/accuracy.json"
    )
    args = ap.parse_args()
    if args.from_json:
        rewrite_from_json()
        return 0
    import cv2

    cv2.setNumThreads(1)
    paths = lfw_images(LFW)
    t0 = time.perf_counter()
    emb, found = embed_central_faces(paths, threads=args.threads)
    print(f"embedded {len(paths)} images in {time.perf_counter() - t0:.0f} s")
    result = evaluate(emb, found, paths)
    summary = {k: v for k, v in result.items() if k not in ("missing", "roc")}
    print(json.dumps(summary, indent=2))
    for p in result["roc"]:  # type: ignore[attr-defined]
        print(f"FAR {p['far']:.0e}: cosine >= {p['threshold']:.4f}, TAR {p['tar']:.4f}")
    if args.write:
        write_calibration(result)
        print("wrote python/facecore/score.py CALIBRATION and docs/accuracy.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
