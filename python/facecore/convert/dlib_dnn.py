"""dlib's face recogniser (`dlib_face_recognition_resnet_model_v1.dat`) as ONNX, parsed by us.

The .dat is dlib's own serialisation of a `loss_metric<fc_no_bias<128, avg_pool_everything<...>>>`
ResNet-29. We read it with numpy only (no dlib at build time) and emit an equivalent ONNX graph.
Facts of the format that matter (checked against the file, see tests/facecore/test_convert_dlib.py):

- Integers are variable length: one header byte (low nibble = byte count, bit 7 = sign), then the
  magnitude's bytes little-endian. Scalar floats are an int64 mantissa and an int16 exponent, both
  as such integers. Bools are the characters '0'/'1'. Tensors are a version, 4 shape ints and raw
  little-endian float32 data.
- The network is written outermost first as nested `add_layer` headers (version 2: a layer, version 1:
  a tag or skip), then the input layer, then each layer's parameters innermost first.
- dlib pads a conv or pool by k/2 only when its stride is 1, so the stride-2 convs and pools here are
  unpadded, and a downsampling block's two branches can differ in size (8 -> 3 vs 4). dlib's
  `add_prev` then zero-extends the smaller tensor in channels and at the bottom/right; the ONNX graph
  spells that out with Pad nodes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from facecore.convert.contract import finish
from facecore.convert.sources import member_path, source_entry

MEMBER = "dlib_resnet"
OUT_FILE = "dlib_resnet128.onnx"


class DlibFormatError(ValueError):
    """The bytes are not the dlib serialisation we expect (truncated, other network, corrupt)."""


class DlibReader:
    """Sequential reader of dlib's `serialize()` primitives over a bytes object."""

    def __init__(self, data: bytes, name: str = "<bytes>") -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.data):
            raise DlibFormatError(
                f"{self.name}: truncated at byte {self.pos} of {len(self.data)} (wanted {n} more)"
            )

    def fail(self, what: str) -> DlibFormatError:
        return DlibFormatError(f"{self.name}: {what} at byte {self.pos}")

    def read_int(self) -> int:
        self._need(1)
        head = self.data[self.pos]
        n = head & 0x0F
        if n > 8 or head & 0x70:
            raise self.fail(f"bad integer header 0x{head:02x}")
        self._need(1 + n)
        value = int.from_bytes(self.data[self.pos + 1 : self.pos + 1 + n], "little")
        self.pos += 1 + n
        return -value if head & 0x80 else value

    def read_float(self) -> float:
        mantissa = self.read_int()
        exponent = self.read_int()
        if abs(exponent) >= 32000:  # dlib's markers for inf / nan: never in these models
            raise self.fail(f"non-finite scalar (exponent {exponent})")
        return math.ldexp(mantissa, exponent)

    def read_bool(self) -> bool:
        self._need(1)
        c = self.data[self.pos : self.pos + 1]
        if c not in (b"0", b"1"):
            raise self.fail(f"bad bool {c!r}")
        self.pos += 1
        return c == b"1"

    def read_str(self) -> str:
        n = self.read_int()
        if n < 0:
            raise self.fail("negative string length")
        self._need(n)
        s = self.data[self.pos : self.pos + n]
        self.pos += n
        try:
            return s.decode("ascii")
        except UnicodeDecodeError:
            raise self.fail(f"non-text string {s[:20]!r}") from None

    def expect(self, value: int, what: str) -> None:
        got = self.read_int()
        if got != value:
            raise self.fail(f"{what}: expected {value}, got {got}")

    def tensor(self) -> np.ndarray:
        """A dlib tensor (version 2): shape (n, k, nr, nc) then float32 data."""
        self.expect(2, "tensor version")
        shape = tuple(self.read_int() for _ in range(4))
        if min(shape) < 0:
            raise self.fail(f"bad tensor shape {shape}")
        count = int(np.prod(shape))
        self._need(4 * count)
        a = np.frombuffer(self.data, "<f4", count, self.pos).reshape(shape).astype(np.float32)
        self.pos += 4 * count
        return a

    def alias(self) -> tuple[int, ...]:
        """An alias_tensor (version 1): a view's shape into a layer's parameter tensor."""
        self.expect(1, "alias_tensor version")
        return tuple(self.read_int() for _ in range(4))

    def at_end(self) -> bool:
        return self.pos == len(self.data)


@dataclass
class Layer:
    kind: str  # con, affine, relu, max_pool, avg_pool, add_prev, fc, tag, skip
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class DlibNet:
    mean_rgb: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[Layer]  # input to output


def _details(r: DlibReader) -> Layer:
    """One layer's parameters, dispatched on dlib's version string."""
    name = r.read_str()
    if name == "con_4":
        params = r.tensor().reshape(-1)
        nf, nr, nc, sy, sx, py, px = (r.read_int() for _ in range(7))
        fshape = r.alias()
        bshape = r.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers
            r.read_float()
        if fshape[0] != nf or bshape[1] != nf or fshape[2:] != (nr, nc):
            raise r.fail(f"inconsistent con_ shapes {fshape} {bshape}")
        nw = int(np.prod(fshape))
        if params.size != nw + nf:
            raise r.fail(f"con_ has {params.size} parameters, expected {nw + nf}")
        return Layer(
            "con",
            {
                "w": params[:nw].reshape(fshape),
                "b": params[nw:],
                "stride": (sy, sx),
                "pad": (py, px),
            },
        )
    if name == "affine_":
        params = r.tensor().reshape(-1)
        gshape = r.alias()
        r.alias()
        mode = r.read_int()
        if mode != 0:  # 0 = CONV_MODE: one gamma/beta per channel
            raise r.fail(f"affine_ mode {mode} unsupported")
        k = gshape[1]
        if params.size != 2 * k:
            raise r.fail(f"affine_ has {params.size} parameters, expected {2 * k}")
        return Layer("affine", {"gamma": params[:k], "beta": params[k:]})
    if name == "relu_":
        return Layer("relu")
    if name in ("max_pool_2", "avg_pool_2"):
        nr, nc, sy, sx, py, px = (r.read_int() for _ in range(6))
        return Layer(name[:-2], {"size": (nr, nc), "stride": (sy, sx), "pad": (py, px)})
    if name == "add_prev_":
        return Layer("add_prev")
    if name == "fc_2":
        n_out = r.read_int()
        n_in = r.read_int()
        params = r.tensor().reshape(-1)
        wshape = r.alias()
        bshape = r.alias()
        bias_mode = r.read_int()
        for _ in range(4):
            r.read_float()
        if bias_mode != 1 or any(bshape) or wshape[:2] != (n_in, n_out):
            raise r.fail(f"fc_ expected without bias: mode {bias_mode}, shapes {wshape} {bshape}")
        return Layer("fc", {"w": params[: n_in * n_out].reshape(n_in, n_out)})
    raise r.fail(f"unsupported layer {name!r}")


def _trailer(r: DlibReader) -> None:
    """The training state add_layer writes after its layer: 3 flags, 3 (empty) tensors."""
    for _ in range(3):
        r.read_bool()
    for _ in range(3):
        r.tensor()


def parse(data: bytes, name: str = "<bytes>") -> DlibNet:
    """The layers of dlib's face recognition network from the bytes of its .dat file."""
    r = DlibReader(data, name)
    r.expect(1, "add_loss_layer version")
    loss = r.read_str()
    if loss != "loss_metric_2":
        raise r.fail(f"expected a loss_metric network, found {loss!r}")
    r.read_float()  # margin
    r.read_float()  # distance threshold
    headers: list[int] = []
    while True:
        v = r.read_int()
        if v == 3:  # the innermost add_layer, which holds the input layer
            break
        if v not in (1, 2):
            raise r.fail(f"unexpected layer header version {v}")
        headers.append(v)
    if r.read_str() != "input_rgb_image_sized":
        raise r.fail("expected input_rgb_image_sized")
    mean = (r.read_float(), r.read_float(), r.read_float())
    size = (r.read_int(), r.read_int())
    layers = [_details(r)]
    _trailer(r)
    r.expect(1, "sample expansion factor")
    # Outer headers, innermost first. A lone version-1 header is a tag; two in a row are
    # `skip1<tag2<...>>` of a downsampling block (tag2 marks the block, skip1 jumps back to tag1).
    inner = headers[::-1]
    i = 0
    while i < len(inner):
        if inner[i] == 2:
            layers.append(_details(r))
            _trailer(r)
            i += 1
        elif i + 1 < len(inner) and inner[i + 1] == 1:
            layers += [Layer("tag", {"id": 2}), Layer("skip", {"id": 1})]
            i += 2
        else:
            layers.append(Layer("tag", {"id": 1}))
            i += 1
    if not r.at_end():
        raise r.fail("trailing bytes after the network")
    return DlibNet(mean, size, layers)


# ------------------------------------------------------------------------------------------------
# ONNX


def _out_size(n: int, k: int, s: int, p: int) -> int:
    return 1 + (n + 2 * p - k) // s


def to_onnx(net: DlibNet) -> Any:
    """An ONNX model computing dlib's raw 128-d descriptor for [N,3,H,W] float RGB in 0..255."""
    from onnx import TensorProto, helper, numpy_helper

    nodes: list[Any] = []
    inits: list[Any] = []
    counter = [0]

    def new(prefix: str) -> str:
        counter[0] += 1
        return f"{prefix}_{counter[0]}"

    def const(prefix: str, a: np.ndarray) -> str:
        n = new(prefix)
        inits.append(numpy_helper.from_array(np.ascontiguousarray(a), n))
        return n

    def node(op: str, inputs: list[str], **attrs: Any) -> str:
        out = new(op.lower())
        nodes.append(helper.make_node(op, inputs, [out], name=out, **attrs))
        return out

    h, w = net.input_size
    mean = np.asarray(net.mean_rgb, np.float32).reshape(1, 3, 1, 1)
    # dlib: (x - mean) / 256, exactly (a power of two, so the multiply is the same rounding).
    x = node("Sub", ["image", const("mean", mean)])
    x = node("Mul", [x, const("scale", np.array(1 / 256, np.float32))])
    shape = (3, h, w)  # (channels, rows, cols) of the current tensor, tracked to place the Pads
    tags: dict[int, tuple[str, tuple[int, int, int]]] = {}
    add_from = 1
    layers = net.layers
    i = 0
    while i < len(layers):
        layer = layers[i]
        p = layer.params
        if layer.kind == "con":
            wt, bias = p["w"], p["b"]
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            if nxt is not None and nxt.kind == "affine":
                # Fold the per-channel affine that follows every conv into its weights.
                g, beta = nxt.params["gamma"], nxt.params["beta"]
                wt = wt * g[:, None, None, None]
                bias = bias * g + beta
                i += 1
            (kh, kw), (sy, sx), (py, px) = wt.shape[2:], p["stride"], p["pad"]
            x = node(
                "Conv",
                [x, const("w", wt.astype(np.float32)), const("b", bias.astype(np.float32))],
                kernel_shape=[kh, kw],
                strides=[sy, sx],
                pads=[py, px, py, px],
            )
            shape = (wt.shape[0], _out_size(shape[1], kh, sy, py), _out_size(shape[2], kw, sx, px))
        elif layer.kind == "affine":
            k = p["gamma"].size
            x = node("Mul", [x, const("gamma", p["gamma"].reshape(1, k, 1, 1))])
            x = node("Add", [x, const("beta", p["beta"].reshape(1, k, 1, 1))])
        elif layer.kind == "relu":
            x = node("Relu", [x])
        elif layer.kind in ("max_pool", "avg_pool"):
            (kh, kw), (sy, sx), (py, px) = p["size"], p["stride"], p["pad"]
            if kh == 0 and kw == 0:  # avg_pool_everything
                x = node("GlobalAveragePool", [x])
                shape = (shape[0], 1, 1)
            else:
                if py or px:
                    raise DlibFormatError("padded pooling is not supported")
                op = "MaxPool" if layer.kind == "max_pool" else "AveragePool"
                x = node(op, [x], kernel_shape=[kh, kw], strides=[sy, sx])
                shape = (shape[0], _out_size(shape[1], kh, sy, 0), _out_size(shape[2], kw, sx, 0))
        elif layer.kind == "tag":
            tags[p["id"]] = (x, shape)
            add_from = p["id"]
        elif layer.kind == "skip":
            x, shape = tags[p["id"]]
        elif layer.kind == "add_prev":
            y, yshape = tags[add_from]
            full = (max(shape[0], yshape[0]), max(shape[1], yshape[1]), max(shape[2], yshape[2]))

            def pad_to(t: str, s: tuple[int, int, int], full: tuple[int, int, int]) -> str:
                if s == full:
                    return t
                pads = [0, 0, 0, 0, 0, full[0] - s[0], full[1] - s[1], full[2] - s[2]]
                return node("Pad", [t, const("pads", np.array(pads, np.int64))], mode="constant")

            x = node("Add", [pad_to(x, shape, full), pad_to(y, yshape, full)])
            shape = full
        elif layer.kind == "fc":
            x = node("Flatten", [x], axis=1)
            x = node("MatMul", [x, const("fc", p["w"].astype(np.float32))])
        else:
            raise DlibFormatError(f"layer kind {layer.kind} not handled")
        i += 1
    nodes[-1].output[0] = "embedding"

    graph = helper.make_graph(
        nodes,
        "dlib_resnet128",
        [helper.make_tensor_value_info("image", TensorProto.FLOAT, ["N", 3, h, w])],
        [helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["N", 128])],
        inits,
    )
    return finish(graph, "facecore.convert.dlib_dnn")


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Convert the pinned dlib recogniser into `out_dir/dlib_resnet128.onnx`; manifest entries."""
    src = member_path(MEMBER, cache)
    net = parse(src.read_bytes(), str(src))
    model = to_onnx(net)
    out = out_dir / OUT_FILE
    tmp = out.with_suffix(".tmp")
    tmp.write_bytes(model.SerializeToString())
    tmp.replace(out)
    mean = ", ".join(f"{m:.3f}" for m in net.mean_rgb)
    return {
        "recognizer": {
            "file": OUT_FILE,
            "inputs": [
                {
                    "name": "image",
                    "shape": ["N", 3, net.input_size[0], net.input_size[1]],
                    "layout": "NCHW",
                    "colour": "RGB",
                    "range": "0..255 float32",
                    "normalisation": f"inside the graph: (x - [{mean}]) / 256",
                }
            ],
            "outputs": [
                {
                    "name": "embedding",
                    "shape": ["N", 128],
                    "meaning": "dlib's raw face descriptor, NOT unit-normalised (norms are near 1.4); "
                    "dlib compares these with euclidean distance, threshold 0.6",
                }
            ],
            "source": source_entry(MEMBER, cache),
            "licence": "CC0 (public domain), Davis E. King",
            "converter": "facecore.convert.dlib_dnn",
            "notes": "dlib ResNet-29 face recogniser; input is a 150x150 chip from "
            "facecore.pipeline.align.extract_chips (dlib's get_face_chip geometry, padding 0.25). "
            "Conv+affine folded; dlib's zero-padding add_prev made explicit with Pad nodes.",
        }
    }
