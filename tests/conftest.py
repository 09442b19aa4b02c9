"""Shared fixtures: face-like vectors (clustered unit vectors) and paths to ../shared/data."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"
MODELS_DIR = REPO / "models" / "onnx"  # built by `make models` before the tests run
MODEL_SOURCES = REPO / "models" / "src"  # the pinned source archives, unpacked (parity tests)
# The installed package does not know where the checkout is: point it at this one's models.
os.environ.setdefault("FACECORE_MODELS", str(MODELS_DIR))


def face_like(
    n_identities: int, per_identity: int, dim: int, seed: int, noise: float = 0.6
) -> np.ndarray:
    """Unit vectors around random identity centres: like face embeddings of several people,
    where two samples of one person have cosine ~0.7 and different people ~0."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_identities, dim)).astype(np.float32)
    centres /= np.linalg.norm(centres, axis=1, keepdims=True)
    x = np.repeat(centres, per_identity, axis=0)
    x += rng.standard_normal(x.shape).astype(np.float32) * np.float32(noise / np.sqrt(dim))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)
