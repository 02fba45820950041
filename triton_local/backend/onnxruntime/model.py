"""Triton Python-based backend that serves `onnxruntime_onnx` models.

Triton loads this file for every model whose platform is "onnxruntime_onnx"
when the backend directory has no native ONNX Runtime backend. Each model
version's ONNX file runs in the `onnxruntime` package.

Contract: one response per request, in order. A whole dynamic batch goes
through one `InferenceSession.run`; errors are returned per request.

Model config `parameters` read here (string values):
- `intra_op_thread_count`: ONNX Runtime intra-op threads (default 1, 0 = ORT
  default, one per physical core)
- `inter_op_thread_count`: inter-op threads (default 1, 0 = ORT default)
"""

from __future__ import annotations

import json
import os
import sys
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils

_ONNX_TO_NUMPY = {
    "tensor(float)": np.dtype(np.float32),
    "tensor(double)": np.dtype(np.float64),
    "tensor(float16)": np.dtype(np.float16),
    "tensor(int8)": np.dtype(np.int8),
    "tensor(int16)": np.dtype(np.int16),
    "tensor(int32)": np.dtype(np.int32),
    "tensor(int64)": np.dtype(np.int64),
    "tensor(uint8)": np.dtype(np.uint8),
    "tensor(bool)": np.dtype(np.bool_),
}

_THREAD_PARAMETERS = {"intra_op_thread_count": 1, "inter_op_thread_count": 1}


class ModelMismatchError(ValueError):
    """The ONNX graph does not match the model's config.pbtxt."""


def _parameter_int(config: dict[str, Any], key: str, default: int) -> int:
    entry = config.get("parameters", {}).get(key)
    if entry is None:
        return default
    raw = entry.get("string_value", "")
    try:
        value = int(raw)
    except ValueError:
        raise ValueError(f"model parameter {key}={raw!r} is not an integer") from None
    if value < 0:
        raise ValueError(f"model parameter {key}={value} must be >= 0")
    return value


def _expected_shape(tensor_config: dict[str, Any], batched: bool) -> list[int]:
    dims = [int(d) for d in tensor_config.get("dims", [])]
    return [-1, *dims] if batched else dims


def _check_tensor(
    kind: str,
    tensor_config: dict[str, Any],
    graph_tensor: Any,
    batched: bool,
) -> np.dtype:
    name = tensor_config["name"]
    config_dtype = np.dtype(pb_utils.triton_string_to_numpy(tensor_config["data_type"]))
    graph_dtype = _ONNX_TO_NUMPY.get(graph_tensor.type)
    if graph_dtype != config_dtype:
        raise ModelMismatchError(
            f"{kind} {name!r}: config says {tensor_config['data_type']}, "
            f"ONNX graph says {graph_tensor.type}"
        )

    expected = _expected_shape(tensor_config, batched)
    graph_shape = list(graph_tensor.shape)
    if len(graph_shape) != len(expected):
        raise ModelMismatchError(
            f"{kind} {name!r}: config shape {expected} (batch dim -1), "
            f"ONNX graph shape {graph_shape}"
        )
    for axis, (want, got) in enumerate(zip(expected, graph_shape, strict=True)):
        if batched and axis == 0:
            # A graph exported with a fixed example batch cannot take a
            # dynamic batch; a symbolic or unknown dim is what we want here.
            if isinstance(got, int) and got > 0:
                raise ModelMismatchError(
                    f"{kind} {name!r}: ONNX batch dimension is fixed to {got}; "
                    "export the model with a dynamic batch dimension"
                )
            continue
        if isinstance(got, int) and got > 0 and want != -1 and got != want:
            raise ModelMismatchError(
                f"{kind} {name!r}: config dims {expected[1 if batched else 0 :]}, "
                f"ONNX graph shape {graph_shape} (axis {axis}: {got} != {want})"
            )
    return config_dtype


def validate_graph(
    config: dict[str, Any], session: ort.InferenceSession
) -> tuple[dict[str, np.dtype], dict[str, np.dtype]]:
    """Check the graph against the config; return input and output dtypes."""
    batched = int(config.get("max_batch_size", 0)) > 0
    graph_inputs = {t.name: t for t in session.get_inputs()}
    graph_outputs = {t.name: t for t in session.get_outputs()}

    config_input_names = {t["name"] for t in config.get("input", [])}
    missing = sorted(set(graph_inputs) - config_input_names)
    if missing:
        raise ModelMismatchError(
            f"ONNX graph inputs {missing} are not declared in config.pbtxt "
            f"(declared: {sorted(config_input_names)})"
        )

    inputs: dict[str, np.dtype] = {}
    for tensor_config in config.get("input", []):
        name = tensor_config["name"]
        if name not in graph_inputs:
            raise ModelMismatchError(
                f"config input {name!r} is not an ONNX graph input "
                f"(graph inputs: {sorted(graph_inputs)})"
            )
        inputs[name] = _check_tensor(
            "input", tensor_config, graph_inputs[name], batched
        )

    outputs: dict[str, np.dtype] = {}
    for tensor_config in config.get("output", []):
        name = tensor_config["name"]
        if name not in graph_outputs:
            raise ModelMismatchError(
                f"config output {name!r} is not an ONNX graph output "
                f"(graph outputs: {sorted(graph_outputs)})"
            )
        outputs[name] = _check_tensor(
            "output", tensor_config, graph_outputs[name], batched
        )
    return inputs, outputs


def _check_numpy() -> None:
    major = int(np.__version__.split(".")[0])
    if major != 1:
        raise RuntimeError(
            f"numpy {np.__version__} found by the Triton Python backend stub "
            f"({np.__file__}): the stub was built for numpy 1 and returns wrong "
            "scores with numpy 2; install numpy==1.26.4 in that environment"
        )


class TritonPythonModel:
    def initialize(self, args: dict[str, str]) -> None:
        _check_numpy()
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
        self.batched = int(config.get("max_batch_size", 0)) > 0

        filename = config.get("default_model_filename") or "model.onnx"
        path = os.path.join(args["model_repository"], args["model_version"], filename)
        if not os.path.isfile(path):
            raise FileNotFoundError(f"model file {path} does not exist")

        options = ort.SessionOptions()
        threads = {
            k: _parameter_int(config, k, v) for k, v in _THREAD_PARAMETERS.items()
        }
        options.intra_op_num_threads = threads["intra_op_thread_count"]
        options.inter_op_num_threads = threads["inter_op_thread_count"]
        self.session = ort.InferenceSession(
            path, sess_options=options, providers=["CPUExecutionProvider"]
        )
        self.input_dtypes, self.output_dtypes = validate_graph(config, self.session)
        self.output_names = list(self.output_dtypes)
        self.input_dims = {
            t["name"]: [int(d) for d in t.get("dims", [])] for t in config["input"]
        }

        pb_utils.Logger.log_info(
            f"onnxruntime backend: loaded {path} for model {self.model_name!r} "
            f"(onnxruntime {ort.__version__}, numpy {np.__version__} "
            f"from {sys.prefix}, {threads})"
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Run all requests of a dynamic batch as one session run."""
        responses: list[Any] = [None] * len(requests)
        feeds: list[tuple[int, dict[str, np.ndarray]]] = []
        for index, request in enumerate(requests):
            try:
                feeds.append((index, self._read_inputs(request)))
            except Exception as exc:
                responses[index] = _error_response(exc)

        try:
            if self.batched and len(feeds) > 1:
                self._run_merged(feeds, responses)
            else:
                for index, feed in feeds:
                    responses[index] = self._run_one(feed)
        except Exception as exc:
            for index, response in enumerate(responses):
                if response is None:
                    responses[index] = _error_response(exc)
        return responses

    def _read_inputs(self, request: Any) -> dict[str, np.ndarray]:
        feed: dict[str, np.ndarray] = {}
        rows: int | None = None
        for name, dtype in self.input_dtypes.items():
            tensor = pb_utils.get_input_tensor_by_name(request, name)
            if tensor is None:
                raise ValueError(f"request has no input {name!r}")
            array = tensor.as_numpy()
            want = self.input_dims[name]
            got = array.shape[1:] if self.batched else array.shape
            if len(got) != len(want) or any(
                w not in (-1, g) for w, g in zip(want, got, strict=False)
            ):
                raise ValueError(f"input {name!r} has shape {array.shape}, want {want}")
            if array.dtype != dtype:
                raise ValueError(
                    f"input {name!r} has dtype {array.dtype}, want {dtype}"
                )
            if self.batched:
                if rows is not None and array.shape[0] != rows:
                    raise ValueError(
                        f"input {name!r} has {array.shape[0]} rows, other inputs {rows}"
                    )
                rows = array.shape[0]
            feed[name] = array
        return feed

    def _run_merged(
        self,
        feeds: list[tuple[int, dict[str, np.ndarray]]],
        responses: list[Any],
    ) -> None:
        try:
            merged = {
                name: np.concatenate([feed[name] for _, feed in feeds])
                for name in self.input_dtypes
            }
            results = self.session.run(self.output_names, merged)
        except Exception:
            # Retry one by one so that only the requests at fault get an error.
            for index, feed in feeds:
                responses[index] = self._run_one(feed)
            return

        start = 0
        first_input = next(iter(self.input_dtypes))
        for index, feed in feeds:
            stop = start + feed[first_input].shape[0]
            responses[index] = self._response(
                [result[start:stop] for result in results]
            )
            start = stop

    def _run_one(self, feed: dict[str, np.ndarray]) -> Any:
        try:
            return self._response(self.session.run(self.output_names, feed))
        except Exception as exc:
            return _error_response(exc)

    def _response(self, results: list[np.ndarray]) -> Any:
        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(result, dtype=dtype))
            for (name, dtype), result in zip(
                self.output_dtypes.items(), results, strict=True
            )
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    def finalize(self) -> None:
        self.session = None


def _error_response(exc: Exception) -> Any:
    return pb_utils.InferenceResponse(
        output_tensors=[],
        error=pb_utils.TritonError(f"{type(exc).__name__}: {exc}"),
    )
