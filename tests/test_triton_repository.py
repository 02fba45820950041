"""The committed repository, with its published models, serves through Triton."""

from __future__ import annotations

import asyncio
import shutil
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc.aio as grpcclient
from triton_fixtures import COMMITTED_REPOSITORY, STAND_INS, free_ports

from export import live
from export.repository import config_input_width
from triton_local.server import LaunchOptions, start_triton

pytestmark = pytest.mark.integration


def live_model(model: str) -> Path | None:
    """The model.onnx of the version the committed config makes live."""
    version = live.live_version(COMMITTED_REPOSITORY / model)
    path = COMMITTED_REPOSITORY / model / str(version) / "model.onnx"
    return path if version is not None and path.is_file() else None


async def test_committed_models_match_onnxruntime_through_the_ensemble(
    tmp_path: Path,
) -> None:
    published = {model: live_model(model) for model in STAND_INS}
    if None in published.values():
        pytest.skip(f"no published model.onnx yet: {published}")
    widths = {
        config_input_width(COMMITTED_REPOSITORY / name / "config.pbtxt")
        for name in (*STAND_INS, live.ENSEMBLE)
    }
    # The ensemble serves only while its members speak one schema.
    assert len(widths) == 1, widths
    repository = tmp_path / "repository"
    shutil.copytree(COMMITTED_REPOSITORY, repository)
    rows = np.random.default_rng(7).normal(size=(32, widths.pop())).astype(np.float32)
    options = LaunchOptions(
        repository=repository, run_dir=tmp_path / "run", ports=free_ports()
    )

    with start_triton(options) as handle:
        client = grpcclient.InferenceServerClient(
            handle.grpc_url, channel_args=[("grpc.enable_http_proxy", 0)]
        )
        try:
            results = await asyncio.gather(
                *(_ensemble(client, rows[i : i + 1]) for i in range(len(rows)))
            )
        finally:
            await client.close()

    for model, (output, _) in STAND_INS.items():
        session = ort.InferenceSession(
            str(published[model]), providers=["CPUExecutionProvider"]
        )
        expected = session.run([output], {"features": rows})[0]
        served = np.concatenate([result[output] for result in results])
        np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-7)


async def _ensemble(
    client: grpcclient.InferenceServerClient, row: np.ndarray
) -> dict[str, np.ndarray]:
    features = grpcclient.InferInput("features", list(row.shape), "FP32")
    features.set_data_from_numpy(row)
    result = await client.infer("risk_ensemble", [features])
    return {output: result.as_numpy(output) for output, _ in STAND_INS.values()}
