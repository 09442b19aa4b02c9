"""Convert MediaPipe's face mesh (face_landmark.tflite) to ONNX.

tflite2onnx does not convert this graph (an earlier probe found it fails on the fp16 weights and
PReLU slopes behind DEQUANTIZE ops), so we translate it ourselves: the flatbuffer is read with
the schema module that ai-edge-litert ships, every DEQUANTIZE of a constant is folded into an
fp32 initializer, and the graph is rebuilt in NCHW (ONNX Runtime's Conv kernels are NCHW; an NHWC
graph would need a Transpose around every op).
Supported ops are exactly those these MediaPipe mobile nets use: CONV_2D, DEPTHWISE_CONV_2D,
PRELU (as Relu, Mul, Add: faster on ONNX Runtime), ADD, MAX_POOL_2D, PAD, and DEQUANTIZE of fp16
constants; anything else, sparse (DENSIFY) weights included, is refused.

The face mesh expects RGB scaled to [0, 1] (MediaPipe's ImageToTensorCalculator range for this
model); the ONNX graph takes 0..255 NCHW RGB and divides by 255 itself.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from facecore.convert.contract import finish
from facecore.convert.sources import member_path, source_entry

ONNX_FILE = "mediapipe_face_landmark.onnx"
CROP = 192  # the face mesh's input side


def _schema() -> Any:
    from ai_edge_litert import schema_py_generated

    return schema_py_generated


_NP_TYPES = {0: np.float32, 1: np.float16, 2: np.int32, 4: np.int64}  # tflite TensorType


class _Graph:
    """The first subgraph of a .tflite file, with constants resolved to numpy arrays."""

    def __init__(self, path: Path) -> None:
        s = _schema()
        raw = path.read_bytes()
        self.model = s.ModelT.InitFromObj(s.Model.GetRootAsModel(raw, 0))
        if len(self.model.subgraphs) != 1:
            raise ValueError(f"{path}: expected one subgraph, got {len(self.model.subgraphs)}")
        self.g = self.model.subgraphs[0]
        self.op_names = {v: k for k, v in vars(s.BuiltinOperator).items() if not k.startswith("_")}
        self.consts: dict[int, np.ndarray] = {}
        for i, t in enumerate(self.g.tensors):
            data = self.model.buffers[t.buffer].data if t.buffer else None
            if data is not None and len(data):
                if t.sparsity is not None:
                    raise NotImplementedError(f"sparse tensor {t.name!r} (DENSIFY) not supported")
                dtype = _NP_TYPES[t.type]
                self.consts[i] = np.frombuffer(bytes(data), dtype=dtype).reshape(list(t.shape))

    def op_name(self, op: Any) -> str:
        code = self.model.operatorCodes[op.opcodeIndex]
        return str(self.op_names[max(code.builtinCode, code.deprecatedBuiltinCode)])

    def tensor_name(self, i: int) -> str:
        return str(self.g.tensors[i].name.decode())

    def shape(self, i: int) -> list[int]:
        return [int(d) for d in self.g.tensors[i].shape]


def _same_pads(
    in_hw: list[int], kernel: list[int], stride: list[int], dilation: list[int]
) -> list[int]:
    """TensorFlow SAME padding as ONNX pads [top, left, bottom, right], odd pixel at the end."""
    begin, end = [], []
    for size, k, s, d in zip(in_hw, kernel, stride, dilation):
        out = -(-size // s)
        total = max((out - 1) * s + (k - 1) * d + 1 - size, 0)
        begin.append(total // 2)
        end.append(total - total // 2)
    return begin + end


def _check_no_activation(opts: Any, name: str) -> None:
    if getattr(opts, "fusedActivationFunction", 0) != 0:
        raise NotImplementedError(f"{name}: fused activation {opts.fusedActivationFunction}")


def convert(tflite_path: Path) -> Any:
    """ONNX ModelProto of a MediaPipe NHWC float tflite model: NCHW float input in 0..255."""
    from onnx import TensorProto, helper, numpy_helper

    tg = _Graph(tflite_path)
    g = tg.g
    nodes: list[Any] = []
    inits: list[Any] = []
    names: dict[int, str] = {}  # tflite tensor index -> ONNX value name (NCHW activations)

    def const(name: str, value: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(value), name))
        return name

    def weight(i: int) -> np.ndarray:
        if i not in tg.consts:
            raise ValueError(f"tensor {tg.tensor_name(i)!r} is not a constant")
        return tg.consts[i].astype(np.float32)

    (inp,) = g.inputs
    _, h, w, c = tg.shape(inp)
    if tg.g.tensors[inp].type != 0:
        raise ValueError("only float32 inputs are supported")
    nodes.append(
        helper.make_node(
            "Mul",
            ["image", const("inv255", np.array(1 / 255, np.float32))],
            ["scaled"],
            name="scale",
        )
    )
    names[inp] = "scaled"

    for k, op in enumerate(g.operators):
        kind = tg.op_name(op)
        ins = [int(i) for i in op.inputs]
        out = int(op.outputs[0])
        oname = tg.tensor_name(out)
        opts = op.builtinOptions
        if kind == "DEQUANTIZE":
            src = ins[0]
            if src not in tg.consts:
                raise NotImplementedError(f"DEQUANTIZE of a non-constant ({tg.tensor_name(src)})")
            if tg.g.tensors[src].type != 1:
                raise NotImplementedError(
                    f"DEQUANTIZE of type {tg.g.tensors[src].type} (only fp16)"
                )
            tg.consts[out] = tg.consts[src].astype(np.float32)
            continue
        if kind in ("CONV_2D", "DEPTHWISE_CONV_2D"):
            _check_no_activation(opts, oname)
            kern = weight(ins[1])  # conv [O, kh, kw, I]; depthwise [1, kh, kw, C * mult]
            in_c = tg.shape(ins[0])[3]
            if kind == "CONV_2D":
                wt, group = kern.transpose(0, 3, 1, 2), 1
            else:
                wt, group = kern.transpose(3, 0, 1, 2), in_c
            kh, kw = kern.shape[1:3]
            stride = [opts.strideH, opts.strideW]
            dil = [opts.dilationHFactor, opts.dilationWFactor]
            pads = [0, 0, 0, 0]
            if opts.padding == 0:  # SAME
                pads = _same_pads(tg.shape(ins[0])[1:3], [kh, kw], stride, dil)
            inputs = [names[ins[0]], const(oname + "_w", wt)]
            if len(ins) > 2 and ins[2] >= 0:
                inputs.append(const(oname + "_b", weight(ins[2])))
            nodes.append(
                helper.make_node(
                    "Conv",
                    inputs,
                    [oname],
                    name=oname,
                    kernel_shape=[kh, kw],
                    strides=stride,
                    dilations=dil,
                    pads=pads,
                    group=group,
                )
            )
        elif kind == "PRELU":
            slope = weight(ins[1])  # [1, 1, C] (NHWC broadcast) -> [C, 1, 1]
            slope = slope.reshape(-1)[:, None, None]
            # relu(x) * (1 - slope) + x * slope: ONNX Runtime's PRelu with a per-channel slope
            # took half of the model's time; these four simple ops run it ~2x faster in total.
            x = names[ins[0]]
            nodes += [
                helper.make_node("Relu", [x], [oname + "_relu"], name=oname + "_relu"),
                helper.make_node(
                    "Mul",
                    [oname + "_relu", const(oname + "_1m_slope", 1 - slope)],
                    [oname + "_pos"],
                    name=oname + "_pos",
                ),
                helper.make_node(
                    "Mul",
                    [x, const(oname + "_slope", slope)],
                    [oname + "_lin"],
                    name=oname + "_lin",
                ),
                helper.make_node("Add", [oname + "_pos", oname + "_lin"], [oname], name=oname),
            ]
        elif kind == "ADD":
            _check_no_activation(opts, oname)
            nodes.append(
                helper.make_node("Add", [names[ins[0]], names[ins[1]]], [oname], name=oname)
            )
        elif kind == "MAX_POOL_2D":
            _check_no_activation(opts, oname)
            kernel = [opts.filterHeight, opts.filterWidth]
            stride = [opts.strideH, opts.strideW]
            pads = [0, 0, 0, 0]
            if opts.padding == 0:
                # TF SAME max-pooling ignores the padded cells; ONNX MaxPool pads with -inf: same.
                pads = _same_pads(tg.shape(ins[0])[1:3], kernel, stride, [1, 1])
            nodes.append(
                helper.make_node(
                    "MaxPool",
                    [names[ins[0]]],
                    [oname],
                    name=oname,
                    kernel_shape=kernel,
                    strides=stride,
                    pads=pads,
                )
            )
        elif kind == "PAD":
            p = tg.consts[ins[1]].astype(np.int64).reshape(4, 2)[[0, 3, 1, 2]]  # NHWC -> NCHW
            if p[0].any():
                raise NotImplementedError(f"{oname}: padding the batch dimension")
            onnx_pads = np.concatenate([p[:, 0], p[:, 1]])
            nodes.append(
                helper.make_node(
                    "Pad",
                    [names[ins[0]], const(oname + "_pads", onnx_pads)],
                    [oname],
                    name=oname,
                    mode="constant",
                )
            )
        else:
            raise NotImplementedError(f"tflite op {kind} (operator {k}) is not supported")
        names[out] = oname

    lm_idx, flag_idx = (int(i) for i in g.outputs)
    n_lm = int(np.prod(tg.shape(lm_idx)[1:]))
    nodes += [
        helper.make_node("Flatten", [names[lm_idx]], ["landmarks"], name="landmarks", axis=1),
        helper.make_node("Flatten", [names[flag_idx]], ["face_logit"], name="face_logit", axis=1),
        helper.make_node("Sigmoid", ["face_logit"], ["face_prob"], name="face_prob"),
    ]
    graph = helper.make_graph(
        nodes,
        "mediapipe_face_landmark",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", c, h, w])],
        [
            helper.make_tensor_value_info("landmarks", TensorProto.FLOAT, ["N", n_lm]),
            helper.make_tensor_value_info("face_logit", TensorProto.FLOAT, ["N", 1]),
            helper.make_tensor_value_info("face_prob", TensorProto.FLOAT, ["N", 1]),
        ],
        inits,
    )
    return finish(graph, "facecore.convert.tflite")


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write the face mesh as ONNX into `out_dir`; returns its manifest entry (landmarks468)."""
    import onnx

    model = convert(member_path("face_landmark", cache))
    onnx.save(model, str(out_dir / ONNX_FILE))
    return {
        "landmarks468": {
            "file": ONNX_FILE,
            "inputs": [
                {
                    "name": "image",
                    "shape": ["N", 3, CROP, CROP],
                    "layout": "NCHW",
                    "colour": "RGB",
                    "range": "0..255 float32",
                    "normalisation": "inside the graph: x / 255 (the model was trained on [0, 1])",
                }
            ],
            "outputs": [
                {
                    "name": "landmarks",
                    "shape": ["N", 1404],
                    "meaning": "468 points (x, y, z) in pixels of the 192x192 crop; z is depth "
                    "relative to the face centre, same scale as x, negative towards the camera",
                },
                {
                    "name": "face_logit",
                    "shape": ["N", 1],
                    "meaning": "face presence logit (MediaPipe applies a sigmoid, threshold 0.5)",
                },
                {"name": "face_prob", "shape": ["N", 1], "meaning": "sigmoid(face_logit)"},
            ],
            "source": source_entry("face_landmark", cache),
            "licence": "Apache-2.0 (MediaPipe face mesh, Google)",
            "converter": "facecore.convert.tflite",
            "notes": "fp16 weights widened to fp32; graph rebuilt in NCHW; PReLU written as "
            "relu(x) * (1 - a) + x * a. Crop as MediaPipe does: "
            "a square 1.5x the face box, rotated upright by the eye line (facecore.pipeline.landmarks).",
        }
    }
