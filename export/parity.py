"""Checks an ONNX model must pass before it is published."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import onnx
import onnxruntime as ort

from export.contract import ONNX_OPSETS, ModelContract
from export.errors import ContractError, ParityError

BATCH_SIZES: tuple[int, ...] = (1, 7, 256)
ATOL = 1e-5

Reference = Callable[[np.ndarray], np.ndarray]


def _dims(value: onnx.ValueInfoProto) -> list[onnx.TensorShapeProto.Dimension]:
    return list(value.type.tensor_type.shape.dim)


def _check_value(value: onnx.ValueInfoProto, name: str, width: int, role: str) -> None:
    if value.name != name:
        raise ContractError(f"{role} is named {value.name!r}, expected {name!r}")
    dtype = value.type.tensor_type.elem_type
    if dtype != onnx.TensorProto.FLOAT:
        kind = onnx.TensorProto.DataType.Name(dtype)
        raise ContractError(f"{role} {name!r} is {kind}, expected FLOAT")
    dims = _dims(value)
    if len(dims) != 2:
        raise ContractError(f"{role} {name!r} has rank {len(dims)}, expected 2")
    batch, columns = dims
    if batch.HasField("dim_value") or not batch.dim_param:
        raise ContractError(
            f"{role} {name!r} has a fixed batch dimension "
            f"({batch.dim_value or 'unnamed'}); a symbolic one is required"
        )
    if columns.dim_value != width:
        raise ContractError(
            f"{role} {name!r} has {columns.dim_value or columns.dim_param} "
            f"columns, expected {width}"
        )


def check_contract(model: onnx.ModelProto, contract: ModelContract) -> None:
    """The ONNX checker, the opset and the I/O names, types and shapes."""
    try:
        onnx.checker.check_model(model, full_check=True)
    except onnx.checker.ValidationError as exc:
        raise ContractError(f"{contract.name}: ONNX checker failed: {exc}") from exc
    opset = next(
        (o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None
    )
    if opset not in ONNX_OPSETS:
        raise ContractError(
            f"{contract.name}: opset {opset}, expected one of {ONNX_OPSETS}"
        )
    graph = model.graph
    initialisers = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in initialisers]
    if len(inputs) != 1 or len(graph.output) != 1:
        raise ContractError(
            f"{contract.name}: expected one input and one output, found "
            f"{[i.name for i in inputs]} and {[o.name for o in graph.output]}"
        )
    _check_value(inputs[0], contract.input_name, contract.num_features, "input")
    _check_value(graph.output[0], contract.output_name, contract.output_width, "output")


def _rows(sample: np.ndarray, count: int) -> np.ndarray:
    reps = -(-count // len(sample))
    return np.ascontiguousarray(np.tile(sample, (reps, 1))[:count], dtype=np.float32)


def check_parity(
    model: onnx.ModelProto,
    contract: ModelContract,
    reference: Reference,
    sample: np.ndarray,
    batch_sizes: Sequence[int] = BATCH_SIZES,
    atol: float = ATOL,
) -> dict[str, float]:
    """Run ONNX Runtime and the framework model on real rows; max |diff| per batch.

    Running batches of several sizes also proves the batch dimension is free.
    """
    if sample.ndim != 2 or sample.shape[1] != contract.num_features or not len(sample):
        raise ParityError(f"{contract.name}: bad parity sample of shape {sample.shape}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    session = ort.InferenceSession(
        model.SerializeToString(), options, providers=["CPUExecutionProvider"]
    )
    diffs: dict[str, float] = {}
    for size in batch_sizes:
        rows = _rows(sample, size)
        try:
            (got,) = session.run([contract.output_name], {contract.input_name: rows})
        except Exception as exc:  # onnxruntime raises its own exception types
            raise ParityError(
                f"{contract.name}: batch {size} failed to run: {exc}"
            ) from exc
        want = np.asarray(reference(rows), dtype=np.float32).reshape(size, -1)
        if got.shape != (size, contract.output_width) or got.dtype != np.float32:
            raise ParityError(
                f"{contract.name}: batch {size} gave {got.dtype}{list(got.shape)}, "
                f"expected float32[{size}, {contract.output_width}]"
            )
        if not np.all(np.isfinite(got)) or got.min() < 0.0 or got.max() > 1.0:
            raise ParityError(f"{contract.name}: batch {size} scores leave [0, 1]")
        diff = float(np.max(np.abs(got - want)))
        if not diff <= atol:
            raise ParityError(
                f"{contract.name}: ONNX and framework differ by {diff:.3g} at batch "
                f"{size} (tolerance {atol:g}); was the model exported in training mode?"
            )
        diffs[str(size)] = diff
    return diffs
