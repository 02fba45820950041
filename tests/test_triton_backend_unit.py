"""The onnxruntime backend's batching and per-request errors, without Triton."""

from __future__ import annotations

import importlib.util
import json
import sys
import types
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from triton_fixtures import FEATURE_WIDTH, write_linear_onnx

BACKEND = Path(__file__).resolve().parents[1] / "triton_local/backend/onnxruntime"
TYPES = {"TYPE_FP32": np.float32, "TYPE_FP64": np.float64}


@dataclass
class FakeTensor:
    name: str
    array: np.ndarray

    def as_numpy(self) -> np.ndarray:
        return self.array


@dataclass
class FakeResponse:
    output_tensors: list[FakeTensor] = field(default_factory=list)
    error: Exception | None = None


def fake_pb_utils() -> types.ModuleType:
    module = types.ModuleType("triton_python_backend_utils")
    module.triton_string_to_numpy = TYPES.__getitem__  # type: ignore[attr-defined]
    module.get_input_tensor_by_name = (  # type: ignore[attr-defined]
        lambda request, name: request.get(name)
    )
    module.Tensor = FakeTensor  # type: ignore[attr-defined]
    module.InferenceResponse = FakeResponse  # type: ignore[attr-defined]
    module.TritonError = RuntimeError  # type: ignore[attr-defined]
    module.Logger = types.SimpleNamespace(log_info=lambda message: None)  # type: ignore[attr-defined]
    return module


def classifier_config() -> dict[str, Any]:
    return {
        "name": "risk_classifier",
        "max_batch_size": 1024,
        "input": [{"name": "features", "data_type": "TYPE_FP32", "dims": ["26"]}],
        "output": [
            {"name": "risk_probability", "data_type": "TYPE_FP32", "dims": ["1"]}
        ],
        "parameters": {"intra_op_thread_count": {"string_value": "1"}},
    }


@pytest.fixture
def backend(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    monkeypatch.setitem(sys.modules, "triton_python_backend_utils", fake_pb_utils())
    spec = importlib.util.spec_from_file_location("ort_backend", BACKEND / "model.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)

    write_linear_onnx(tmp_path / "1" / "model.onnx", "risk_probability", seed=4)
    model = module.TritonPythonModel()
    model.initialize(
        {
            "model_config": json.dumps(classifier_config()),
            "model_repository": str(tmp_path),
            "model_version": "1",
        }
    )
    return model


def rows(count: int, seed: int) -> np.ndarray:
    values = np.random.default_rng(seed).normal(size=(count, FEATURE_WIDTH))
    return values.astype(np.float32)


def test_batch_is_split_back_per_request(backend: Any) -> None:
    parts = [rows(1, 1), rows(3, 2), rows(2, 3)]

    responses = backend.execute(
        [{"features": FakeTensor("features", p)} for p in parts]
    )

    expected = backend.session.run(None, {"features": np.concatenate(parts)})[0]
    served = [r.output_tensors[0].as_numpy() for r in responses]
    assert [s.shape for s in served] == [(1, 1), (3, 1), (2, 1)]
    np.testing.assert_allclose(np.concatenate(served), expected, rtol=1e-6)


def test_bad_request_gets_its_own_error(backend: Any) -> None:
    good = {"features": FakeTensor("features", rows(2, 4))}
    wrong_dtype = {"features": FakeTensor("features", rows(2, 5).astype(np.float64))}

    responses = backend.execute([good, wrong_dtype, {}])

    assert responses[0].error is None
    assert responses[0].output_tensors[0].as_numpy().shape == (2, 1)
    assert "dtype float64" in str(responses[1].error)
    assert "no input 'features'" in str(responses[2].error)


def test_wrong_width_fails_only_that_request(backend: Any) -> None:
    wrong_width = {"features": FakeTensor("features", rows(1, 6)[:, :20].copy())}
    good = {"features": FakeTensor("features", rows(1, 7))}

    responses = backend.execute([good, wrong_width])

    assert responses[0].error is None
    assert "shape (1, 20), want [26]" in str(responses[1].error)


def test_failing_merged_run_is_retried_per_request(
    backend: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    session = backend.session
    poison = np.full((1, FEATURE_WIDTH), 7.0, np.float32)

    class PickySession:
        def run(self, names: list[str], feed: dict[str, np.ndarray]) -> Any:
            if (feed["features"] == 7.0).all(axis=1).any():
                raise RuntimeError("poisoned row")
            return session.run(names, feed)

    monkeypatch.setattr(backend, "session", PickySession())
    good = {"features": FakeTensor("features", rows(2, 8))}
    bad = {"features": FakeTensor("features", poison)}

    responses = backend.execute([good, bad, good])

    assert [r.error is None for r in responses] == [True, False, True]
    assert "poisoned row" in str(responses[1].error)


def test_thread_count_must_be_an_integer(
    backend: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = classifier_config()
    config["parameters"]["intra_op_thread_count"] = {"string_value": "two"}
    args = {
        "model_config": json.dumps(config),
        "model_repository": str(tmp_path),
        "model_version": "1",
    }

    with pytest.raises(ValueError, match="intra_op_thread_count='two'"):
        type(backend)().initialize(args)


def test_session_uses_configured_threads(backend: Any) -> None:
    options = backend.session.get_session_options()

    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (1, 1)
