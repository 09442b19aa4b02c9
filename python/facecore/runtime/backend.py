"""Inference backends: one object runs every model of the pipeline on batches.

A backend knows models by role ("recognizer", "mtcnn_pnet", ...) from `models/onnx/manifest.json`
and runs a batch through one of them: `run(role, {input_name: array})` -> list of outputs. Callers
batch many faces (and, in the server, many requests) into one call. ONNX Runtime is the CPU backend;
TensorRT plugs in behind the same interface. Thread-safe: ONNX Runtime's `InferenceSession.run` may
be called from several threads at once.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from facecore.errors import ModelsMissing

# In a source checkout (python/facecore/ imported in place) the repository's models/onnx.
_SOURCE_TREE_MODELS = Path(__file__).resolve().parents[3] / "models" / "onnx"


def default_models_dir() -> Path:
    """Where models are read from: `FACECORE_MODELS` if set, else `./models/onnx` when the current
    directory has one (`make serve` runs from the repository root), else the source tree's."""
    env = os.environ.get("FACECORE_MODELS")
    if env:
        return Path(env)
    cwd = Path.cwd() / "models" / "onnx"
    if (cwd / "manifest.json").exists():
        return cwd
    return _SOURCE_TREE_MODELS


class Backend(Protocol):
    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def has(self, role: str) -> bool: ...

    def path(self, role: str) -> Path:
        """File of a model that is not run through the backend (the npz shape predictor)."""
        ...


def load_manifest(models_dir: Path) -> dict[str, Any]:
    path = models_dir / "manifest.json"
    if not path.exists():
        raise ModelsMissing(
            f"{path} not found: build the models with `make models`, "
            "or set FACECORE_MODELS to the directory that holds them"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    return manifest


def model_path(models_dir: Path, manifest: dict[str, Any], role: str) -> Path:
    """The file of model `role` listed in the manifest; ModelsMissing if it is not there."""
    try:
        entry = manifest["models"][role]
    except KeyError:
        raise ModelsMissing(f"no model for role {role!r} in {models_dir}/manifest.json") from None
    path = models_dir / str(entry["file"])
    if not path.exists():
        raise ModelsMissing(f"{path} listed in the manifest is missing: run `make models`")
    return path


class OnnxRuntimeBackend:
    """ONNX Runtime on the CPU. `threads` = intra-op threads per call (0: ONNX Runtime's default).

    Sessions are created lazily on first use, one per role, and shared by all threads.
    """

    def __init__(self, models_dir: Path | None = None, threads: int = 1) -> None:
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        self.manifest = load_manifest(self.models_dir)
        self.threads = threads
        self._sessions: dict[str, Any] = {}
        self._lock = threading.Lock()

    def has(self, role: str) -> bool:
        return role in self.manifest["models"]

    def path(self, role: str) -> Path:
        return model_path(self.models_dir, self.manifest, role)

    def session(self, role: str) -> Any:
        sess = self._sessions.get(role)
        if sess is not None:
            return sess
        with self._lock:
            sess = self._sessions.get(role)
            if sess is None:
                import onnxruntime as ort

                opts = ort.SessionOptions()
                opts.intra_op_num_threads = self.threads
                opts.inter_op_num_threads = 1
                opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
                # Idle workers must not spin: the server runs several sessions and request threads
                # on few cores, and a spinning pool steals them (2 threads measured 4x slower).
                opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
                sess = ort.InferenceSession(
                    str(self.path(role)), opts, providers=["CPUExecutionProvider"]
                )
                self._sessions[role] = sess
        return sess

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out: list[np.ndarray] = self.session(role).run(None, feeds)
        return out
