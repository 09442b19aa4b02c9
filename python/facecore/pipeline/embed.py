"""Face embeddings: 150x150 RGB chips (facecore.pipeline.align.extract_chips) -> 128-d descriptors.

The model is dlib's ResNet recogniser converted to ONNX (facecore.convert.dlib_dnn), run through a
Backend so ONNX Runtime or TensorRT can serve it; all chips of a call go through in one batch.
"""

from __future__ import annotations

import numpy as np

from facecore.errors import InvalidArgument, InvalidType
from facecore.runtime.backend import Backend

ROLE = "recognizer"
INPUT = "image"
CHIP = 150
DIM = 128


class Recognizer:
    """dlib's face descriptor. `embed` gives unit vectors (compare with cosine / inner product);
    `raw` gives dlib's own descriptors (dlib compares these by euclidean distance, 0.6 threshold)."""

    def __init__(self, backend: Backend) -> None:
        self.backend = backend

    def raw(self, chips_rgb: np.ndarray) -> np.ndarray:
        """(N, 128) float32 unnormalised descriptors of (N, 150, 150, 3) uint8 RGB chips."""
        if not isinstance(chips_rgb, np.ndarray) or chips_rgb.dtype != np.uint8:
            raise InvalidType("chips_rgb must be a uint8 numpy array")
        if chips_rgb.ndim != 4 or chips_rgb.shape[1:] != (CHIP, CHIP, 3):
            raise InvalidArgument(
                f"chips_rgb must be (N, {CHIP}, {CHIP}, 3), got {chips_rgb.shape}"
            )
        if len(chips_rgb) == 0:
            return np.zeros((0, DIM), np.float32)
        x = np.ascontiguousarray(chips_rgb.transpose(0, 3, 1, 2), dtype=np.float32)
        out = self.backend.run(ROLE, {INPUT: x})[0]
        return np.asarray(out, np.float32).reshape(len(chips_rgb), DIM)

    def embed(self, chips_rgb: np.ndarray) -> np.ndarray:
        """(N, 128) float32 unit-norm embeddings of (N, 150, 150, 3) uint8 RGB chips."""
        v = self.raw(chips_rgb)
        norm = np.linalg.norm(v, axis=1, keepdims=True)
        unit: np.ndarray = (v / np.maximum(norm, np.float32(1e-12))).astype(np.float32)
        return unit
