"""The local Triton serves onnxruntime_onnx models through our Python backend."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as grpcclient
from triton_fixtures import (
    FEATURE_WIDTH,
    STAND_INS,
    build_test_repository,
    free_ports,
    write_linear_onnx,
)
from tritonclient.utils import InferenceServerException

from triton_local.server import LaunchOptions, TritonHandle, start_triton

pytestmark = pytest.mark.integration

CHANNEL_ARGS = [
    ("grpc.enable_http_proxy", 0),
    ("grpc.max_send_message_length", 64 * 1024 * 1024),
    ("grpc.max_receive_message_length", 64 * 1024 * 1024),
]


@pytest.fixture(scope="session")
async def client(triton_server: TritonHandle) -> AsyncIterator[Any]:
    client = grpcclient.InferenceServerClient(
        triton_server.grpc_url, channel_args=CHANNEL_ARGS
    )
    try:
        yield client
    finally:
        await client.close()


@pytest.fixture(scope="module")
def scratch_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    """A second private Triton for tests that add broken models.

    Triton 2.51 in poll mode retries a failed load on every poll, and its
    server readiness stays false even after the model is removed, so these
    tests keep away from the shared `triton_server`.
    """
    root = tmp_path_factory.mktemp("triton-scratch")
    options = LaunchOptions(
        repository=build_test_repository(root / "repository"),
        run_dir=root / "run",
        ports=free_ports(),
        poll_secs=1,
    )
    with start_triton(options) as handle:
        yield handle


@pytest.fixture(scope="module")
async def scratch(scratch_server: TritonHandle) -> AsyncIterator[Any]:
    client = grpcclient.InferenceServerClient(
        scratch_server.grpc_url, channel_args=CHANNEL_ARGS
    )
    try:
        yield client
    finally:
        await client.close()


def local_scores(model_path: Path, rows: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(model_path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"features": rows})[0])


def distinct_rows(count: int, seed: int) -> np.ndarray:
    rows = np.random.default_rng(seed).normal(size=(count, FEATURE_WIDTH))
    return rows.astype(np.float32)


async def infer(
    client: Any, model: str, rows: np.ndarray, outputs: list[str], version: str = ""
) -> dict[str, np.ndarray]:
    features = grpcclient.InferInput("features", list(rows.shape), "FP32")
    features.set_data_from_numpy(rows)
    requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
    result = await client.infer(
        model, [features], model_version=version, outputs=requested
    )
    return {name: result.as_numpy(name) for name in outputs}


async def model_counts(client: Any, model: str) -> tuple[int, int]:
    stats = await client.get_inference_statistics(model, as_json=True)
    totals = [0, 0]
    for version in stats["model_stats"]:
        totals[0] += int(version.get("inference_count", 0))
        totals[1] += int(version.get("execution_count", 0))
    return totals[0], totals[1]


async def wait_for_state(
    client: Any, model: str, version: str, states: set[str], timeout: float = 30.0
) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    entry: dict[str, Any] = {}
    while time.monotonic() < deadline:
        index = await client.get_model_repository_index(as_json=True)
        for candidate in index.get("models", []):
            if candidate["name"] == model and candidate.get("version") == version:
                entry = candidate
                if candidate.get("state") in states:
                    return candidate
        await asyncio.sleep(0.2)
    raise AssertionError(f"{model} v{version} never reached {states}: last {entry}")


def publish(staged: Path, destination: Path) -> None:
    """Move a fully written folder into the polled repository in one step."""
    os.rename(staged, destination)


async def test_onnxruntime_platform_model_loads_and_serves(
    client: Any, triton_repository: Path
) -> None:
    config = await client.get_model_config("risk_classifier", as_json=True)
    rows = distinct_rows(8, seed=10)

    scores = await infer(client, "risk_classifier", rows, ["risk_probability"])

    assert config["config"]["platform"] == "onnxruntime_onnx"
    assert config["config"]["backend"] == "onnxruntime"
    expected = local_scores(triton_repository / "risk_classifier/1/model.onnx", rows)
    np.testing.assert_allclose(scores["risk_probability"], expected, rtol=1e-6)


async def test_concurrent_single_rows_match_onnxruntime_and_are_batched(
    client: Any, triton_repository: Path
) -> None:
    rows = distinct_rows(64, seed=11)
    before = await model_counts(client, "anomaly_autoencoder")

    results = await asyncio.gather(
        *(
            infer(client, "anomaly_autoencoder", rows[i : i + 1], ["anomaly_score"])
            for i in range(len(rows))
        )
    )

    served = np.concatenate([result["anomaly_score"] for result in results])
    expected = local_scores(
        triton_repository / "anomaly_autoencoder/1/model.onnx", rows
    )
    assert len(np.unique(expected)) == len(rows)
    np.testing.assert_allclose(served, expected, rtol=1e-6)
    after = await model_counts(client, "anomaly_autoencoder")
    inferences, executions = after[0] - before[0], after[1] - before[1]
    assert inferences == len(rows)
    assert executions < inferences, "dynamic batching merged no requests"


async def test_concurrent_requests_of_several_rows_are_split_back_in_order(
    client: Any, triton_repository: Path
) -> None:
    sizes = [1, 3, 2, 7, 1, 5, 4, 2] * 4
    rows = distinct_rows(sum(sizes), seed=12)
    starts = np.cumsum([0, *sizes[:-1]])

    results = await asyncio.gather(
        *(
            infer(client, "risk_classifier", rows[s : s + n], ["risk_probability"])
            for s, n in zip(starts, sizes, strict=True)
        )
    )

    expected = local_scores(triton_repository / "risk_classifier/1/model.onnx", rows)
    for start, size, result in zip(starts, sizes, results, strict=True):
        assert result["risk_probability"].shape == (size, 1)
        np.testing.assert_allclose(
            result["risk_probability"], expected[start : start + size], rtol=1e-6
        )


async def test_ensemble_returns_both_scores(
    client: Any, triton_repository: Path
) -> None:
    rows = distinct_rows(5, seed=13)

    scores = await infer(
        client, "risk_ensemble", rows, ["anomaly_score", "risk_probability"]
    )

    for model, (output, _) in STAND_INS.items():
        expected = local_scores(triton_repository / model / "1/model.onnx", rows)
        np.testing.assert_allclose(scores[output], expected, rtol=1e-6)


def _copy_classifier_config(repository: Path, name: str, target: Path) -> None:
    text = (repository / "risk_classifier" / "config.pbtxt").read_text()
    renamed = text.replace('name: "risk_classifier"', f'name: "{name}"', 1)
    target.mkdir(parents=True)
    (target / "config.pbtxt").write_text(renamed)


@pytest.mark.parametrize(
    ("case", "onnx_kwargs", "reason_part"),
    [
        ("width", {"width": FEATURE_WIDTH - 1}, "axis 1: 25 != 26"),
        ("fixed_batch", {"batch_dim": 1}, "batch dimension is fixed to 1"),
        ("input_name", {"input_name": "x"}, "inputs ['x'] are not declared"),
        ("output_name", {"output_name": "score"}, "'risk_probability'"),
    ],
)
async def test_model_not_matching_its_config_fails_to_load(
    scratch: Any,
    scratch_server: TritonHandle,
    case: str,
    onnx_kwargs: dict[str, Any],
    reason_part: str,
) -> None:
    repository = scratch_server.options.repository
    name = f"mismatched_{case}"
    staged = repository.parent / f"staging-{name}"
    _copy_classifier_config(repository, name, staged)
    kwargs = {"output_name": "risk_probability", "seed": 3, **onnx_kwargs}
    write_linear_onnx(staged / "1" / "model.onnx", **kwargs)

    publish(staged, repository / name)
    try:
        entry = await wait_for_state(scratch, name, "1", {"UNAVAILABLE", "READY"})
        model_ready = await scratch.is_model_ready(name)
    finally:
        shutil.rmtree(repository / name)

    assert entry["state"] == "UNAVAILABLE"
    assert reason_part in entry["reason"]
    assert not model_ready


async def test_poll_mode_serves_new_version_and_keeps_it_when_next_is_bad(
    scratch: Any, scratch_server: TritonHandle
) -> None:
    client = scratch
    repository = scratch_server.options.repository
    name = "versioned_classifier"
    model_dir = repository / name
    staged = repository.parent / f"staging-{name}"
    _copy_classifier_config(repository, name, staged)
    write_linear_onnx(staged / "1" / "model.onnx", "risk_probability", seed=21)
    publish(staged, model_dir)
    await wait_for_state(client, name, "1", {"READY"})
    rows = distinct_rows(4, seed=14)

    write_linear_onnx(staged / "model.onnx", "risk_probability", seed=22)
    publish(staged, model_dir / "2")
    await wait_for_state(client, name, "2", {"READY"})
    served_v2 = await infer(client, name, rows, ["risk_probability"])

    write_linear_onnx(staged / "model.onnx", "risk_probability", seed=23, width=27)
    publish(staged, model_dir / "3")
    try:
        failed = await wait_for_state(client, name, "3", {"UNAVAILABLE", "READY"})
        served_after_bad = await infer(client, name, rows, ["risk_probability"])
        with pytest.raises(InferenceServerException):
            await infer(client, name, rows, ["risk_probability"], version="3")
    finally:
        shutil.rmtree(model_dir / "3")

    expected_v2 = local_scores(model_dir / "2" / "model.onnx", rows)
    np.testing.assert_allclose(served_v2["risk_probability"], expected_v2, rtol=1e-6)
    assert failed["state"] == "UNAVAILABLE"
    np.testing.assert_allclose(
        served_after_bad["risk_probability"], expected_v2, rtol=1e-6
    )
