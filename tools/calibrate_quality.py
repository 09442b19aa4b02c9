"""Fit the blur mapping of facecore.pipeline.quality on LFW faces blurred with known Gaussian sigmas.

    python tools/calibrate_quality.py [--every 10] [--write]

For every `every`-th LFW image, the aligned 150 px chip of the central face is blurred in chip
space with sigma 0 .. 6 px and its raw blur effect measured. The logistic mapping is fixed by two
medians, tied to the spec's thresholds (HIGH 0.2, LOW 0.8): sigma 1 px (slight softening, the
embedding unchanged) maps to 0.2, so HIGH passes it; sigma 4 px (no pores, eyelashes or hair
detail left, the embedding moving) maps to 0.8, so even LOW refuses anything blurrier. The table of medians per
sigma and the effect of blur on the embedding (cosine of blurred vs sharp chip) are printed and,
with --write, stored in docs/quality.json and the constants in python/facecore/pipeline/quality.py.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np
from facecore.evaluation import nearest_to_centre
from facecore.pipeline import quality
from facecore.pipeline.align import chip_transform, dlib_boxes_from_mtcnn, extract_chips
from facecore.pipeline.engine import CHIP_PADDING, CHIP_SIZE, Engine
from facecore.pipeline.image import decode_image

REPO = Path(__file__).resolve().parents[1]
LFW = REPO.parent / "shared" / "data" / "lfw" / "images"
SIGMAS = [0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0]
ANCHORS = {1.0: 0.2, 4.0: 0.8}  # chip-space Gaussian sigma -> blur value


def main() -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--write", action="store_true")
    args = ap.parse_args()
    cv2.setNumThreads(1)
    engine = Engine()
    chips = []
    for p in sorted(LFW.glob("*/*.jpg"))[:: args.every]:
        img = decode_image(p.read_bytes())
        det = engine.detector.detect(img)
        if len(det) == 0:
            continue
        k = nearest_to_centre(det.boxes, img.shape[1], img.shape[0])
        shape = engine.shape5.predict(img, dlib_boxes_from_mtcnn(det.boxes[k : k + 1]))[0]
        chips.append(
            extract_chips(img, chip_transform(shape, CHIP_SIZE, CHIP_PADDING)[None], CHIP_SIZE)[0]
        )
    sharp = np.stack(chips)
    base_emb = engine.recognizer.embed(sharp)
    rows = []
    logs = {}
    for s in SIGMAS:
        blurred = sharp if s == 0 else np.stack([cv2.GaussianBlur(c, (0, 0), s) for c in sharp])
        ls = quality.blur_effect(blurred)
        cos = np.einsum("ij,ij->i", engine.recognizer.embed(blurred), base_emb)
        logs[s] = ls
        rows.append(
            {
                "sigma": s,
                "median_raw": float(np.median(ls)),
                "p10": float(np.percentile(ls, 10)),
                "p90": float(np.percentile(ls, 90)),
                "median_cosine_to_sharp": float(np.median(cos)),
            }
        )
    (s1, b1), (s2, b2) = sorted(ANCHORS.items())
    r1, r2 = float(np.median(logs[s1])), float(np.median(logs[s2]))
    # logit(b) = k (raw - mid) at both anchors
    slope = float((np.log(b2 / (1 - b2)) - np.log(b1 / (1 - b1))) / (r2 - r1))
    mid = float(r1 - np.log(b1 / (1 - b1)) / slope)
    result = {"faces": len(sharp), "mid": mid, "slope": slope, "table": rows}
    quality.BLUR_RAW_MID, quality.BLUR_SLOPE = mid, slope
    for r, s in zip(rows, SIGMAS):
        blurred = sharp if s == 0 else np.stack([cv2.GaussianBlur(c, (0, 0), s) for c in sharp])
        r["median_blur"] = float(np.median(quality.blur(blurred)))
        print(
            f"sigma {s:3.1f}: raw {r['median_raw']:.3f} "
            f"(p10 {r['p10']:.3f}, p90 {r['p90']:.3f}), blur {r['median_blur']:.3f}, "
            f"cosine to sharp {r['median_cosine_to_sharp']:.3f}"
        )
    print(f"{len(sharp)} faces; mid {mid:.4f}, slope {slope:.4f}")
    if args.write:
        path = REPO / "python" / "facecore" / "quality.py"
        text = path.read_text()
        text = re.sub(r"BLUR_RAW_MID = .*", f"BLUR_RAW_MID = {mid:.4f}", text)
        text = re.sub(r"BLUR_SLOPE = .*", f"BLUR_SLOPE = {slope:.4f}", text)
        path.write_text(text)
        (REPO / "docs" / "quality.json").write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
