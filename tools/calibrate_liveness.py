"""Calibrate the liveness thresholds on genuine captures: every LFW image (real photographs of real
people) is a live face, so the share of them scored below a threshold is its false-reject rate.

    python tools/calibrate_liveness.py --models DIR [--write]

DIR is a models directory with the MiniFASNet pair installed (make models LIVENESS_MODEL_DIR=...).
For each LFW image the face nearest the centre is scored. The threshold for FRR f is the largest t
with at most floor(f * n) scores below t, i.e. the (floor(f * n) + 1)-th lowest score. With n = 3,074,
FRR 1e-4 is not resolvable (fewer than one image in 10,000): its threshold is the lowest score seen,
which bounds FRR only by 1/n, and the documentation says so. Also scores ../shared/data/spoof for the
attack side (7 images: too few for a rate). --write stores docs/liveness.json and the thresholds in
python/facecore/pipeline/liveness.py.
"""

from __future__ import annotations

import argparse
import csv
import json
import re
import time
from pathlib import Path

import numpy as np
from facecore.evaluation import nearest_to_centre
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image
from facecore.pipeline.liveness import Liveness

REPO = Path(__file__).resolve().parents[1]
DATA = REPO.parent / "shared" / "data"
FRRS = {"frr_1e-4": 1e-4, "frr_1e-3": 1e-3, "frr_1e-2": 1e-2}


def score_image(engine: Engine, live: Liveness, path: Path) -> float | None:
    image = decode_image(path.read_bytes())
    faces = engine.detect(image, 10)
    if not faces:
        return None
    boxes = np.stack([f.box for f in faces])
    i = nearest_to_centre(boxes, image.shape[1], image.shape[0])
    return float(live.predict(image, boxes[i : i + 1])[0])


def thresholds(scores: np.ndarray) -> dict[str, float]:
    s = np.sort(scores)
    return {name: float(s[int(np.floor(f * len(s)))]) for name, f in FRRS.items()}


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--models", type=Path, required=True)
    ap.add_argument("--write", action="store_true")
    a = ap.parse_args()
    engine = Engine(models_dir=a.models)
    live = Liveness(engine.backend)
    t0 = time.perf_counter()
    paths = sorted((DATA / "lfw" / "images").glob("*/*.jpg"))
    scored = [(p, score_image(engine, live, p)) for p in paths]
    genuine = np.array([s for _, s in scored if s is not None])
    th = thresholds(genuine)
    spoof = []
    with open(DATA / "spoof" / "labels.csv") as f:
        for row in csv.DictReader(f):
            s = score_image(engine, live, DATA / "spoof" / row["file"])
            spoof.append(
                {
                    "file": row["file"],
                    "label": row["label"],
                    "attack": row["attack"],
                    "score": None if s is None else round(s, 4),
                }
            )
    report = {
        "genuine": {
            "images": len(paths),
            "scored": len(genuine),
            "percentiles": {
                str(q): round(float(np.percentile(genuine, q)), 5) for q in (0.1, 1, 5, 10, 25, 50)
            },
            "below": {str(t): int((genuine < t).sum()) for t in (0.05, 0.3, 0.5, 0.9)},
        },
        "thresholds": {k: round(v, 5) for k, v in th.items()},
        "frr_at_threshold": {k: round(float((genuine < v).mean()), 5) for k, v in th.items()},
        "spoof_samples": spoof,
        "seconds": round(time.perf_counter() - t0, 1),
    }
    print(json.dumps(report, indent=2))
    if a.write:
        (REPO / "docs" / "liveness.json").write_text(json.dumps(report, indent=2) + "\n")
        src = REPO / "python" / "facecore" / "liveness.py"
        text = src.read_text()
        new = "THRESHOLDS = " + json.dumps(report["thresholds"]) + "\n"
        text = re.sub(r"^THRESHOLDS = .*\n", new, text, count=1, flags=re.MULTILINE)
        src.write_text(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
