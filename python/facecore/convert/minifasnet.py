"""MiniFASNet silent liveness (minivision-ai Silent-Face-Anti-Spoofing, Apache-2.0): the user brings it.

No registry package ships these weights, so `make models LIVENESS_MODEL_DIR=dir` (tools/build_models.py
--liveness dir) installs them from a directory holding the ONNX exports of the two upstream models:

    2.7_80x80_MiniFASNetV2.onnx        crop scale 2.7
    4_0_0_80x80_MiniFASNetV1SE.onnx    crop scale 4.0

Only the exports we checked are accepted (pinned sha256): scores and our calibration belong to those
weights. Each graph is adapted to FaceCore's contract: a dynamic batch (the export fixes it to 1,
including in its one Reshape) and a Softmax appended, so the output is the probabilities of
(spoof type 1, real, spoof type 2). Inputs stay as upstream trained them: 80x80 BGR crops, raw 0..255.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facecore.convert.contract import finish
from facecore.convert.sources import sha256_file

INPUT = "crops"
OUTPUT = "probabilities"
# role -> (upstream file, its sha256, crop scale, our file)
MODELS = {
    "liveness_v2": (
        "2.7_80x80_MiniFASNetV2.onnx",
        "4433e871ef03f6c4c13de1757e63dcd69db14b6d7d9cff2319cb274c0f6dbecb",
        2.7,
        "minifasnet_v2.onnx",
    ),
    "liveness_v1se": (
        "4_0_0_80x80_MiniFASNetV1SE.onnx",
        "a8e67ffbaf39fa74c3b2ed673b530fcfb2f47379d0f26a52b71c2fc6473ec20f",
        4.0,
        "minifasnet_v1se.onnx",
    ),
}
SIZE = 80
REAL = 1  # class index of a live face


class LivenessSourceError(ValueError):
    pass


def adapt(original: onnx.ModelProto) -> onnx.ModelProto:
    """`original` with a dynamic batch and a Softmax on its logits."""
    graph = original.graph
    (old_in,) = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    (old_out,) = graph.output
    dims = [d.dim_value for d in old_in.type.tensor_type.shape.dim]
    if dims != [1, 3, SIZE, SIZE]:
        raise LivenessSourceError(f"expected a [1, 3, {SIZE}, {SIZE}] input, got {dims}")
    inits = list(graph.initializer)
    reshapes = [n for n in graph.node if n.op_type == "Reshape"]
    for node in reshapes:  # [1, -1] -> [0, -1]: keep the batch
        shape_name = node.input[1]
        for i, t in enumerate(inits):
            if t.name == shape_name:
                shape = numpy_helper.to_array(t)
                if shape.tolist() != [1, -1]:
                    raise LivenessSourceError(f"unexpected Reshape target {shape.tolist()}")
                inits[i] = numpy_helper.from_array(np.array([0, -1], np.int64), t.name)
    nodes = []
    for node in graph.node:
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = [INPUT if i == old_in.name else i for i in node.input]
        nodes.append(node)
    nodes.append(helper.make_node("Softmax", [old_out.name], [OUTPUT], name=OUTPUT, axis=1))
    n_classes = old_out.type.tensor_type.shape.dim[1].dim_value
    new_graph = helper.make_graph(
        nodes,
        graph.name,
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", 3, SIZE, SIZE])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", n_classes])],
        inits,
    )
    return finish(new_graph, "facecore.convert.minifasnet")


def build(source_dir: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Install both models from `source_dir` into `out_dir` (roles liveness_v2, liveness_v1se)."""
    entries: dict[str, dict[str, Any]] = {}
    for role, (name, digest, scale, file) in MODELS.items():
        src = Path(source_dir) / name
        if not src.is_file():
            raise LivenessSourceError(
                f"{src} is missing: the liveness directory must hold {name} (see README, Liveness)"
            )
        got = sha256_file(src)
        if got != digest:
            raise LivenessSourceError(
                f"{src} has sha256 {got}, not the checked export {digest}: refusing unknown weights"
            )
        onnx.save(adapt(onnx.load(src)), out_dir / file)
        entries[role] = {
            "file": file,
            "inputs": [
                {
                    "name": INPUT,
                    "shape": ["N", 3, SIZE, SIZE],
                    "layout": "NCHW",
                    "colour": "BGR",
                    "range": "0..255 float32, no normalisation",
                    "crop": f"the face box enlarged {scale}x about its centre, kept inside the "
                    "image, resized to 80x80",
                }
            ],
            "outputs": [
                {
                    "name": OUTPUT,
                    "shape": ["N", 3],
                    "meaning": "softmax over (spoof, real, spoof); class 1 is a live face",
                }
            ],
            "crop_scale": scale,
            "source": {
                "package": "minivision-ai/Silent-Face-Anti-Spoofing (user-supplied)",
                "path": name,
                "sha256": digest,
                "licence": "Apache-2.0",
            },
            "licence": "Apache-2.0 (minivision-ai Silent-Face-Anti-Spoofing)",
            "converter": "facecore.convert.minifasnet",
            "notes": "ONNX export of the upstream .pth; batch made dynamic, softmax appended.",
        }
    return entries
