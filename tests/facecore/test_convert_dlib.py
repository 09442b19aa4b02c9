"""The converted dlib recogniser and shape predictor against dlib itself (dlib-bin, same .dat files).

Reference chips come from dlib end to end (HOG detector, 5-point predictor, get_face_chip) on real
LFW images; the ONNX model must give dlib's descriptors for them to 1e-4 (it gives ~4e-7: the only
differences are float summation order and the conv+affine folding).
"""

from __future__ import annotations

import json

import cv2
import dlib
import numpy as np
import onnx
import pytest
from facecore.convert import dlib_dnn, dlib_shape
from facecore.convert.dlib_dnn import DlibFormatError
from facecore.convert.sources import member_path
from facecore.pipeline.embed import Recognizer
from facecore.runtime.backend import OnnxRuntimeBackend

from tests.conftest import MODEL_SOURCES, MODELS_DIR, SHARED_DATA

LFW = SHARED_DATA / "lfw" / "images"


@pytest.fixture(scope="module")
def manifest() -> dict:
    return json.loads((MODELS_DIR / "manifest.json").read_text())["models"]


@pytest.fixture(scope="module")
def dlib_chips() -> tuple[np.ndarray, np.ndarray]:
    """24 LFW chips cut by dlib and dlib's descriptors of them."""
    detector = dlib.get_frontal_face_detector()
    sp = dlib.shape_predictor(str(member_path("dlib_shape5", MODEL_SOURCES)))
    rec = dlib.face_recognition_model_v1(str(member_path("dlib_resnet", MODEL_SOURCES)))
    chips, descs = [], []
    for path in sorted(LFW.glob("*/*.jpg"))[::97]:
        rgb = np.ascontiguousarray(cv2.imread(str(path))[:, :, ::-1])
        faces = detector(rgb, 1)
        if not faces:
            continue
        chip = dlib.get_face_chip(rgb, sp(rgb, faces[0]), size=150, padding=0.25)
        chips.append(chip)
        descs.append(np.array(rec.compute_face_descriptor(chip), np.float32))
        if len(chips) == 24:
            break
    assert len(chips) == 24
    return np.stack(chips), np.stack(descs)


def test_manifest_entries(manifest: dict) -> None:
    rec = manifest["recognizer"]
    assert rec["file"] == dlib_dnn.OUT_FILE
    assert rec["inputs"][0]["shape"] == ["N", 3, 150, 150]
    assert rec["outputs"][0]["shape"] == ["N", 128]
    assert "NOT unit-normalised" in rec["outputs"][0]["meaning"]
    assert rec["source"]["path"].endswith("dlib_face_recognition_resnet_model_v1.dat")
    shape5 = manifest["shape5"]
    assert shape5["format"] == "npz" and shape5["file"] == dlib_shape.OUT_FILE
    model = onnx.load(str(MODELS_DIR / rec["file"]))
    onnx.checker.check_model(model)
    assert model.opset_import[0].version == 17


def test_recogniser_matches_dlib(dlib_chips: tuple[np.ndarray, np.ndarray]) -> None:
    chips, ref = dlib_chips
    raw = Recognizer(OnnxRuntimeBackend(MODELS_DIR)).raw(chips)
    assert raw.shape == (24, 128) and raw.dtype == np.float32
    assert np.abs(raw - ref).max() < 1e-4


def test_batch_rows_are_independent(dlib_chips: tuple[np.ndarray, np.ndarray]) -> None:
    rec = Recognizer(OnnxRuntimeBackend(MODELS_DIR))
    chips = dlib_chips[0][:5]
    batched = rec.raw(chips)
    single = np.concatenate([rec.raw(c[None]) for c in chips])
    assert np.abs(batched - single).max() < 1e-5


def test_embed_is_unit_norm_raw(dlib_chips: tuple[np.ndarray, np.ndarray]) -> None:
    rec = Recognizer(OnnxRuntimeBackend(MODELS_DIR))
    chips = dlib_chips[0][:4]
    e = rec.embed(chips)
    raw = rec.raw(chips)
    np.testing.assert_allclose(np.linalg.norm(e, axis=1), 1.0, atol=1e-6)
    np.testing.assert_allclose(e * np.linalg.norm(raw, axis=1, keepdims=True), raw, atol=1e-6)
    assert rec.embed(np.zeros((0, 150, 150, 3), np.uint8)).shape == (0, 128)


def test_recogniser_rejects_wrong_chips() -> None:
    rec = Recognizer(OnnxRuntimeBackend(MODELS_DIR))
    with pytest.raises(ValueError, match="150"):
        rec.raw(np.zeros((1, 112, 112, 3), np.uint8))
    with pytest.raises(TypeError, match="uint8"):
        rec.raw(np.zeros((1, 150, 150, 3), np.float32))


def test_parsed_network_is_dlibs_resnet() -> None:
    src = member_path("dlib_resnet", MODEL_SOURCES)
    net = dlib_dnn.parse(src.read_bytes())
    kinds = [layer.kind for layer in net.layers]
    # ResNet-29: the stem conv + 14 residual blocks of two convs, 4 of them downsampling (their
    # shortcut is a 2x2 average pool reached by a skip), then the global average pool.
    assert kinds.count("con") == 29 and kinds.count("add_prev") == 14
    assert kinds.count("skip") == 4 and kinds.count("avg_pool") == 5
    assert net.input_size == (150, 150)
    np.testing.assert_allclose(net.mean_rgb, (122.782, 117.001, 104.298), atol=1e-4)
    first = net.layers[0].params
    assert first["w"].shape == (32, 3, 7, 7) and first["stride"] == (2, 2)


def test_truncated_dat_raises_clear_error() -> None:
    for name, parse in (("dlib_resnet", dlib_dnn.parse), ("dlib_shape5", dlib_shape.parse)):
        data = member_path(name, MODEL_SOURCES).read_bytes()
        with pytest.raises(DlibFormatError, match="truncated"):
            parse(data[:200_000], name)
        with pytest.raises(DlibFormatError, match="truncated"):
            parse(b"", name)


def test_wrong_file_raises_clear_error() -> None:
    shape_data = member_path("dlib_shape5", MODEL_SOURCES).read_bytes()
    with pytest.raises(DlibFormatError):
        dlib_dnn.parse(shape_data, "shape file as network")
    net_data = member_path("dlib_resnet", MODEL_SOURCES).read_bytes()
    with pytest.raises(DlibFormatError, match="trailing"):
        dlib_dnn.parse(net_data + b"\x00", "padded")


def test_shape_arrays_are_consistent() -> None:
    arrays = np.load(MODELS_DIR / dlib_shape.OUT_FILE)
    c, t, s = arrays["split_idx1"].shape
    assert (c, t, s) == (15, 500, 15)
    assert arrays["leaf_values"].shape == (c, t, s + 1, 10)
    assert arrays["deltas"].shape[:2] == arrays["anchor_idx"].shape == (c, 800)
    assert arrays["initial_shape"].shape == (10,)
    assert 0 < arrays["initial_shape"].min() and arrays["initial_shape"].max() < 1
