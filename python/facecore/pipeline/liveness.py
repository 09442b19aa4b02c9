"""Silent image liveness: the MiniFASNet pair (crop scales 2.7 and 4.0) scores each face in [0, 1].

A face's `livemapscore` is the mean over both models of the probability of the "real" class, which
is upstream's ensemble rule (sum of the softmaxes, class 1). Crops follow upstream's recipe: the face
box enlarged `scale` times about its centre (less if the image is too small for that), shifted to lie
inside the image, resized to 80x80, BGR, raw 0..255. The models are user-supplied
(facecore.convert.minifasnet); without them `Liveness.available(backend)` is False.
"""

from __future__ import annotations

import cv2
import numpy as np

from facecore.errors import LivenessMissing
from facecore.runtime.backend import Backend

ROLES = {"liveness_v2": 2.7, "liveness_v1se": 4.0}
SIZE = 80
REAL = 1
# Scores under which that share of genuine LFW captures falls (tools/calibrate_liveness.py,
# docs/liveness.md; written by its --write, do not edit by hand).
THRESHOLDS = {"frr_1e-4": 3e-05, "frr_1e-3": 0.00024, "frr_1e-2": 0.01568}


def crop_box(box: np.ndarray, scale: float, width: int, height: int) -> tuple[int, int, int, int]:
    """Integer (left, top, right, bottom), inclusive, of the enlarged box inside the image."""
    x1, y1, x2, y2 = (float(v) for v in box)
    w, h = max(x2 - x1, 1.0), max(y2 - y1, 1.0)
    scale = min(scale, (width - 1) / w, (height - 1) / h)
    cx, cy = (x1 + x2) / 2, (y1 + y2) / 2
    nw, nh = w * scale, h * scale
    left, top, right, bottom = cx - nw / 2, cy - nh / 2, cx + nw / 2, cy + nh / 2
    if left < 0:
        right, left = right - left, 0.0
    if top < 0:
        bottom, top = bottom - top, 0.0
    if right > width - 1:
        left, right = left - (right - width + 1), float(width - 1)
    if bottom > height - 1:
        top, bottom = top - (bottom - height + 1), float(height - 1)
    return int(max(left, 0)), int(max(top, 0)), int(right), int(bottom)


def crops(image_bgr: np.ndarray, boxes: np.ndarray, scale: float) -> np.ndarray:
    """(n, 3, 80, 80) float32 model inputs for `boxes` (n, 4) x1, y1, x2, y2."""
    h, w = image_bgr.shape[:2]
    out = np.empty((len(boxes), 3, SIZE, SIZE), np.float32)
    for i, box in enumerate(boxes):
        left, top, right, bottom = crop_box(box, scale, w, h)
        patch = image_bgr[top : bottom + 1, left : right + 1]
        out[i] = cv2.resize(patch, (SIZE, SIZE)).transpose(2, 0, 1)
    return out


class Liveness:
    def __init__(self, backend: Backend) -> None:
        if not self.available(backend):
            raise LivenessMissing()
        self.backend = backend

    @staticmethod
    def available(backend: Backend) -> bool:
        return all(backend.has(role) for role in ROLES)

    def predict(self, image_bgr: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        """Liveness score in [0, 1] per box: the mean probability of "real" over both models."""
        if len(boxes) == 0:
            return np.zeros(0, np.float32)
        total = np.zeros(len(boxes), np.float64)
        for role, scale in ROLES.items():
            (probs,) = self.backend.run(role, {"crops": crops(image_bgr, boxes, scale)})
            total += probs[:, REAL]
        return (total / len(ROLES)).astype(np.float32)
