"""Face quality: blur [0,1], illumination [0,255], completeness 0/1, computed without a model.

All three are measured on what the recogniser sees, the aligned 150x150 chip, so a value means the
same thing for a face of 60 px and one of 600 px:
- blur: the no-reference "blur effect" of Crete et al. (2007): blur the face again with a 9-tap
  box filter and measure how much of its neighbour-pixel variation survives; a sharp face loses a
  lot, a blurred one almost nothing. Being a ratio, it ignores contrast and brightness. The raw
  value is mapped to [0,1] (1 = completely blurred) by a logistic curve fitted on LFW faces
  blurred with known Gaussian sigmas (tools/calibrate_quality.py, docs/accuracy.md).
- illumination: mean luma (BT.601) of the inner face region (the spec: larger is better lit).
- completeness: 1 when the face box lies inside the image, 0 when it runs over an edge.
"""

from __future__ import annotations

import cv2
import numpy as np

# Fitted by tools/calibrate_quality.py on LFW chips; see docs/accuracy.md.
BLUR_RAW_MID = 0.7073
BLUR_SLOPE = 15.9117

# Inner face region of a 150 px dlib chip (padding 0.25): eyes to mouth, cheek to cheek.
_INNER = (slice(30, 125), slice(30, 120))


def blur_effect(chips_rgb: np.ndarray) -> np.ndarray:
    """Crete's blur effect in [0,1] per chip (larger is blurrier). (N,150,150,3) uint8 -> (N,)."""
    box = np.full(9, 1 / 9, dtype=np.float32)
    out = np.empty(len(chips_rgb), dtype=np.float64)
    for i, chip in enumerate(chips_rgb):
        grey = cv2.cvtColor(chip, cv2.COLOR_RGB2GRAY).astype(np.float32)[_INNER]
        worst = 0.0
        for axis, kernel in ((0, box.reshape(9, 1)), (1, box.reshape(1, 9))):
            reblurred = cv2.filter2D(grey, -1, kernel, borderType=cv2.BORDER_REFLECT)
            d_img = np.abs(np.diff(grey, axis=axis))
            d_blr = np.abs(np.diff(reblurred, axis=axis))
            lost = np.maximum(0.0, d_img - d_blr).sum()
            worst = max(worst, 1.0 - float(lost) / max(float(d_img.sum()), 1e-6))
        out[i] = worst
    return out


def blur(chips_rgb: np.ndarray) -> np.ndarray:
    """Blur degree in [0,1] per chip, 0 sharp, 1 completely blurred."""
    raw = blur_effect(chips_rgb)
    return 1.0 / (1.0 + np.exp(-BLUR_SLOPE * (raw - BLUR_RAW_MID)))


def illumination(chips_rgb: np.ndarray) -> np.ndarray:
    """Mean luma 0..255 of the inner face region per chip."""
    inner = chips_rgb[:, _INNER[0], _INNER[1], :].astype(np.float32)
    luma = inner @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return np.asarray(luma.reshape(len(chips_rgb), -1).mean(axis=1), dtype=np.float64)


def completeness(boxes: np.ndarray, width: int, height: int) -> np.ndarray:
    """1 where the (x1,y1,x2,y2) box lies inside a width x height image, else 0."""
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    inside = (b[:, 0] >= 0) & (b[:, 1] >= 0) & (b[:, 2] <= width) & (b[:, 3] <= height)
    return inside.astype(np.int64)
