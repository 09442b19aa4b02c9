"""Shared fixtures: face-like vectors (clustered unit vectors) and paths to ../shared/data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from tests.pg_cluster import Cluster

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


@pytest.fixture(scope="session")
def cpu_engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Every model's cpu fp32 TorchScript engine, built once a session by the engine cache into a
    fresh directory (test_engines.py and test_gpu.py both use them). Skips where torch or
    onnx2torch is missing."""
    from facecore.errors import EngineError
    from facecore.runtime import engines

    try:
        keys = engines.manifest_keys(MODELS_DIR, "cpu")
    except EngineError as e:
        pytest.skip(f"no engine converter here: {e}")
    root = tmp_path_factory.mktemp("engines")
    for key, onnx_path in keys.values():
        engines.build(key, onnx_path, root)
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(12345)


LIVENESS_SOURCE = SHARED_DATA / "models" / "minifasnet"  # the user-supplied MiniFASNet files


@pytest.fixture(scope="session")
def liveness_models(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A models directory: the default models (linked) plus the liveness pair installed from
    ../shared/data/models/minifasnet by facecore.convert.minifasnet, as `make models
    LIVENESS_MODEL_DIR=...` would."""
    import json

    from facecore.convert import minifasnet

    out = tmp_path_factory.mktemp("models-liveness")
    for f in MODELS_DIR.iterdir():
        if f.name != "manifest.json" and f.is_file():
            (out / f.name).symlink_to(f)
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text())
    manifest["models"].update(minifasnet.build(LIVENESS_SOURCE, out))
    (out / "manifest.json").write_text(json.dumps(manifest))
    return out


@pytest.fixture(scope="session")
def postgres() -> Iterator[Cluster]:
    """One throwaway PostgreSQL cluster for the session (tests/pg_cluster.py); each test makes
    its own database with `postgres.database()`. Skips, saying why, where none can be started."""
    why = Cluster.find()
    if why is not None:
        pytest.skip(why)
    cluster = Cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
