"""Keras SavedModel -> ONNX through tf2onnx, with the contract's I/O names."""

from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import onnx  # noqa: E402
import tf2onnx  # noqa: E402
from tf2onnx import tf_loader  # noqa: E402

from export.contract import ModelContract  # noqa: E402

TF2ONNX_OPSET = 17
BATCH_DIM = "batch"


def export_savedmodel(savedmodel_dir: Path, contract: ModelContract) -> onnx.ModelProto:
    """Convert the ``serving_default`` signature of a SavedModel."""
    if not (savedmodel_dir / "saved_model.pb").is_file():
        raise FileNotFoundError(f"no SavedModel in {savedmodel_dir}")
    graph_def, inputs, outputs, renames = tf_loader.from_saved_model(
        str(savedmodel_dir),
        None,
        None,
        signatures=["serving_default"],
        return_tensors_to_rename=True,
    )
    model, _ = tf2onnx.convert.from_graph_def(
        graph_def,
        input_names=inputs,
        output_names=outputs,
        opset=TF2ONNX_OPSET,
        tensors_to_rename=renames,
    )
    return name_io(model, contract)


def _rename_value(graph: onnx.GraphProto, old: str, new: str) -> None:
    for node in graph.node:
        node.input[:] = [new if v == old else v for v in node.input]
        node.output[:] = [new if v == old else v for v in node.output]


def name_io(model: onnx.ModelProto, contract: ModelContract) -> onnx.ModelProto:
    """Give the single input and output the contract's names and a named batch.

    tf2onnx names outputs after the signature (``output_0``) and the batch
    dimension ``unk__N``; Triton and the gateway need the contract's names.
    """
    graph = model.graph
    for values, name in (
        (graph.input, contract.input_name),
        (graph.output, contract.output_name),
    ):
        if len(values) != 1:
            found = [v.name for v in values]
            raise ValueError(
                f"expected one graph value to name {name!r}, found {found}"
            )
        value = values[0]
        if value.name != name:
            _rename_value(graph, value.name, name)
            value.name = name
        first = value.type.tensor_type.shape.dim[0]
        if first.dim_param:
            first.dim_param = BATCH_DIM
    return model
