"""Fit the two alignment constants of facecore.pipeline.align on LFW and compare the alignments.

    python tools/fit_alignment.py [--every 2]

1. MTCNN_TO_DLIB_BOX: dlib's 5-point predictor was trained on dlib HOG boxes. On images where HOG
   (upsample 1) finds exactly one face, the median offset and size of the HOG box relative to the
   MTCNN box of that face.
2. MTCNN_TEMPLATE5: where MTCNN's 5 points land, on average, in the chip dlib's geometry cuts
   from the predictor's landmarks (unit-square frame of dlib's template, padding 0).
Both are geometric fits on every `every`-th image, with no identity labels. Then LFW pairs.txt
accuracy (best threshold and 4-fold cross-validated) of each alignment the engine offers, with the
constants as they are in facecore.pipeline.align: "dlib5" on raw and on mapped boxes, "mtcnn", "dual".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from facecore.evaluation import (
    best_threshold_accuracy,
    cross_validated_accuracy,
    lfw_images,
    nearest_to_centre,
    pair_similarities,
)
from facecore.pipeline.align import (
    CHIP_PADDING,
    CHIP_SIZE,
    chip_transform,
    chip_transform_from_mtcnn,
    dlib_boxes_from_mtcnn,
    extract_chips,
)
from facecore.pipeline.engine import Engine
from facecore.pipeline.image import decode_image

LFW = Path(__file__).resolve().parents[2] / "shared" / "data" / "lfw"


def fit(engine: Engine, paths: list[Path]) -> None:
    import dlib

    assert engine.shape5 is not None
    hog = dlib.get_frontal_face_detector()
    rel, template = [], []
    for p in paths:
        img = decode_image(p.read_bytes())
        found = hog(np.ascontiguousarray(img[:, :, ::-1]), 1)
        det = engine.detector.detect(img)
        if len(found) != 1 or len(det) == 0:
            continue
        r = found[0]
        hb = np.array([r.left(), r.top(), r.right() + 1, r.bottom() + 1], np.float64)
        k = nearest_to_centre(det.boxes, img.shape[1], img.shape[0])
        mb = det.boxes[k].astype(np.float64)
        side = np.sqrt((mb[2] - mb[0]) * (mb[3] - mb[1]))
        rel.append(
            [
                (hb[[0, 2]].mean() - mb[[0, 2]].mean()) / side,
                (hb[[1, 3]].mean() - mb[[1, 3]].mean()) / side,
                (hb[2] - hb[0]) / side,
            ]
        )
        shape = engine.shape5.predict(img, hb[None].astype(np.float32))[0]
        t = chip_transform(shape, CHIP_SIZE, 0.0)  # image -> chip, padding 0: the unit square
        pts = np.c_[det.points[k], np.ones(5)] @ t.T / CHIP_SIZE
        template.append(pts)
    dx, dy, s = np.median(np.array(rel), axis=0)
    print(f"{len(rel)} faces: MTCNN_TO_DLIB_BOX = dx {dx:.4f}, dy {dy:.4f}, s {s:.4f}")
    print("MTCNN_TEMPLATE5 =", np.round(np.mean(template, axis=0), 4).tolist())


def compare(engine: Engine, paths: list[Path]) -> None:
    assert engine.shape5 is not None
    names = ("dlib5 raw box", "dlib5 mapped box", "mtcnn", "dual")
    emb = {n: np.zeros((len(paths), 128), np.float32) for n in names}
    found = np.zeros(len(paths), bool)
    for i, p in enumerate(paths):
        img = decode_image(p.read_bytes())
        det = engine.detector.detect(img)
        if len(det) == 0:
            continue
        k = nearest_to_centre(det.boxes, img.shape[1], img.shape[0])
        box, pts = det.boxes[k : k + 1], det.points[k]
        raw = engine.shape5.predict(img, box)[0]
        mapped = engine.shape5.predict(img, dlib_boxes_from_mtcnn(box))[0]
        tf = np.stack(
            [
                chip_transform(raw, CHIP_SIZE, CHIP_PADDING),
                chip_transform(mapped, CHIP_SIZE, CHIP_PADDING),
                chip_transform_from_mtcnn(pts, CHIP_SIZE, CHIP_PADDING),
            ]
        )
        e = engine.recognizer.embed(extract_chips(img, tf, CHIP_SIZE))
        both = e[1] + e[2]
        for n, v in zip(names, (e[0], e[1], e[2], both / np.linalg.norm(both))):
            emb[n][i] = v
        found[i] = True
    for n in names:
        sims, same = pair_similarities(emb[n], found, paths, LFW)
        acc, _ = best_threshold_accuracy(sims, same)
        cv = cross_validated_accuracy(sims, same, np.arange(len(sims)) // 600)
        print(f"{n:18s} accuracy {acc:.4f}, 4-fold cv {cv:.4f}")


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--every", type=int, default=2)
    ap.add_argument("--skip-fit", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    engine = Engine(alignment="dlib5")
    paths = lfw_images(LFW)
    if not args.skip_fit:
        fit(engine, paths[:: args.every])
    compare(engine, paths)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
