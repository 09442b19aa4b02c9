"""What every converted model shares: ONNX opset 17 and IR version 8 (readable by ONNX Runtime
1.15 and later), with the full checker run before it is written."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:  # onnx is imported only when a model is built (the "models" extra)
    import onnx

OPSET = 17
IR_VERSION = 8


def finish(graph: onnx.GraphProto, producer: str) -> onnx.ModelProto:
    """The checked model of `graph`, named after its `producer`."""
    import onnx
    from onnx import helper

    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name=producer
    )
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model, full_check=True)
    return model
