"""MTCNN's three networks (P-Net, R-Net, O-Net) rewritten to FaceCore's model contract, and faster.

The source graphs (keras2onnx exports of ipazc/mtcnn, which carry the original Caffe weights) want
an RGB image normalised to (x - 127.5) / 128, laid out NHWC and *transposed* (N, W, H, C): the
Caffe models were trained in MATLAB's column-major frame. Our graphs take a plain OpenCV image as
NCHW **BGR** float32 0..255, and all of the above lives inside the weights, exactly:

- the normalisation is folded into the first convolution (all its padding is VALID, so
  conv(W, (x - m) * s) = conv(W * s, x) - m * s * sum(W));
- BGR: the first convolution's input channels are reversed;
- the W/H transpose: every operator is a convolution, pooling or per-channel op with square kernels
  and equal strides, which commute with a spatial transpose once each kernel is transposed; the
  flatten before R-Net's and O-Net's dense layers keeps the source's (W, H, C) order;
- PRelu (per-channel slopes a) becomes a*x + (1 - a)*Relu(x): ONNX Runtime's PRelu broadcasts
  slowly over NCHW and blocks its NCHWc convolution layout; the Mul/Relu/Add form runs in it;
- the two-way softmax (background, face) becomes Sigmoid(logit_face - logit_background), with the
  difference folded into the last layer's weights: one face-probability channel;
- MaxPool's auto_pad=SAME_UPPER becomes the explicit `pads` of the same windows (`same_upper_pads`):
  onnx2torch, which makes the TorchScript engines, converts no auto_pad.

Outputs: P-Net `bbox_reg` (N, 4, H', W') and `face_prob` (N, 1, H', W') per 12x12 window at stride 2,
H' = ceil((H - 2) / 2) - 4, in the image's orientation. R-Net/O-Net `bbox_reg` (N, 4) = (dx1, dy1,
dx2, dy2) as fractions of the box side, `face_prob` (N, 1), O-Net `landmarks` (N, 10) = x of 5 points
then y of 5 points as fractions of the box: left eye, right eye, nose, left mouth corner, right
mouth corner ("left" = image left).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from facecore.convert.contract import finish
from facecore.convert.sources import member_path, source_entry

MEAN = 127.5
SCALE = 1.0 / 128.0
INPUT = "image"
INPUT_SIZE = {"mtcnn_pnet": None, "mtcnn_rnet": 24, "mtcnn_onet": 48}

# Source output -> (our output, channels, meaning). The softmax outputs become `face_prob`.
OUTPUTS: dict[str, dict[str, tuple[str, int, str]]] = {
    "mtcnn_pnet": {
        "conv2d_4": (
            "bbox_reg",
            4,
            "per 12x12 window (stride 2): dx1, dy1, dx2, dy2 / window side",
        ),
        "softmax": ("face_prob", 1, "per window: face probability"),
    },
    "mtcnn_rnet": {
        "dense_2": ("bbox_reg", 4, "dx1, dy1, dx2, dy2 as fractions of the crop side"),
        "softmax_1": ("face_prob", 1, "face probability"),
    },
    "mtcnn_onet": {
        "dense_5": ("bbox_reg", 4, "dx1, dy1, dx2, dy2 as fractions of the crop side"),
        "dense_6": (
            "landmarks",
            10,
            (
                "x1..x5 then y1..y5 as fractions of the crop: left eye, right eye, nose, "
                "left mouth corner, right mouth corner (image left first)"
            ),
        ),
        "softmax_2": ("face_prob", 1, "face probability"),
    },
}


def _attrs(node: onnx.NodeProto) -> dict[str, Any]:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


class _Rewriter:
    """Walks the source graph once, emitting the rewritten nodes and initializers."""

    def __init__(self, model: onnx.ModelProto, role: str) -> None:
        self.role = role
        self.src = {i.name: numpy_helper.to_array(i) for i in model.graph.initializer}
        self.nodes: list[onnx.NodeProto] = []
        self.inits: dict[str, onnx.TensorProto] = {}
        self.producer = {o: n for n in model.graph.node for o in n.output}
        self.graph = model.graph
        inferred = onnx.shape_inference.infer_shapes(model).graph.value_info
        self.shapes = {
            v.name: [d.dim_value or None for d in v.type.tensor_type.shape.dim] for v in inferred
        }

    def const(self, name: str, value: np.ndarray) -> str:
        self.inits[name] = numpy_helper.from_array(np.ascontiguousarray(value, np.float32), name)
        return name

    def node(self, op: str, inputs: list[str], outputs: list[str], **attrs: Any) -> None:
        self.nodes.append(helper.make_node(op, inputs, outputs, name=outputs[0], **attrs))

    def run(self) -> onnx.GraphProto:
        g = self.graph
        first = g.node[0]
        if first.op_type != "Transpose" or _attrs(first)["perm"] != [0, 3, 1, 2]:
            raise ValueError(f"{self.role}: expected the graph to start with NHWC->NCHW Transpose")
        alias = {first.output[0]: INPUT}
        softmax_out = next(k for k, v in OUTPUTS[self.role].items() if v[0] == "face_prob")
        rename = {k: v[0] for k, v in OUTPUTS[self.role].items()}
        first_conv = True
        # The softmax's input chain (Add of a dense layer, or a Conv and a Transpose) is replaced.
        skip = self._softmax_chain(softmax_out)
        for n in g.node[1:]:
            if n.output[0] in skip:
                continue
            ins = [alias.get(i, i) for i in n.input]
            outs = [rename.get(o, o) for o in n.output]
            if n.op_type == "Conv":
                w, b = self._conv_weights(n, first_conv)
                first_conv = False
                self._conv(ins[0], w, b, outs[0], n)
            elif n.op_type == "PRelu":
                slope = self.src[n.input[1]]
                o = outs[0]
                self.node("Relu", [ins[0]], [o + "/relu"])
                self.node("Mul", [o + "/relu", self.const(o + "/1-a", 1.0 - slope)], [o + "/pos"])
                self.node("Mul", [ins[0], self.const(o + "/a", slope)], [o + "/lin"])
                self.node("Add", [o + "/pos", o + "/lin"], [o])
            elif n.op_type == "Transpose":
                if self.role == "mtcnn_pnet":  # the output transposes: ours is NCHW already
                    self.node("Identity", ins, outs)
                else:  # before Flatten: (N, C, H, W) -> (N, W, H, C), the source's (transposed) order
                    self.node("Transpose", ins, outs, perm=[0, 3, 2, 1])
            elif n.op_type == "Softmax":
                self._face_prob()
            elif n.op_type == "MaxPool":
                self._max_pool(ins[0], outs[0], n)
            else:
                consts = [self.const(i, self.src[i]) if i in self.src else i for i in ins]
                self.node(n.op_type, consts, outs, **_attrs(n))
        size = INPUT_SIZE[self.role]
        in_shape: list[Any] = ["N", 3, "H", "W"] if size is None else ["N", 3, size, size]
        spatial: list[Any] = ["Hout", "Wout"] if size is None else []
        outputs = [
            helper.make_tensor_value_info(name, TensorProto.FLOAT, ["N", ch, *spatial])
            for name, ch, _ in OUTPUTS[self.role].values()
        ]
        return helper.make_graph(
            self.nodes,
            self.role,
            [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, in_shape)],
            outputs,
            initializer=list(self.inits.values()),
        )

    def _softmax_chain(self, softmax_out: str) -> set[str]:
        """Outputs of the nodes from the face/background layer (Conv or MatMul) up to the softmax,
        which `_face_prob` replaces."""
        chain = set()
        n = self.producer[self.producer[softmax_out].input[0]]
        while n.op_type not in ("Conv", "MatMul"):
            chain.add(n.output[0])
            n = self.producer[n.input[0]]
        chain.add(n.output[0])
        self.logits_layer = n
        return chain

    def _conv_weights(self, n: onnx.NodeProto, first: bool) -> tuple[np.ndarray, np.ndarray]:
        w = self.src[n.input[1]].transpose(0, 1, 3, 2)  # spatial transpose: see the module doc
        b = self.src[n.input[2]]
        if first:
            w = w[:, ::-1] * SCALE  # RGB -> BGR, then fold (x - MEAN) * SCALE
            b = b - MEAN * w.sum(axis=(1, 2, 3))
        return w, b

    def _conv(self, x: str, w: np.ndarray, b: np.ndarray, out: str, src: onnx.NodeProto) -> None:
        a = _attrs(src)
        if a.get("auto_pad", b"VALID") != b"VALID" or a.get("group", 1) != 1:
            raise ValueError(f"{self.role}: {src.name} is not a plain VALID convolution")
        kh, kw = w.shape[2:]
        self.node(
            "Conv",
            [x, self.const(out + "/w", w), self.const(out + "/b", b)],
            [out],
            kernel_shape=[kh, kw],
            strides=list(a["strides"]),
        )

    def _max_pool(self, x: str, out: str, src: onnx.NodeProto) -> None:
        """MaxPool with explicit `pads` in place of the source's auto_pad (onnx2torch, and so the
        TorchScript engines, cannot convert SAME_UPPER): the same windows and so the same output."""
        a = _attrs(src)
        pad = a.pop("auto_pad", b"NOTSET")
        if pad == b"SAME_UPPER":
            a["pads"] = same_upper_pads(
                a["kernel_shape"], a["strides"], self._spatial(src.input[0])
            )
        elif pad not in (b"VALID", b"NOTSET"):
            raise ValueError(f"{self.role}: {src.name} has auto_pad {pad!r}")
        self.node("MaxPool", [x], [out], **a)

    def _spatial(self, name: str) -> list[int | None]:
        """The source tensor's (H, W) in our frame, None where it depends on the input size."""
        return self.shapes[name][2:][::-1]  # the source's NCHW holds (W, H): see the module doc

    def _face_prob(self) -> None:
        """Sigmoid(face - background logit), the difference folded into the logits layer."""
        layer = self.logits_layer
        if layer.op_type == "Conv":  # P-Net's 1x1 conv, (2, C, 1, 1)
            w, b = self._conv_weights(layer, first=False)
            self._conv(layer.input[0], w[1:2] - w[0:1], b[1:2] - b[0:1], "face_logit", layer)
        else:  # dense: MatMul (C, 2) then Add (2,)
            add = next(n for n in self.graph.node if n.input and n.input[0] == layer.output[0])
            w, b = self.src[layer.input[1]], self.src[add.input[1]]
            self.node(
                "MatMul", [layer.input[0], self.const("face_w", w[:, 1:2] - w[:, 0:1])], ["fw"]
            )
            self.node("Add", ["fw", self.const("face_b", b[1:2] - b[0:1])], ["face_logit"])
        self.node("Sigmoid", ["face_logit"], ["face_prob"])


def same_upper_pads(kernel: list[int], strides: list[int], sizes: list[int | None]) -> list[int]:
    """ONNX `pads` (all begins, then all ends) that give a pooling exactly auto_pad=SAME_UPPER's
    windows: output ceil(size / stride), `total` = (output - 1) * stride + kernel - size padding,
    total // 2 of it first. A size not known until run time (P-Net's) needs a pad that suits every
    size: `total` then runs over kernel - stride .. kernel - 1, and begin = (kernel - 1) // 2 with
    end = kernel - 1 - begin gives the same windows whenever total // 2 is that same begin for all
    of them (and more padding at the end changes no window: a window never reaches it)."""
    begins, ends = [], []
    for k, s, n in zip(kernel, strides, sizes):
        if n is None:
            begin = (k - 1) // 2
            if max(k - s, 0) // 2 != begin:
                raise ValueError(f"SAME_UPPER with kernel {k}, stride {s} needs a known size")
            end = k - 1 - begin
        else:
            total = max((-(-n // s) - 1) * s + k - n, 0)
            begin, end = total // 2, total - total // 2
        begins.append(begin)
        ends.append(end)
    return begins + ends


def rewrite(model: onnx.ModelProto, role: str) -> onnx.ModelProto:
    """The source `model` of `role` rewritten to the contract (see the module doc)."""
    graph = _Rewriter(model, role).run()
    return finish(graph, "facecore")


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write mtcnn_{pnet,rnet,onet}.onnx into `out_dir`; return their manifest entries."""
    entries: dict[str, dict[str, Any]] = {}
    for role, size in INPUT_SIZE.items():
        model = rewrite(onnx.load(str(member_path(role, cache))), role)
        name = f"{role}.onnx"
        onnx.save(model, str(out_dir / name))
        hw: list[Any] = ["H", "W"] if size is None else [size, size]
        spatial: list[Any] = ["Hout", "Wout"] if size is None else []
        entries[role] = {
            "file": name,
            "inputs": [
                {
                    "name": INPUT,
                    "shape": ["N", 3, *hw],
                    "layout": "NCHW",
                    "colour": "BGR",
                    "range": "0..255 float32",
                    "normalisation": "inside the graph: (x - 127.5) / 128 folded into the first "
                    "convolution, as is the W/H transpose the Caffe weights were trained with",
                }
            ],
            "outputs": [
                {"name": ours, "shape": ["N", ch, *spatial], "meaning": meaning}
                for ours, ch, meaning in OUTPUTS[role].values()
            ],
            "source": source_entry(role, cache),
            "licence": "MIT (ipazc/mtcnn; weights from Zhang et al. 2016)",
            "converter": "facecore.convert.mtcnn",
            "notes": (
                "fully convolutional: any H, W >= 12; Hout = ceil((H - 2) / 2) - 4"
                if size is None
                else f"input: a square box of the image resized to {size}x{size}"
            ),
        }
    return entries
