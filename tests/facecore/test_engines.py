"""The engine cache (facecore.runtime.engines) and the TorchScript engines against ONNX Runtime.

Parity runs every model's engine on the very inputs our pipeline fed ONNX Runtime for real photos
(LFW and two group photos: P-Net pyramid levels, R-Net/O-Net crops, aligned chips, mesh crops, ...),
and compares with what ONNX Runtime answered. The cache tests build the two small R-Net/O-Net
engines. Tests that build need torch and onnx2torch (`make test` installs the CPU wheel: see
docs/gpu.md); without them they skip and say so.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import shutil
import sys
import threading
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import onnx
import pytest
from facecore.errors import EngineError
from facecore.pipeline.engine import Engine
from facecore.runtime import engines
from facecore.runtime.backend import OnnxRuntimeBackend
from facecore.runtime.engines import EngineKey
from onnx import TensorProto, helper, numpy_helper

from tests.conftest import MODELS_DIR, REPO, SHARED_DATA

HAVE_TORCH = all(importlib.util.find_spec(m) is not None for m in ("torch", "onnx2torch"))
needs_torch = pytest.mark.skipif(
    not HAVE_TORCH,
    reason="torch and onnx2torch are not installed (`make test` installs the CPU torch wheel and "
    "onnx2torch: docs/gpu.md, 'Engines and their cache')",
)

# Largest |engine - ONNX Runtime| allowed per model on these inputs, fp32 on the CPU: about 3x what
# torch 2.13.0+cpu gave (the comments; docs/gpu.md), float32 summation order and nothing else.
# Outputs are probabilities, fractions of a box, the recogniser's 128-d vector (norm ~0.5) and,
# for the mesh, pixels of its 192 px crop (7.6e-5 px: 4e-7 of the crop).
TOLERANCE = {
    "age": 5e-6,  # 1.7e-6
    "emotion": 2e-6,  # 6.9e-7
    "gender": 1e-6,  # 3.0e-7
    "landmarks468": 2e-4,  # 7.6e-5
    "mtcnn_onet": 1e-6,  # 3.6e-7
    "mtcnn_pnet": 1e-5,  # 2.4e-6
    "mtcnn_rnet": 5e-6,  # 1.8e-6
    "recognizer": 1e-6,  # 3.6e-7
}
FIELDS = ("landmark", "angle", "age", "gender", "expression", "emotion", "eye_status", "quality")
PHOTOS = [SHARED_DATA / "misc" / f for f in ("two_people.jpg", "2008_002470.jpg")]


def _key(**changes: Any) -> EngineKey:
    base = EngineKey(
        model="recognizer",
        onnx_sha256="ab" * 32,
        device="NVIDIA H200",
        capability="9.0",
        runtime="torchscript",
        runtime_version="2.11.0+cu130",
        converter="onnx2torch 1.5.15",
        precision="fp16",
        batch=(1, 32, 128),
    )
    return dataclasses.replace(base, **changes)


# -- keys and the cache, without torch ------------------------------------------------------------


def test_file_name_says_what_the_engine_is_for() -> None:
    name = _key().file_name()
    assert name.startswith("recognizer.abababababab.nvidia-h200.sm90.torch-2.11.0+cu130.fp16.")
    assert name.endswith(f".b1-32-128.{_key().digest()}.torchscript")
    assert (
        _key(runtime="tensorrt", runtime_version="10.13.0", converter="")
        .file_name()
        .endswith(".plan")
    )
    cpu = _key(device="cpu", capability="", runtime_version="2.13.0+cpu").file_name()
    assert ".cpu.torch-2.13.0+cpu.fp16." in cpu


@pytest.mark.parametrize(
    "change",
    [
        {"model": "age"},
        {"onnx_sha256": "cd" * 32},
        {"device": "NVIDIA A100-SXM4-80GB"},
        {"capability": "8.0"},
        {"runtime": "tensorrt"},
        {"runtime_version": "2.11.1+cu130"},
        {"converter": "onnx2torch 1.5.14"},
        {"precision": "fp32"},
        {"batch": (1, 32, 64)},
        {"format": engines.FORMAT + 1},
    ],
)
def test_every_component_changes_the_key_and_its_file(change: dict[str, Any]) -> None:
    other = _key(**change)
    assert other != _key() and other.digest() != _key().digest()
    assert other.file_name() != _key().file_name()


def test_key_round_trips_through_json() -> None:
    key = _key()
    assert EngineKey.from_json(json.loads(json.dumps(key.to_json()))) == key


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"precision": "int4"}, "precision must be"),
        ({"runtime": "onnxruntime"}, "runtime must be"),
        ({"batch": (8, 4, 16)}, "batch must be"),
        ({"batch": (0, 1, 2)}, "batch must be"),
        ({"onnx_sha256": "abc"}, "64 hex digits"),
    ],
)
def test_bad_keys_are_refused(change: dict[str, Any], message: str) -> None:
    with pytest.raises(EngineError, match=message):
        _key(**change)


def test_default_precision() -> None:
    assert engines.default_precision("") == "fp32"  # CPU
    assert engines.default_precision("6.1") == "fp32"  # Tesla P4, GTX 10xx: slow fp16
    assert engines.default_precision("7.0") == engines.default_precision("9.0") == "fp16"


def test_lookup_finds_only_an_exactly_recorded_engine(tmp_path: Path) -> None:
    key = _key()
    assert engines.lookup(key, tmp_path) is None  # no index
    path = engines.cache_path(key, tmp_path)
    path.write_bytes(b"engine")
    assert engines.lookup(key, tmp_path) is None  # a file the index does not record
    entry = {"key": key.to_json(), "sha256": _sha(path)}
    _write_index(tmp_path, {path.name: entry})
    assert engines.lookup(key, tmp_path) == path
    assert engines.lookup(_key(runtime_version="2.12.0+cu130"), tmp_path) is None
    _write_index(tmp_path, {path.name: {**entry, "key": _key(capability="8.9").to_json()}})
    assert engines.lookup(key, tmp_path) is None  # recorded under another key
    _write_index(tmp_path, {path.name: entry})
    path.write_bytes(b"engine, truncated or replaced")
    assert engines.lookup(key, tmp_path) is None  # not the file that was recorded


def test_default_engines_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("FACECORE_ENGINES", raising=False)
    assert engines.default_engines_dir(MODELS_DIR) == MODELS_DIR.parent / "engines"
    monkeypatch.setenv("FACECORE_ENGINES", str(tmp_path))
    assert engines.default_engines_dir(MODELS_DIR) == tmp_path


def test_without_torch_a_key_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "torch", None)  # import torch -> ImportError
    with pytest.raises(EngineError, match=r"pip install 'facecore\[engines\]'"):
        engines.manifest_keys(MODELS_DIR)
    assert engines.lookup(_key(), MODELS_DIR.parent / "no-engines") is None  # needs no torch


def _sha(path: Path) -> str:
    from facecore.convert.sources import sha256_file

    return sha256_file(path)


def _write_index(root: Path, entries: dict[str, Any]) -> None:
    (root / engines.INDEX).write_text(json.dumps({"format": engines.FORMAT, "engines": entries}))


# -- building and loading (torch) -------------------------------------------------------------


@pytest.fixture
def rnet(tmp_path: Path) -> tuple[EngineKey, Path, Path]:
    """The R-Net key for this process, its ONNX file and an empty cache."""
    key, onnx_path = engines.manifest_keys(MODELS_DIR)["mtcnn_rnet"]
    return key, onnx_path, tmp_path / "engines"


@needs_torch
def test_key_describes_this_process() -> None:
    import torch

    keys = engines.manifest_keys(MODELS_DIR)
    manifest = json.loads((MODELS_DIR / "manifest.json").read_text())["models"]
    assert sorted(keys) == sorted(r for r, e in manifest.items() if e["file"].endswith(".onnx"))
    key = keys["recognizer"][0]
    assert key.onnx_sha256 == manifest["recognizer"]["sha256"]
    assert (key.device, key.capability, key.precision) == ("cpu", "", "fp32")
    assert key.runtime_version == torch.__version__ and key.converter == "onnx2torch 1.5.15"
    with pytest.raises(EngineError, match="TensorRT engines are built for a CUDA device"):
        engines.engine_key("recognizer", "ab" * 32, runtime="tensorrt")


@needs_torch
def test_build_then_lookup_and_load(rnet: tuple[EngineKey, Path, Path]) -> None:
    key, onnx_path, root = rnet
    path = engines.ensure(key, onnx_path, root)
    assert path == engines.cache_path(key, root) and engines.lookup(key, root) == path
    entry = engines.read_index(root)["engines"][path.name]
    assert entry["key"] == key.to_json() and entry["sha256"] == _sha(path)
    assert entry["inputs"] == [{"name": "image", "shape": ["N", 3, 24, 24]}]
    assert entry["outputs"] == ["bbox_reg", "face_prob"]
    assert sorted(p.name for p in root.iterdir()) == sorted([".lock", engines.INDEX, path.name])
    # onnx2torch was imported without torchvision here: its placeholder did not stay behind.
    assert "torchvision" not in sys.modules or importlib.util.find_spec("torchvision") is not None
    mtime = path.stat().st_mtime_ns
    assert engines.ensure(key, onnx_path, root) == path and path.stat().st_mtime_ns == mtime
    outputs = engines.load(key, root)(_torch_input(np.zeros((3, 3, 24, 24), np.float32)))
    assert [tuple(t.shape) for t in outputs] == [(3, 4), (3, 1)]
    assert engines.load(key, root, device="cpu") is not None
    with pytest.raises(EngineError, match="no CUDA device|is not one"):
        engines.load(key, root, device="cuda:0")


@needs_torch
def test_stale_engine_is_rebuilt_and_replaced(
    rnet: tuple[EngineKey, Path, Path], tmp_path: Path
) -> None:
    """A re-converted model (another sha256) gets a new engine; the old one is deleted."""
    key, onnx_path, root = rnet
    old = engines.ensure(key, onnx_path, root)
    model = onnx.load(str(onnx_path))
    init = model.graph.initializer[0]
    init.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(init) * 1.5, init.name))
    changed = tmp_path / "mtcnn_rnet.onnx"
    onnx.save(model, str(changed))
    new_key = dataclasses.replace(key, onnx_sha256=_sha(changed))
    assert engines.lookup(new_key, root) is None
    new = engines.ensure(new_key, changed, root)
    assert new != old and not old.exists()
    assert list(engines.read_index(root)["engines"]) == [new.name]
    x = _torch_input(np.full((1, 3, 24, 24), 100, np.float32))
    assert not np.allclose(
        engines.load(new_key, root)(x)[0].numpy(), _onnx_run(onnx_path, x.numpy())[0]
    )


@needs_torch
def test_foreign_engines_are_never_loaded_or_built_here(rnet: tuple[EngineKey, Path, Path]) -> None:
    """An engine recorded for another GPU or another torch stays in the cache for its machine,
    but this process neither loads it nor builds under its key; its own key builds its own."""
    key, onnx_path, root = rnet
    ours = engines.ensure(key, onnx_path, root)
    foreign = {
        "gpu": dataclasses.replace(key, device="NVIDIA H200", capability="9.0", precision="fp16"),
        "torch": dataclasses.replace(key, runtime_version="2.11.0+cpu"),
    }
    for what, other in foreign.items():
        path = engines.cache_path(other, root)
        shutil.copy(ours, path)
        index = engines.read_index(root)
        index["engines"][path.name] = {"key": other.to_json(), "sha256": _sha(path)}
        _write_index(root, index["engines"])
        assert engines.lookup(other, root) == path  # recorded, so found by its own key only
        match = "none here" if what == "gpu" else "this process has"
        with pytest.raises(EngineError, match=match):
            engines.load(other, root)
        with pytest.raises(EngineError, match=match):
            engines.build(other, onnx_path, root)
    engines.build(key, onnx_path, root)  # the same slot as ours only
    assert len(engines.read_index(root)["engines"]) == 3


@needs_torch
def test_replaced_file_is_rebuilt_not_loaded(rnet: tuple[EngineKey, Path, Path]) -> None:
    """An engine file swapped for another (here O-Net's) is not the recorded one: rebuilt."""
    key, onnx_path, root = rnet
    path = engines.ensure(key, onnx_path, root)
    onet_key, onet_path = engines.manifest_keys(MODELS_DIR)["mtcnn_onet"]
    shutil.copy(engines.ensure(onet_key, onet_path, root), path)
    assert engines.lookup(key, root) is None
    assert engines.ensure(key, onnx_path, root) == path
    assert engines.load(key, root) is not None  # carries R-Net's key again
    # The index hand-edited to accept the swapped file: the key inside it still refuses.
    shutil.copy(engines.cache_path(onet_key, root), path)
    index = engines.read_index(root)
    index["engines"][path.name]["sha256"] = _sha(path)
    _write_index(root, index["engines"])
    with pytest.raises(EngineError, match="carries the key"):
        engines.load(key, root)


@needs_torch
def test_a_graph_onnx2torch_cannot_convert_fails_cleanly(
    rnet: tuple[EngineKey, Path, Path], tmp_path: Path
) -> None:
    """A MaxPool with auto_pad (what our MTCNN graphs had): a clear error, nothing left behind."""
    key, _, root = rnet
    node = helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[2, 2], auto_pad="SAME_UPPER")
    graph = helper.make_graph(
        [node],
        "pool",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["N", 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
    )
    path = tmp_path / "pool.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), str(path))
    pool = dataclasses.replace(key, model="pool", onnx_sha256=_sha(path))
    with pytest.raises(EngineError, match="pool: onnx2torch cannot convert pool.onnx"):
        engines.build(pool, path, root)
    assert sorted(p.name for p in root.iterdir()) == [".lock"]


@needs_torch
def test_build_refuses_a_model_file_that_is_not_the_keys(
    rnet: tuple[EngineKey, Path, Path],
) -> None:
    key, _, root = rnet
    with pytest.raises(EngineError, match="not the file the key was made for"):
        engines.build(key, MODELS_DIR / "mtcnn_onet.onnx", root)


@needs_torch
def test_concurrent_builds_make_one_engine(rnet: tuple[EngineKey, Path, Path]) -> None:
    key, onnx_path, root = rnet
    paths: list[Path] = []
    threads = [
        threading.Thread(target=lambda: paths.append(engines.build(key, onnx_path, root)))
        for _ in range(3)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(paths)) == 1 and len(paths) == 3
    assert list(engines.read_index(root)["engines"]) == [paths[0].name]


@needs_torch
def test_build_engines_tool(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    spec = importlib.util.spec_from_file_location("build_engines", REPO / "tools/build_engines.py")
    assert spec is not None and spec.loader is not None
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)
    argv = [
        "--out",
        str(tmp_path),
        "--runtime",
        "torchscript",
        "--only",
        "mtcnn_rnet",
        "mtcnn_onet",
    ]
    assert tool.main(argv) == 0
    assert capsys.readouterr().out.count("(torchscript): built in") == 2
    assert tool.main(argv) == 0
    assert capsys.readouterr().out.count("(torchscript): up to date") == 2
    assert tool.main([*argv, "--force"]) == 0
    assert capsys.readouterr().out.count("(torchscript): built in") == 2
    assert len(engines.read_index(tmp_path)["engines"]) == 2
    assert tool.main(["--out", str(tmp_path), "--only", "shape5"]) == 1
    assert "no ONNX model named ['shape5']" in capsys.readouterr().err


# -- parity with ONNX Runtime on real inputs ------------------------------------------------------


class _Recorder:
    """A backend that runs ONNX Runtime and keeps every call: (inputs, outputs) per role."""

    def __init__(self, inner: OnnxRuntimeBackend) -> None:
        self.inner = inner
        self.calls: dict[str, list[tuple[np.ndarray, list[np.ndarray]]]] = {}

    def run(self, role: str, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        out = self.inner.run(role, feeds)
        ((x,),) = [feeds.values()]
        self.calls.setdefault(role, []).append((x.copy(), out))
        return out

    def has(self, role: str) -> bool:
        return self.inner.has(role)

    def path(self, role: str) -> Path:
        return self.inner.path(role)


@pytest.fixture(scope="module")
def pipeline_calls() -> dict[str, list[tuple[np.ndarray, list[np.ndarray]]]]:
    """Every model call of the face pipeline (all fields) on 8 LFW photos and 2 group photos."""
    recorder = _Recorder(OnnxRuntimeBackend(MODELS_DIR, threads=1))
    engine = Engine(MODELS_DIR, backend=recorder)
    lfw = sorted((SHARED_DATA / "lfw" / "images").glob("*/*.jpg"))
    for path in lfw[:: len(lfw) // 8][:8] + PHOTOS:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        assert image is not None, path
        assert engine.detect(image, max_faces=20, fields=FIELDS + ("embedding",))
    return recorder.calls


@pytest.fixture(scope="module")
def fp32_engines(cpu_engines: Path) -> dict[str, Any]:
    """Every model's fp32 TorchScript engine for the CPU (tests/conftest.py builds them), loaded."""
    keys = engines.manifest_keys(MODELS_DIR)
    return {role: engines.load(key, cpu_engines) for role, (key, _) in keys.items()}


@needs_torch
@pytest.mark.parametrize("role", sorted(TOLERANCE))
def test_engine_equals_onnxruntime_on_pipeline_inputs(
    role: str, pipeline_calls: dict[str, Any], fp32_engines: dict[str, Any]
) -> None:
    import torch

    calls = pipeline_calls[role]
    assert sum(len(x) for x, _ in calls) >= 8
    worst = 0.0
    with torch.no_grad():
        for x, ref in calls:
            got = fp32_engines[role](torch.from_numpy(x))
            assert len(got) == len(ref)
            for g, r in zip(got, ref):
                assert g.shape == r.shape and g.dtype == torch.float32
                worst = max(worst, float(np.abs(g.numpy() - r).max()))
    n = sum(len(x) for x, _ in calls)
    print(f"{role}: {len(calls)} calls, {n} inputs, max |TorchScript - ONNX Runtime| = {worst:.2e}")
    assert worst <= TOLERANCE[role]


@needs_torch
def test_fp16_engine_embeds_like_fp32(pipeline_calls: dict[str, Any], tmp_path: Path) -> None:
    """The fp16 path (cast at the edges, half weights), on the CPU: the recogniser's embeddings of
    real chips keep cosine >= 0.999 with ONNX Runtime's (the issue's fp16 bar)."""
    import torch

    key, path = engines.manifest_keys(MODELS_DIR, precision="fp16")["recognizer"]
    assert key.precision == "fp16"
    engines.ensure(key, path, tmp_path)
    module = engines.load(key, tmp_path)
    calls = pipeline_calls["recognizer"]
    x = np.concatenate([x for x, _ in calls])[:8]
    ref = np.concatenate([r[0] for _, r in calls])[:8]
    with torch.no_grad():
        (got,) = module(torch.from_numpy(x))
    got = got.numpy()
    cos = (got * ref).sum(1) / np.linalg.norm(got, axis=1) / np.linalg.norm(ref, axis=1)
    print(f"recognizer fp16: {len(x)} chips, min cosine 1 - {1 - cos.min():.1e}")
    assert got.dtype == np.float32 and cos.min() >= 0.999


# What a GPU engine in its default precision (fp16 from sm_70) may differ from ONNX Runtime by: the
# issue's bars where it sets one (embedding cosine >= 0.999 for fp16, landmarks within 1 px), else
# 0.02 on probabilities and box fractions. Not yet run on a device: the numbers it prints are the
# first measurement.
GPU_TOLERANCE = {"landmarks468": 1.0}


@pytest.fixture(scope="module")
def cuda() -> None:
    """Skips (before the pipeline fixture runs) where torch sees no CUDA device."""
    import torch

    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")


@pytest.mark.gpu
@needs_torch
def test_gpu_engines_match_onnxruntime(
    cuda: None, pipeline_calls: dict[str, Any], tmp_path: Path
) -> None:
    import torch

    for role, (key, path) in engines.manifest_keys(MODELS_DIR, device="cuda").items():
        engines.ensure(key, path, tmp_path)
        module = engines.load(key, tmp_path)
        worst, cosine = 0.0, 1.0
        with torch.no_grad():
            for x, ref in pipeline_calls[role]:
                got = [t.cpu().numpy() for t in module(torch.from_numpy(x).cuda())]
                for g, r in zip(got, ref, strict=True):
                    if role == "recognizer":
                        cos = (g * r).sum(1) / np.linalg.norm(g, axis=1) / np.linalg.norm(r, axis=1)
                        cosine = min(cosine, float(cos.min()))
                    else:
                        worst = max(worst, float(np.abs(g - r).max()))
        print(f"{role} {key.precision} on {key.device}: max diff {worst:.2e}, cosine {cosine:.6f}")
        assert cosine >= (0.999 if key.precision == "fp16" else 0.9999), role
        assert worst <= GPU_TOLERANCE.get(role, 0.02), role


def _torch_input(x: np.ndarray) -> Any:
    import torch

    return torch.from_numpy(x)


def _onnx_run(path: Path, x: np.ndarray) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    out: list[np.ndarray] = session.run(None, {session.get_inputs()[0].name: x})
    return out
