"""Engines: our ONNX models made into what a GPU runtime loads, cached under models/engines/.

An engine is built for one model file, one device, one runtime version, one precision and one batch
profile, and is only ever loaded for exactly those. `EngineKey` holds them all; the engine's file
name spells them out (with a digest of the whole key); the cache's `index.json` records each file's
key and sha256; a TorchScript engine also carries its key inside. A key that differs in anything
(the model re-converted, another GPU, another torch) finds no engine, so a new one is built, and
the engine it supersedes on this machine (same model, device, runtime, precision and profile) is
deleted. Engines for other devices stay for the machines they belong to: the cache may be shared,
and loading a foreign engine is what InsightFace-REST issue #84 is about.

Runtimes:
- "torchscript": onnx2torch turns the ONNX graph into a torch.fx module, which is moved to the
  device, cast to fp16 for "fp16" (inputs and outputs stay float32: the engine casts at its edges),
  traced, frozen and saved; before it is kept the trace is run at another batch size (and image
  size, for a model whose image size is free) against the module it was traced from. The C++
  LibTorch runner loads it with torch::jit::load; it returns a tuple in the ONNX outputs' order.
- "tensorrt": TensorRT's ONNX parser and builder, one optimisation profile (the key's batch
  profile), built only where `tensorrt` imports. This path has NEVER RUN: no machine this project
  builds or tests on has TensorRT.

torch, onnx2torch and tensorrt are imported inside the functions that need them: keys, paths and
lookups work without any of them.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import importlib.metadata
import importlib.util
import json
import os
import re
import sys
import time
import types
import warnings
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from facecore.convert.sources import sha256_file
from facecore.errors import EngineError
from facecore.runtime.backend import default_models_dir, load_manifest

FORMAT = 1  # how engines are built here: bumping it rebuilds every engine
RUNTIMES = ("torchscript", "tensorrt")
PRECISIONS = ("fp32", "fp16")
DEFAULT_BATCH = (1, 32, 128)  # (min, opt, max)
INDEX = "index.json"
KEY_FILE = "facecore_engine_key.json"  # the key, inside a TorchScript engine (an extra file)
_SUFFIX = {"torchscript": "torchscript", "tensorrt": "plan"}
# TensorRT's profile for an image side the model leaves free (P-Net): the smallest pyramid level,
# a 640x480 photo's first level, and the detector's max_side.
_FREE_SIDE = (12, 240, 1920)
# What an engine replaces when it is built: the same model for the same device and use.
_SLOT = ("model", "device", "capability", "runtime", "precision", "batch")


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine was built for. Two keys equal <=> one engine serves both."""

    model: str  # the manifest's role ("recognizer", "mtcnn_pnet", ...)
    onnx_sha256: str  # of the ONNX file it was built from
    device: str  # "cpu", or the GPU's name as CUDA reports it ("NVIDIA H200")
    capability: str  # CUDA compute capability ("9.0"); "" on the CPU
    runtime: str  # one of RUNTIMES
    runtime_version: str  # torch.__version__ (with its +cu130 / +cpu) or tensorrt.__version__
    converter: str  # "onnx2torch 1.5.15"; "" for TensorRT, whose ONNX parser is part of it
    precision: str  # one of PRECISIONS
    batch: tuple[int, int, int]  # (min, opt, max): TensorRT's profile, the runner's batch range
    format: int = FORMAT

    def __post_init__(self) -> None:
        if self.runtime not in RUNTIMES:
            raise EngineError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.precision not in PRECISIONS:
            raise EngineError(f"precision must be one of {PRECISIONS}, got {self.precision!r}")
        b = self.batch
        if len(b) != 3 or not all(isinstance(n, int) for n in b) or not 1 <= b[0] <= b[1] <= b[2]:
            raise EngineError(f"batch must be (min, opt, max) with 1 <= min <= opt <= max, got {b}")
        if not re.fullmatch(r"[0-9a-f]{64}", self.onnx_sha256):
            raise EngineError(f"onnx_sha256 must be 64 hex digits, got {self.onnx_sha256!r}")

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["batch"] = list(self.batch)
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> EngineKey:
        return cls(**{**d, "batch": tuple(d["batch"])})

    def digest(self) -> str:
        """16 hex digits of the sha256 of the whole key: part of the file name."""
        text = json.dumps(self.to_json(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def file_name(self) -> str:
        """E.g. recognizer.1a2b3c4d5e6f.nvidia-h200.sm90.torch-2.11.0+cu130.fp16.b1-32-128.
        <digest>.torchscript: what it was built for, readable, and a digest of the rest."""
        device = re.sub(r"[^a-z0-9]+", "-", self.device.lower()).strip("-")
        if self.capability:
            device += ".sm" + self.capability.replace(".", "")
        runtime = "torch" if self.runtime == "torchscript" else "trt"
        version = re.sub(r"[^A-Za-z0-9.+]+", "-", self.runtime_version)
        profile = "b" + "-".join(map(str, self.batch))
        return ".".join(
            [
                self.model,
                self.onnx_sha256[:12],
                device,
                f"{runtime}-{version}",
                self.precision,
                profile,
                self.digest(),
                _SUFFIX[self.runtime],
            ]
        )


def default_engines_dir(models_dir: Path | None = None) -> Path:
    """`FACECORE_ENGINES` if set, else `engines/` beside the models directory (models/engines)."""
    env = os.environ.get("FACECORE_ENGINES")
    if env:
        return Path(env)
    return (models_dir if models_dir is not None else default_models_dir()).parent / "engines"


def device_identity(device: str = "cpu") -> tuple[str, str]:
    """(name, compute capability) of a torch device string: ("cpu", "") or, for "cuda" /
    "cuda:N", e.g. ("NVIDIA H200", "9.0")."""
    if device == "cpu":
        return "cpu", ""
    torch = _torch()
    dev = torch.device(device)
    if dev.type != "cuda":
        raise EngineError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}")
    if not torch.cuda.is_available():
        raise EngineError(f"no CUDA device for {device!r}: torch {torch.__version__} sees none")
    index = dev.index if dev.index is not None else torch.cuda.current_device()
    major, minor = torch.cuda.get_device_capability(index)
    return str(torch.cuda.get_device_name(index)), f"{major}.{minor}"


def default_precision(capability: str) -> str:
    """fp16 on GPUs of compute capability 7.0 and newer (tensor cores), else fp32 (the CPU; Pascal,
    whose fp16 is slow)."""
    if capability and int(capability.split(".")[0]) >= 7:
        return "fp16"
    return "fp32"


def runtime_version(runtime: str) -> tuple[str, str]:
    """(runtime_version, converter) of this process for `runtime`."""
    if runtime == "torchscript":
        try:
            converter = f"onnx2torch {importlib.metadata.version('onnx2torch')}"
        except importlib.metadata.PackageNotFoundError:
            raise EngineError(_NEEDS_TORCH) from None
        return str(_torch().__version__), converter
    if runtime == "tensorrt":
        try:
            import tensorrt
        except ImportError as e:
            raise EngineError(f"TensorRT engines need the tensorrt package: {e}") from e
        return str(tensorrt.__version__), ""
    raise EngineError(f"runtime must be one of {RUNTIMES}, got {runtime!r}")


def engine_key(
    model: str,
    onnx_sha256: str,
    device: str = "cpu",
    precision: str | None = None,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    runtime: str = "torchscript",
) -> EngineKey:
    """The key of `model` (its ONNX file's sha256) for `device` ("cpu", "cuda", "cuda:N") as this
    process would build it: this device's name and capability, this runtime's version, and
    `precision` or the device's default."""
    name, capability = device_identity(device)
    if runtime == "tensorrt" and device == "cpu":
        raise EngineError("TensorRT engines are built for a CUDA device, not 'cpu'")
    version, converter = runtime_version(runtime)
    return EngineKey(
        model=model,
        onnx_sha256=onnx_sha256,
        device=name,
        capability=capability,
        runtime=runtime,
        runtime_version=version,
        converter=converter,
        precision=precision or default_precision(capability),
        batch=tuple(batch),  # type: ignore[arg-type]  # checked in __post_init__
    )


def manifest_keys(
    models_dir: Path,
    device: str = "cpu",
    precision: str | None = None,
    batch: tuple[int, int, int] = DEFAULT_BATCH,
    runtime: str = "torchscript",
) -> dict[str, tuple[EngineKey, Path]]:
    """role -> (key, ONNX file) for every ONNX model of `models_dir`'s manifest (the npz shape
    predictor is no network and has no engine)."""
    out: dict[str, tuple[EngineKey, Path]] = {}
    for role, entry in sorted(load_manifest(models_dir)["models"].items()):
        if str(entry["file"]).endswith(".onnx"):
            key = engine_key(role, entry["sha256"], device, precision, batch, runtime)
            out[role] = (key, models_dir / entry["file"])
    return out


def cache_path(key: EngineKey, root: Path) -> Path:
    """Where the engine of `key` lives in the cache `root` (it may not exist yet)."""
    return Path(root) / key.file_name()


def read_index(root: Path) -> dict[str, Any]:
    """The cache's index: {"format": FORMAT, "engines": {file name: {"key", "sha256", "inputs",
    "outputs", "built", "build_s"}}}; empty when absent or of another format."""
    path = Path(root) / INDEX
    if path.exists():
        index: dict[str, Any] = json.loads(path.read_text())
        if index.get("format") == FORMAT:
            return index
    return {"format": FORMAT, "engines": {}}


def lookup(key: EngineKey, root: Path) -> Path | None:
    """The cached engine of exactly `key`, or None: no index entry, an entry of another key, a
    missing file or one whose sha256 is not the index's all mean 'build it'."""
    path = cache_path(key, root)
    entry = read_index(root)["engines"].get(path.name)
    if entry is None or entry.get("key") != key.to_json() or not path.exists():
        return None
    if sha256_file(path) != entry.get("sha256"):
        return None
    return path


def build(key: EngineKey, onnx_path: Path, root: Path) -> Path:
    """Build the engine of `key` from `onnx_path` into the cache `root` and record it; the engine
    it supersedes here is deleted. Refuses (EngineError) an ONNX file whose sha256 is not the
    key's, and a key this process cannot honour (another runtime version, no such device).
    Safe to call from several processes: one builds, the others find its engine."""
    onnx_path = Path(onnx_path)
    if sha256_file(onnx_path) != key.onnx_sha256:
        raise EngineError(
            f"{key.model}: {onnx_path} is not the file the key was made for "
            f"(sha256 {key.onnx_sha256[:12]}...): rebuild the models or make the key again"
        )
    device = _device_for(key)
    root = Path(root)
    with _locked(root):
        found = lookup(key, root)
        if found is not None:
            return found
        path = cache_path(key, root)
        tmp = path.with_name(path.name + ".tmp")
        t0 = time.perf_counter()
        builder = _build_torchscript if key.runtime == "torchscript" else _build_tensorrt
        try:
            io = builder(key, onnx_path, tmp, device)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        index = read_index(root)
        slot = [key.to_json()[f] for f in _SLOT]
        for name, entry in list(index["engines"].items()):
            if name != path.name and [entry.get("key", {}).get(f) for f in _SLOT] == slot:
                (root / name).unlink(missing_ok=True)
                del index["engines"][name]
        index["engines"][path.name] = {
            "key": key.to_json(),
            "sha256": sha256_file(path),
            **io,
            "built": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "build_s": round(time.perf_counter() - t0, 2),
        }
        tmp_index = root / (INDEX + ".tmp")
        tmp_index.write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        os.replace(tmp_index, root / INDEX)
    return path


def ensure(key: EngineKey, onnx_path: Path, root: Path) -> Path:
    """The engine of `key`: the cached one, or a new build."""
    return lookup(key, root) or build(key, onnx_path, root)


def load(key: EngineKey, root: Path, device: str | None = None) -> Any:
    """The TorchScript engine of `key` as a torch.jit.ScriptModule, after checking the key it
    carries: a module (x float32 NCHW) -> tuple of float32 outputs, on `device` ("cuda:1", which
    must be the key's GPU) or the first device that is. TensorRT plans are the C++ runner's."""
    if key.runtime != "torchscript":
        raise EngineError(f"{key.model}: Python loads TorchScript engines only, not {key.runtime}")
    path = lookup(key, root)
    if path is None:
        raise EngineError(f"{key.model}: no engine for this key in {root}: build it first")
    first = _device_for(key)
    if device is not None and device_identity(device) != (key.device, key.capability):
        raise EngineError(f"{key.model}: the engine is for a {key.device}, {device} is not one")
    device = device or first
    torch = _torch()
    extra = {KEY_FILE: ""}
    with _quiet_jit():
        module = torch.jit.load(str(path), map_location=device, _extra_files=extra)
    inside = json.loads(extra[KEY_FILE] or "null")
    if inside != key.to_json():
        raise EngineError(f"{key.model}: {path} carries the key {inside}, not this one: delete it")
    return module


# -- building -------------------------------------------------------------------------------------

_NEEDS_TORCH = (
    "TorchScript engines need torch and onnx2torch: pip install 'facecore[engines]' "
    "(docs/gpu.md, 'Engines and their cache')"
)


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        raise EngineError(_NEEDS_TORCH) from None
    return torch


def _device_for(key: EngineKey) -> str:
    """The torch device on which this process builds and loads `key`, or EngineError saying why
    it cannot: a foreign engine is never built or loaded under another machine's key."""
    here = runtime_version(key.runtime)
    if here != (key.runtime_version, key.converter):
        raise EngineError(
            f"{key.model}: the key is for {key.runtime} {key.runtime_version} "
            f"({key.converter or 'its own parser'}); this process has {here[0]} ({here[1]})"
        )
    if key.device == "cpu":
        return "cpu"
    torch = _torch()
    for i in range(torch.cuda.device_count()):
        if device_identity(f"cuda:{i}") == (key.device, key.capability):
            return f"cuda:{i}"
    raise EngineError(
        f"{key.model}: the key is for a {key.device} (sm {key.capability}): none here"
    )


@contextlib.contextmanager
def _locked(root: Path) -> Iterator[None]:
    root.mkdir(parents=True, exist_ok=True)
    with open(root / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


@contextlib.contextmanager
def _quiet_jit() -> Iterator[None]:
    """Around our TorchScript calls only: torch 2.13 marks TorchScript deprecated (for
    torch.export), yet it is what libtorch's torch::jit::load reads; and onnx2torch's Pad reads its
    pads as Python numbers, which the tracer warns it keeps as constants (they are: initializers;
    and every trace is checked at a batch and image size it did not see)."""
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=r".*torch\.jit\.\S+` is deprecated", category=DeprecationWarning
        )
        warnings.filterwarnings(
            "ignore", category=_torch().jit.TracerWarning, module=r"onnx2torch\."
        )
        yield


def _onnx2torch_convert() -> Any:
    """onnx2torch's `convert`. onnx2torch imports torchvision, for two operators none of our
    models has (NonMaxSuppression, RoiAlign). PyPI's torchvision wheels are built against CUDA
    torch and do not load beside the CPU torch that CI installs, so CI installs onnx2torch
    without it; then a placeholder stands in while onnx2torch is imported (removed from
    sys.modules after) and those two operators fail clearly if a model ever has them."""
    if importlib.util.find_spec("onnx2torch") is None:
        raise EngineError(_NEEDS_TORCH)
    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        try:
            from onnx2torch import convert
        except RuntimeError as e:  # torchvision built for another torch
            raise EngineError(
                f"torchvision does not load with torch {_torch().__version__} ({e}): uninstall "
                "it (the converter does not need it) or install the build made for this torch"
            ) from e
        return convert

    def missing(*args: Any, **kwargs: Any) -> Any:
        raise EngineError("this operator needs torchvision, which is not installed")

    ops = types.ModuleType("torchvision.ops")
    for name in ("nms", "batched_nms", "box_convert", "roi_align"):
        setattr(ops, name, missing)
    placeholder = types.ModuleType("torchvision")
    placeholder.__dict__["ops"] = ops
    sys.modules.update({"torchvision": placeholder, "torchvision.ops": ops})
    try:
        from onnx2torch import convert
    finally:
        del sys.modules["torchvision"], sys.modules["torchvision.ops"]
    return convert


def _onnx_inputs(graph: Any) -> list[tuple[str, list[int | str]]]:
    return [
        (i.name, [d.dim_param or d.dim_value for d in i.type.tensor_type.shape.dim])
        for i in graph.input
    ]


def _shape(dims: list[int | str], batch: int, side: int) -> list[int]:
    """A concrete input shape: `batch` for the first dimension, `side` for any other free one."""
    return [
        batch if j == 0 else (d if isinstance(d, int) and d > 0 else side)
        for j, d in enumerate(dims)
    ]


def _build_torchscript(key: EngineKey, onnx_path: Path, out: Path, device: str) -> dict[str, Any]:
    import onnx

    torch = _torch()
    convert = _onnx2torch_convert()
    model = onnx.load(str(onnx_path))
    inputs = _onnx_inputs(model.graph)
    if len(inputs) != 1:
        raise EngineError(f"{key.model}: engines take one input, the model has {len(inputs)}")
    dims = inputs[0][1]
    dtype = torch.float16 if key.precision == "fp16" else torch.float32
    try:
        graph = convert(model)
    except Exception as e:  # onnx2torch raises bare NotImplementedError / KeyError
        raise EngineError(f"{key.model}: onnx2torch cannot convert {onnx_path.name}: {e}") from e
    graph = graph.eval().to(device=device, dtype=dtype)

    class Cast(torch.nn.Module):  # type: ignore[misc, name-defined]
        """float32 in, `dtype` inside, a tuple of float32 out."""

        def __init__(self) -> None:
            super().__init__()
            self.graph = graph

        def forward(self, x: Any) -> Any:
            y = self.graph(x.to(dtype))
            ys = [y] if isinstance(y, torch.Tensor) else list(y)
            return tuple(t.float() for t in ys)

    wrapped = Cast().eval()
    gen = torch.Generator().manual_seed(0)

    def example(batch: int, side: int) -> Any:
        return (torch.rand(_shape(dims, batch, side), generator=gen) * 255).to(device)

    free_side = any(not isinstance(d, int) or d <= 0 for d in dims[1:])
    with torch.no_grad(), _quiet_jit():
        traced = torch.jit.freeze(torch.jit.trace(wrapped, example(2, 64)))
        # A trace replays what it saw: check it at a batch (and image side) it did not see.
        for batch, side in [(3, 64)] + ([(1, 41)] if free_side else []):
            x = example(batch, side)
            for want, got in zip(wrapped(x), traced(x)):
                tol = (1e-2 if key.precision == "fp16" else 1e-4) * max(
                    1.0, float(want.abs().max())
                )
                if want.shape != got.shape or float((want - got).abs().max()) > tol:
                    raise EngineError(
                        f"{key.model}: the trace does not hold for input {tuple(x.shape)}"
                    )
        torch.jit.save(traced, str(out), _extra_files={KEY_FILE: json.dumps(key.to_json())})
    return {
        "inputs": [{"name": inputs[0][0], "shape": dims}],
        "outputs": [o.name for o in model.graph.output],
    }


def _build_tensorrt(key: EngineKey, onnx_path: Path, out: Path, device: str) -> dict[str, Any]:
    """NEVER RUN HERE (no TensorRT on any machine of this project): written against the TensorRT
    8.6 / 10 Python API."""
    import tensorrt as trt

    _torch().cuda.set_device(device)  # the builder targets the current CUDA device
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    # TensorRT 8 builds implicit-batch networks unless told; 10 knows only explicit batch.
    major = int(trt.__version__.split(".")[0])
    flags = 1 << int(trt.NetworkDefinitionCreationFlag.EXPLICIT_BATCH) if major < 10 else 0
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    if not parser.parse(onnx_path.read_bytes()):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise EngineError(f"{key.model}: TensorRT cannot parse {onnx_path.name}: {errors}")
    config = builder.create_builder_config()
    if key.precision == "fp16":
        config.set_flag(trt.BuilderFlag.FP16)
    profile = builder.create_optimization_profile()
    inputs = []
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        dims = list(tensor.shape)  # -1 where free
        shapes = [_shape(dims, b, side) for b, side in zip(key.batch, _FREE_SIDE)]
        profile.set_shape(tensor.name, *shapes)
        inputs.append({"name": tensor.name, "shape": dims})
    config.add_optimization_profile(profile)
    plan = builder.build_serialized_network(network, config)
    if plan is None:
        raise EngineError(f"{key.model}: TensorRT could not build an engine (see its log above)")
    with open(out, "wb") as f:
        f.write(plan)
    outputs = [network.get_output(i).name for i in range(network.num_outputs)]
    return {"inputs": inputs, "outputs": outputs}
