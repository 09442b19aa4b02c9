"""facecore.runtime.gpu and the private facecore._trt_engine, on the CPU where possible.

The pool and batcher run here through the extension's reference runner (no torch needed); the
LibTorch runner on the cpu through a TorchScript model made here (where torch is installed); the
whole pipeline on the `torch` backend against ONNX Runtime where TorchScript engines of our models
exist (tools/build_engines.py, or FACECORE_ENGINES). `gpu`-marked tests need a CUDA device and a
CUDA runner, and skip with the reason otherwise (tools/gpu_check.sh runs them on a lent GPU).
"""

from __future__ import annotations

import json
import threading
import time
import warnings
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from facecore.convert.sources import sha256_file
from facecore.errors import InternalError, InvalidArgument, ModelsMissing
from facecore.runtime import gpu

from tests.conftest import MODELS_DIR, SHARED_DATA

ext: Any = pytest.importorskip("facecore._trt_engine", reason="built with FACECORE_GPU=OFF")

HAS_LIBTORCH = "libtorch" in ext.runners()
needs_libtorch = pytest.mark.skipif(not HAS_LIBTORCH, reason="this build has no LibTorch runner")
needs_gpu = pytest.mark.skipif(
    not gpu.available()["gpu"], reason=f"no GPU engine here: {gpu.available()['reason']}"
)
MISC = SHARED_DATA / "misc"
PARITY_IMAGES = ["couple.jpg", "bald_guys.jpg", "obama_and_biden.jpg", "two_people.jpg"]


def reference(options: str = "", contexts: int = 2, max_batch: int = 8, wait_us: int = 0) -> Any:
    return ext.Model(
        "toy", options, [("x", [-1, 3, 2])], ["affine", "sum"], "reference", ["cpu"],
        contexts, max_batch, wait_us, "auto", True,
    )  # fmt: skip


def items(caller: int, n: int) -> np.ndarray:
    return (np.arange(n * 6, dtype=np.float32).reshape(n, 3, 2) + 1000 * caller).astype(np.float32)


def test_available_reports_the_build() -> None:
    a = gpu.available()
    assert a["built"] and "reference" in a["runners"]
    assert a["gpu"] == bool(a["cuda_devices"]) or not a["gpu"]
    if not a["gpu"]:
        assert a["reason"]


def test_reference_runs_from_many_threads_and_merges() -> None:
    model = reference("delay_us=2000", contexts=2, max_batch=8, wait_us=3000)

    def call(c: int) -> bool:
        ok = True
        for r in range(10):
            x = items(c * 10 + r, 1 + (c + r) % 3)
            affine, total = model.run([x], True)
            ok &= np.array_equal(affine, 2 * x + 1)
            ok &= np.allclose(total[:, 0], x.reshape(len(x), -1).sum(1), rtol=1e-6)
        return ok

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(call, range(8)))
    s = model.stats()
    assert s["requests"] == 80 and s["failed"] == 0
    assert 0 < s["merged"] and s["runs"] < s["requests"]
    model.close()


def test_the_gil_is_released_while_a_run_waits() -> None:
    model = reference("delay_us=300000", contexts=1)
    t = threading.Thread(target=model.run, args=([items(0, 1)], False))
    start = time.perf_counter()
    t.start()
    ticks = 0
    while t.is_alive():
        ticks += 1
        time.sleep(0.001)
    t.join()
    assert time.perf_counter() - start >= 0.25
    assert ticks > 50  # this thread kept running while the other waited for its run
    model.close()


def test_a_failed_run_reaches_only_its_callers() -> None:
    model = reference("fail=nan", contexts=1, max_batch=4)
    bad = items(1, 1)
    bad[0, 0, 0] = np.nan
    with pytest.raises(RuntimeError, match="NaN in a batch"):
        model.run([bad], False)
    good = items(2, 2)
    assert np.array_equal(model.run([good], False)[0], 2 * good + 1)
    assert model.stats()["failed"] == 1
    model.close()


def test_bad_inputs_are_refused_with_the_argument_named() -> None:
    model = reference()
    with pytest.raises(TypeError, match="must be float32"):
        model.run([items(0, 1).astype(np.float64)], False)
    with pytest.raises(ValueError, match="C-contiguous"):
        model.run([np.asfortranarray(np.zeros((2, 3, 2), np.float32).transpose(0, 2, 1))], False)
    with pytest.raises(ValueError, match=r"input 'x' must have shape \(\?, 3, 2\)"):
        model.run([np.zeros((1, 2, 3), np.float32)], False)
    with pytest.raises(ValueError, match="not in this build"):
        ext.Model("m", "", [("x", [-1, 1])], ["y"], "nonesuch", ["cpu"], 1, 1, 0, "auto", True)
    model.close()
    with pytest.raises(ValueError, match="closed"):
        model.run([items(0, 1)], False)


def test_a_request_bigger_than_max_batch_runs_in_slices() -> None:
    model = reference(max_batch=4)
    x = items(3, 11)
    affine, _ = model.run([x], False)
    assert np.array_equal(affine, 2 * x + 1)
    assert model.stats()["runs"] == 3
    model.close()


def test_open_backend_names() -> None:
    with pytest.raises(InvalidArgument, match="backend must be one of"):
        gpu.open_backend("opencl")
    auto = gpu.open_backend("auto")
    assert gpu.describe(auto)["backend"] == ("cuda" if gpu.available()["gpu"] else "onnxruntime")
    if not gpu.available()["gpu"]:
        with pytest.raises(ModelsMissing):
            gpu.open_backend("cuda")
    with pytest.raises(InvalidArgument, match="gpus must be device numbers"):
        gpu.parse_gpus("zero")
    assert gpu.parse_gpus("0,1") == ["cuda:0", "cuda:1"]


# -- the LibTorch runner on the cpu, through the Backend protocol ---------------------------------


@pytest.fixture
def toy_models(tmp_path: Path) -> Path:
    """A models directory with one ONNX model, 'toy' (conv + relu, and the input's mean), in a
    manifest, and its cpu engine built into the engine cache beside it."""
    import onnx
    from facecore.errors import EngineError
    from facecore.runtime import engines

    try:
        engines.runtime_version("torchscript")
    except EngineError as e:
        pytest.skip(f"no engine converter here: {e}")
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    weight = numpy_helper.from_array(rng.standard_normal((4, 3, 3, 3)).astype(np.float32), "w")
    graph = helper.make_graph(
        [
            helper.make_node("Conv", ["image", "w"], ["conv"], pads=[1, 1, 1, 1]),
            helper.make_node("Relu", ["conv"], ["features"]),
            helper.make_node("ReduceMean", ["image"], ["mean"], axes=[2, 3], keepdims=0),
        ],
        "toy",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["N", 4, 8, 8]),
            helper.make_tensor_value_info("mean", TensorProto.FLOAT, ["N", 3]),
        ],
        [weight],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    models = tmp_path / "onnx"
    models.mkdir()
    onnx.save(model, str(models / "toy.onnx"))
    entry = {
        "file": "toy.onnx",
        "sha256": sha256_file(models / "toy.onnx"),
        "inputs": [{"name": "image", "shape": ["N", 3, 8, 8]}],
        "outputs": [{"name": "features", "shape": ["N", 4, 8, 8]}, {"name": "mean"}],
    }
    (models / "manifest.json").write_text(json.dumps({"models": {"toy": entry}}))
    key = engines.engine_key("toy", sha256_file(models / "toy.onnx"), "cpu")
    engines.build(key, models / "toy.onnx", tmp_path / "engines")
    return models


def _toy_engine(toy_models: Path) -> Path:
    from facecore.runtime import engines

    key, _ = engines.manifest_keys(toy_models, "cpu")["toy"]
    path = engines.lookup(key, toy_models.parent / "engines")
    assert path is not None
    return path


@needs_libtorch
def test_engine_backend_runs_torchscript_on_the_cpu(toy_models: Path) -> None:
    import torch

    backend = gpu.EngineBackend(
        toy_models,
        runner="libtorch",
        devices=["cpu"],
        contexts=2,
        max_batch=4,
        max_wait_ms=1,
        engines_dir=toy_models.parent / "engines",
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        reference_model = torch.jit.load(str(_toy_engine(toy_models)))  # type: ignore[no-untyped-call]
    rng = np.random.default_rng(0)

    def call(seed: int) -> float:
        x = rng.standard_normal((1 + seed % 5, 3, 8, 8)).astype(np.float32)
        got = backend.run("toy", {"image": x})
        with torch.no_grad():
            want = reference_model(torch.from_numpy(x))
        return max(float(np.abs(g - w.numpy()).max()) for g, w in zip(got, want))

    with ThreadPoolExecutor(4) as pool:
        assert max(pool.map(call, range(24))) < 1e-5
    assert backend.describe()["devices"] == ["cpu"] and backend.describe()["precision"] == "fp32"
    with pytest.raises(InvalidArgument, match="needs input 'image'"):
        backend.run("toy", {"x": np.zeros((1, 3, 8, 8), np.float32)})
    with pytest.raises(InvalidArgument, match="must have shape"):
        backend.run("toy", {"image": np.zeros((1, 3, 8, 9), np.float32)})
    backend.close()


@needs_libtorch
def test_a_missing_or_broken_engine_is_refused_at_start(toy_models: Path) -> None:
    """An engine whose bytes are not those the cache recorded, or none at all, is never loaded:
    the backend refuses to start, naming the model and how to build it."""
    engine = _toy_engine(toy_models)
    engine.write_bytes(b"not a TorchScript archive")
    with pytest.raises(ModelsMissing, match="no engine of model 'toy'.*build_engines.py"):
        gpu.EngineBackend(
            toy_models, "libtorch", ["cpu"], engines_dir=toy_models.parent / "engines"
        )
    engine.unlink()
    with pytest.raises(ModelsMissing, match="no engine of model 'toy'"):
        gpu.EngineBackend(
            toy_models, "libtorch", ["cpu"], engines_dir=toy_models.parent / "engines"
        )


@needs_libtorch
def test_an_engine_that_does_not_load_is_refused_at_start(toy_models: Path) -> None:
    """A cached file the runner cannot load (recorded, so the cache hands it over) stops the start
    with the runner's reason."""

    engine = _toy_engine(toy_models)
    engine.write_bytes(b"not a TorchScript archive")
    index_path = toy_models.parent / "engines" / "index.json"
    index = json.loads(index_path.read_text())
    index["engines"][engine.name]["sha256"] = sha256_file(engine)
    index_path.write_text(json.dumps(index))
    with pytest.raises(ModelsMissing, match="cannot load model 'toy'"):
        gpu.EngineBackend(
            toy_models, "libtorch", ["cpu"], engines_dir=toy_models.parent / "engines"
        )


def test_a_failing_device_answers_the_internal_error() -> None:
    """What the server turns into 222302: a run that fails on the engine is an InternalError.
    (An EngineBackend with its model swapped for a reference one that always fails.)"""
    backend = gpu.EngineBackend.__new__(gpu.EngineBackend)
    backend._models = {"toy": reference("fail=always", contexts=1)}
    backend._inputs = {"toy": ["x"]}
    backend.peers = None
    with pytest.raises(InternalError, match="failed on the GPU engine") as e:
        backend.run("toy", {"x": items(0, 1)})
    assert e.value.code == 222302
    backend.close()


# -- the whole pipeline: the torch backend (cpu) and the cuda backend against ONNX Runtime --------


def _engines_dir(device: str, precision: str) -> Path | None:
    """The engine cache, when it holds the recogniser's engine for `device` at `precision`."""
    from facecore.errors import EngineError
    from facecore.runtime import engines

    root = engines.default_engines_dir(MODELS_DIR)
    try:
        key, _ = engines.manifest_keys(MODELS_DIR, device, precision)["recognizer"]
    except EngineError:  # no torch or onnx2torch here, or no such device
        return None
    return root if engines.lookup(key, root) is not None else None


def needs_engines(device: str, precision: str) -> pytest.MarkDecorator:
    return pytest.mark.skipif(
        _engines_dir(device, precision) is None,
        reason=f"no {precision} TorchScript engines of our models for {device} (tools/"
        f"build_engines.py --device {device} --precision {precision} writes models/engines)",
    )


def _parity(backend: str, min_cosine: float, **options: Any) -> None:
    import facecore
    from facecore.pipeline.engine import Engine
    from facecore.runtime.gpu import open_backend

    cpu = facecore.Engine()
    other = Engine(backend=open_backend(backend, **options))
    fields = ("embedding", "landmark")
    for name in PARITY_IMAGES:
        image = facecore.decode_image((MISC / name).read_bytes())
        want, got = cpu.detect(image, 20, fields), other.detect(image, 20, fields)
        assert len(got) == len(want), name
        for a, b in zip(want, got):
            assert a.embedding is not None and b.embedding is not None
            assert float(a.embedding @ b.embedding) >= min_cosine, name
            assert _iou(a.box, b.box) >= 0.95, name
            assert a.landmarks72 is not None and b.landmarks72 is not None
            assert float(np.abs(a.landmarks72 - b.landmarks72).max()) <= 1.0, name


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


@pytest.mark.slow
@needs_libtorch
def test_torch_backend_matches_onnxruntime(cpu_engines: Path) -> None:
    """The whole pipeline through the C++ LibTorch runner on the cpu, with the engines the cache
    builds, against ONNX Runtime: the engine code of the GPU path, checked on every commit."""
    _parity("torch", 0.9999, engines_dir=cpu_engines)


@pytest.mark.gpu
@needs_gpu
@needs_engines("cuda", "fp32")
def test_cuda_fp32_matches_onnxruntime() -> None:
    _parity("cuda", 0.9999, engines_dir=_engines_dir("cuda", "fp32"), precision="fp32")


@pytest.mark.gpu
@needs_gpu
@needs_engines("cuda", "fp16")
def test_cuda_fp16_matches_onnxruntime() -> None:
    _parity("cuda", 0.999, engines_dir=_engines_dir("cuda", "fp16"), precision="fp16")


@pytest.mark.gpu
@needs_gpu
def test_cuda_reports_its_devices() -> None:
    a = gpu.available()
    assert a["cuda_devices"] and all(isinstance(n, str) and n for n in a["cuda_devices"])
    assert gpu.parse_gpus("") == [f"cuda:{i}" for i in range(len(a["cuda_devices"]))]
