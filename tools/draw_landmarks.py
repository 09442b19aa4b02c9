"""Draw the 72 Baidu-layout landmarks with their indices on a face (the picture in docs/).

    python tools/draw_landmarks.py IMAGE OUT.png [--scale 4] [--mesh]

Runs MTCNN and the face mesh through the ONNX models in models/onnx, takes the largest face,
upscales the face region so the numbers are readable, and writes a PNG. --mesh draws all 468
mesh indices instead (used to choose the 72-point table).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import cv2
import numpy as np
from facecore.pipeline.detect import MtcnnDetector
from facecore.pipeline.landmarks import FaceMesh, landmark4, landmarks72
from facecore.runtime.backend import OnnxRuntimeBackend

# Colour per group (BGR): contour, eyes, brows, nose, mouth.
_GROUPS = [
    (0, 13, (255, 200, 0)),
    (13, 22, (0, 255, 0)),
    (22, 30, (0, 200, 255)),
    (30, 39, (0, 255, 0)),
    (39, 47, (0, 200, 255)),
    (47, 58, (255, 0, 255)),
    (58, 72, (0, 0, 255)),
]


def draw(
    image: np.ndarray, points: np.ndarray, scale: float, extra: np.ndarray | None
) -> np.ndarray:
    x0, y0 = np.floor(points.min(axis=0) - 12).astype(int).clip(0)
    x1, y1 = np.ceil(points.max(axis=0) + 12).astype(int)
    crop = image[y0:y1, x0:x1]
    big = cv2.resize(crop, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for i, (x, y) in enumerate(points):
        group = next((a, b, c) for a, b, c in _GROUPS if a <= i < b) if len(points) == 72 else None
        colour = group[2] if group else (0, 255, 0)
        u, v = int((x - x0) * scale), int((y - y0) * scale)
        cv2.circle(big, (u, v), 3, colour, -1, cv2.LINE_AA)
        # Labels of points in the lower half of their group go below them, so the crowded eye
        # outlines stay readable.
        below = group is not None and y > points[group[0] : group[1], 1].mean() + 0.5
        org = (u + 3, v + 16) if below else (u + 3, v - 5)
        cv2.putText(big, str(i), org, font, 0.45, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(big, str(i), org, font, 0.45, (255, 255, 255), 1, cv2.LINE_AA)
    if extra is not None:  # the mouth centre of landmark4 (its other points are 21, 38, 57)
        u, v = int((extra[3, 0] - x0) * scale), int((extra[3, 1] - y0) * scale)
        cv2.drawMarker(big, (u, v), (255, 255, 255), cv2.MARKER_CROSS, 12, 1, cv2.LINE_AA)
    return big


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("image", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--scale", type=float, default=4.0)
    ap.add_argument("--mesh", action="store_true")
    args = ap.parse_args(argv)
    image = cv2.imread(str(args.image))
    if image is None:
        raise SystemExit(f"cannot read {args.image}")
    backend = OnnxRuntimeBackend()
    det = MtcnnDetector(backend).detect(image)
    if len(det) == 0:
        raise SystemExit("no face found")
    mesh = FaceMesh(backend).predict(image, det.boxes[:1], det.points[:1])
    if args.mesh:
        out = draw(image, mesh.points[0, :, :2], args.scale, None)
    else:
        out = draw(image, landmarks72(mesh)[0], args.scale, landmark4(mesh)[0])
    cv2.imwrite(str(args.out), out, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
