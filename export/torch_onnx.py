"""PyTorch module -> ONNX with a symbolic batch dimension."""

from __future__ import annotations

import warnings

import numpy as np
import onnx
import torch

from export.contract import ModelContract

TORCH_OPSET = 18  # the dynamo exporter's lowest; asking for 17 yields 18 anyway


def export_torch(
    module: torch.nn.Module,
    example: np.ndarray,
    contract: ModelContract,
    *,
    dynamic_batch: bool = True,
) -> onnx.ModelProto:
    """Trace ``module`` as it is (the caller decides eval or train mode)."""
    x = torch.from_numpy(np.ascontiguousarray(example[:2], dtype=np.float32))
    # Positional (not keyed by the forward argument's name), so any module works.
    dynamic_shapes = ({0: torch.export.Dim("batch")},) if dynamic_batch else None
    with warnings.catch_warnings():
        # Raised inside torch's own exporter (its LeafSpec deprecation).
        warnings.filterwarnings("ignore", ".*LeafSpec", FutureWarning)
        program = torch.onnx.export(
            module,
            (x,),
            dynamo=True,
            input_names=[contract.input_name],
            output_names=[contract.output_name],
            dynamic_shapes=dynamic_shapes,
            opset_version=TORCH_OPSET,
            external_data=False,
            verbose=False,
        )
    if program is None:
        raise RuntimeError("torch.onnx.export returned no program")
    # Weights stay inside the proto: no external-data side file to lose.
    return program.model_proto
