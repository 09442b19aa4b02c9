"""The GPU backend: FaceCore's models run by the C++ engine (`facecore._trt_engine`).

`EngineBackend` implements the `Backend` protocol (`run(role, feeds)`, `has`, `path`) over one
`_trt_engine.Model` per model: an engine pool of `contexts` execution contexts on each device (own
CUDA stream each) and a C++ dynamic batcher that merges concurrent callers' requests for a model up
to `max_batch` items, waiting at most `max_wait_ms` (and only when `peers()` says other requests are
in flight). The GIL is released while a request waits and runs. Every batch bucket is warmed at
start, so no request pays for a first call.

Backends by name (`open_backend`, `facecore.Engine(backend=...)`, `facecore-server --backend`):
  onnxruntime  ONNX Runtime on the CPU (the reference path)
  cuda         the LibTorch runner on the CUDA devices (TorchScript engines; fp16 on sm_70+)
  tensorrt     the TensorRT runner on the CUDA devices (where the build found TensorRT)
  torch        the LibTorch runner on the CPU: the same engine code with no GPU, for parity tests
  auto         cuda when this build has a CUDA runner and a device is there, else onnxruntime

Engine files come from the engine cache (`facecore.runtime.engines`, `tools/build_engines.py`) through
`engine_file`: only an engine built for this model file, device, runtime and precision is loaded.
The extension is optional: without it (or without torch / a GPU) `available()` says why and asking
for a GPU backend raises `ModelsMissing` with that reason.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from facecore.errors import EngineError, InternalError, InvalidArgument, ModelsMissing
from facecore.runtime import engines
from facecore.runtime.backend import (
    Backend,
    OnnxRuntimeBackend,
    default_models_dir,
    load_manifest,
    model_path,
)

log = logging.getLogger("facecore")

BACKENDS = ("onnxruntime", "cuda", "tensorrt", "torch", "auto")
_RUNNER = {"cuda": "libtorch", "torch": "libtorch", "tensorrt": "tensorrt"}


def _extension() -> Any:
    """The extension module, or None when this build has none (FACECORE_GPU=OFF)."""
    try:
        from facecore import _trt_engine
    except ImportError:
        return None
    return _trt_engine


def available() -> dict[str, Any]:
    """What this installation can run: {"built", "runners", "cuda_devices", "gpu", "reason"}.
    `gpu` is true when a CUDA runner and at least one CUDA device are there."""
    ext = _extension()
    if ext is None:
        return {
            "built": False,
            "runners": [],
            "cuda_devices": [],
            "gpu": False,
            "reason": "facecore._trt_engine is not in this build (FACECORE_GPU=OFF)",
        }
    runners: list[str] = ext.runners()
    devices: list[str] = ext.cuda_devices()
    cuda_runner = "tensorrt" in runners or ("libtorch" in runners and devices)
    if not devices:
        reason = (
            "no CUDA device is visible"
            if cuda_runner or "libtorch" in runners
            else "this build has no CUDA runner (needs a CUDA build of torch, or CUDA + TensorRT)"
        )
    else:
        reason = ""
    return {
        "built": True,
        "runners": runners,
        "cuda_devices": devices,
        "gpu": bool(devices) and bool(cuda_runner),
        "reason": reason,
    }


def engine_file(
    role: str,
    entry: dict[str, Any],
    models_dir: Path,
    engines_dir: Path,
    runner: str,
    device: str,
    precision: str,
) -> tuple[Path, str]:
    """(the file the runner loads for one model, the precision it runs at), from the engine cache
    (facecore.runtime.engines): the engine built for exactly this model file, this device's name
    and capability, this runtime's version and `precision` ("auto": the device's default). A stale
    or foreign engine is never loaded. TensorRT without a cached plan loads the ONNX file itself
    (the runner builds the plan in memory at start)."""
    wanted = None if precision == "auto" else precision
    runtime = "tensorrt" if runner == "tensorrt" else "torchscript"
    onnx = models_dir / str(entry["file"])
    try:  # `device` ("cpu", "cuda:N") is torch's own device string
        key = engines.engine_key(role, str(entry["sha256"]), device, wanted, runtime=runtime)
    except EngineError as e:
        if runner == "tensorrt":  # no Python tensorrt to key a cached plan: built from the ONNX
            return onnx, precision
        raise ModelsMissing(f"{role}: {e}") from None
    path = engines.lookup(key, engines_dir)
    if path is not None:
        return path, key.precision
    if runner == "tensorrt":
        return onnx, key.precision
    raise ModelsMissing(
        f"no engine of model {role!r} for {key.device} {key.precision} "
        f"({key.file_name()}) in {engines_dir}: build it with `tools/build_engines.py "
        f"--device {device}`, or set FACECORE_ENGINES to where the engines are"
    )


def _shape(dims: Sequence[Any]) -> list[int]:
    """A manifest shape with -1 for every named (variable) dimension."""
    return [d if isinstance(d, int) else -1 for d in dims]


class EngineBackend:
    """Runs every ONNX model of the manifest through `facecore._trt_engine`. Thread-safe.

    runner: "libtorch" or "tensorrt"; devices: "cpu" or "cuda:N" (several: one pool over all);
    contexts: execution contexts (streams) per device and model; max_batch: items per run;
    max_wait_ms: how long a batch waits for company when other requests are in flight (`peers()`
    counts them; None: always wait); precision: "auto" (fp16 where the GPU has it), "fp32", "fp16";
    cuda_graphs: one graph per batch bucket for models with fixed shapes.
    """

    def __init__(
        self,
        models_dir: Path | None = None,
        runner: str = "libtorch",
        devices: Sequence[str] = ("cuda:0",),
        contexts: int = 2,
        max_batch: int = 32,
        max_wait_ms: float = 2.0,
        precision: str = "auto",
        cuda_graphs: bool = True,
        engines_dir: Path | None = None,
        peers: Callable[[], int] | None = None,
        warm: bool = True,
        name: str | None = None,
    ) -> None:
        ext = _extension()
        if ext is None:
            raise ModelsMissing(available()["reason"])
        if runner not in ext.runners():
            raise ModelsMissing(
                f"runner {runner!r} is not in this build (it has {', '.join(ext.runners())})"
            )
        if contexts < 1 or max_batch < 1 or max_wait_ms < 0:
            raise InvalidArgument("contexts and max_batch must be >= 1, max_wait_ms >= 0")
        self.models_dir = Path(models_dir) if models_dir is not None else default_models_dir()
        self.manifest = load_manifest(self.models_dir)
        self.engines_dir = engines_dir or engines.default_engines_dir(self.models_dir)
        self.runner = runner
        self.devices = list(devices)
        self.device_names = _device_names(self.devices)  # once: /health asks on the event loop
        self.name = name or runner
        self.peers = peers
        self._models: dict[str, Any] = {}
        self.precision = precision  # the engines' own once they are found
        self._inputs: dict[str, list[str]] = {}
        try:
            for role, entry in sorted(self.manifest["models"].items()):
                if not str(entry["file"]).endswith(".onnx"):
                    continue  # the npz shape predictor runs in numpy (Backend.path)
                inputs = [(str(i["name"]), _shape(i["shape"])) for i in entry["inputs"]]
                self._inputs[role] = [n for n, _ in inputs]
                path, self.precision = engine_file(
                    role,
                    entry,
                    self.models_dir,
                    self.engines_dir,
                    runner,
                    self.devices[0],
                    precision,
                )
                # A TorchScript engine holds its precision (fp16 inside, float32 at its edges): the
                # runner runs it as it is. TensorRT builds its plan at that precision.
                run_as = self.precision if runner == "tensorrt" else "fp32"
                self._models[role] = ext.Model(
                    role,
                    str(path),
                    inputs,
                    [str(o["name"]) for o in entry["outputs"]],
                    runner,
                    self.devices,
                    contexts,
                    max_batch,
                    round(max_wait_ms * 1000),
                    run_as,
                    cuda_graphs,
                )
            if warm:
                for model in self._models.values():
                    model.warm()
        except RuntimeError as e:  # a file that does not load, out of memory at start
            self.close()
            raise ModelsMissing(str(e)) from e
        except ValueError as e:
            self.close()
            raise InvalidArgument(str(e)) from e

    def has(self, role: str) -> bool:
        return role in self.manifest["models"]

    def path(self, role: str) -> Path:
        return model_path(self.models_dir, self.manifest, role)

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        model = self._models.get(role)
        if model is None:
            raise ModelsMissing(f"no engine for model {role!r}")
        try:
            arrays = [np.ascontiguousarray(feeds[name], np.float32) for name in self._inputs[role]]
        except KeyError as e:
            raise InvalidArgument(f"model {role!r} needs input {e.args[0]!r}") from None
        may_wait = self.peers is None or self.peers() > 1
        try:
            out: list[np.ndarray] = model.run(arrays, may_wait)
        except RuntimeError as e:  # the device failed this run: the callers of this run see it
            raise InternalError(f"model {role!r} failed on the GPU engine: {e}") from e
        except ValueError as e:
            raise InvalidArgument(str(e)) from e
        return out

    def describe(self) -> dict[str, Any]:
        """What runs: for /health and /capabilities."""
        any_model = next(iter(self._models.values()), None)
        return {
            "backend": self.name,
            "runner": self.runner,
            "devices": self.devices,
            "device_names": self.device_names,
            "precision": self.precision if any_model is not None else None,
            "devices_up": any_model.devices_up if any_model is not None else [],
        }

    def stats(self) -> dict[str, dict[str, int]]:
        """Per model: requests, items, runs, merged runs, failed runs, busy contexts."""
        return {role: m.stats() for role, m in self._models.items()}

    def close(self) -> None:
        for model in self._models.values():
            model.close()


def _device_names(devices: Sequence[str]) -> list[str]:
    ext = _extension()
    names: list[str] = ext.cuda_devices() if ext is not None else []
    out = []
    for d in devices:
        index = int(d.partition(":")[2] or 0) if d.startswith("cuda") else -1
        out.append(names[index] if 0 <= index < len(names) else "cpu")
    return out


def parse_gpus(gpus: str) -> list[str]:
    """ "0,1" -> ["cuda:0", "cuda:1"]; "" -> every CUDA device this build sees."""
    if not gpus.strip():
        return [f"cuda:{i}" for i in range(len(available()["cuda_devices"]))]
    try:
        return [f"cuda:{int(g)}" for g in gpus.split(",") if g.strip()]
    except ValueError:
        raise InvalidArgument(f"gpus must be device numbers like 0,1, got {gpus!r}") from None


def open_backend(
    name: str,
    models_dir: Path | None = None,
    threads: int = 1,
    gpus: str = "",
    peers: Callable[[], int] | None = None,
    **options: Any,
) -> OnnxRuntimeBackend | EngineBackend:
    """The backend called `name` (BACKENDS). `threads`: ONNX Runtime's intra-op threads; `gpus`:
    "0,1" or "" for all; `options` go to EngineBackend (contexts, max_batch, precision, ...)."""
    if name not in BACKENDS:
        raise InvalidArgument(f"backend must be one of {', '.join(BACKENDS)}, got {name!r}")
    if name == "auto":
        if available()["gpu"]:
            try:
                return open_backend("cuda", models_dir, threads, gpus, peers, **options)
            except ModelsMissing as e:  # no engines built yet: the CPU still serves
                log.warning("backend auto: the GPU engine cannot start (%s); using onnxruntime", e)
        name = "onnxruntime"
    if name == "onnxruntime":
        return OnnxRuntimeBackend(models_dir, threads=threads)
    devices = ["cpu"] if name == "torch" else parse_gpus(gpus)
    if name == "torch":  # the CPU has no streams to fill: one context, small buckets to warm
        options.setdefault("contexts", 1)
        options.setdefault("max_batch", 8)
    if not devices:
        raise ModelsMissing(f"backend {name!r} needs a CUDA device: {available()['reason']}")
    return EngineBackend(
        models_dir, runner=_RUNNER[name], devices=devices, peers=peers, name=name, **options
    )


def describe(backend: Backend) -> dict[str, Any]:
    """{"backend", "runner", "devices", ...} of any backend (ONNX Runtime: the cpu)."""
    inner = getattr(backend, "inner", backend)  # through a BatchingBackend
    if isinstance(inner, EngineBackend):
        return inner.describe()
    return {"backend": "onnxruntime", "runner": "onnxruntime", "devices": ["cpu"]}
