"""The whole stack as a user runs it: the committed models in a private Triton,
the gateway as a process on a free port, the committed sample replayed over HTTP.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import asyncpg
import httpx
import numpy as np
import onnxruntime as ort
import pytest
from conftest import TEST_DATABASE_URL, TEST_REDIS_PREFIX, TEST_REDIS_URL
from triton_fixtures import free_port, free_ports

import features
from demo.dataset import iter_file
from export.repository import config_feature_schema
from features.schemas import SCHEMAS, WIDEST_SCHEMA_ID, columns_for
from triton_local.server import LaunchOptions, TritonHandle, start_triton

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data" / "samples" / "afd_coldstart_sample.csv"
MODELS = {"anomaly_autoencoder": "anomaly_score", "risk_classifier": "risk_probability"}


def latest_version(model_dir: Path) -> Path:
    versions = [p for p in model_dir.iterdir() if p.is_dir() and p.name.isdigit()]
    assert versions, f"no version of {model_dir.name} is committed"
    return max(versions, key=lambda p: int(p.name))


@pytest.fixture(scope="module")
def committed_triton(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonHandle]:
    repository = tmp_path_factory.mktemp("e2e") / "repository"
    shutil.copytree(ROOT / "model_repository", repository)
    handle = start_triton(
        LaunchOptions(
            repository=repository,
            run_dir=tmp_path_factory.mktemp("e2e-run"),
            ports=free_ports(),
            control_mode="poll",
            poll_secs=2,
        )
    )
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def gateway_url(
    committed_triton: TritonHandle, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    port = free_port()
    log = tmp_path_factory.mktemp("gateway") / "gateway.log"
    env = {
        **os.environ,
        "PORT": str(port),
        "HOST": "127.0.0.1",
        "DATABASE_URL": TEST_DATABASE_URL,
        "REDIS_URL": TEST_REDIS_URL,
        "REDIS_KEY_PREFIX": TEST_REDIS_PREFIX,
        "TRITON_URL": committed_triton.grpc_url,
        "TRITON_TIMEOUT_MS": "2000",
        "LOG_LEVEL": "WARNING",
    }
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=out, stderr=out
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/health", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, log.read_text()
            time.sleep(0.2)
        else:
            pytest.fail(f"gateway never became healthy:\n{log.read_text()}")
        yield url
    finally:
        process.terminate()
        process.wait(timeout=15)


async def test_sample_is_replayed_and_every_row_stored(
    gateway_url: str, db: asyncpg.Pool, redis_db: object
) -> None:
    rows = sum(1 for _ in iter_file(SAMPLE))
    result = await asyncio.to_thread(
        subprocess.run,
        [
            sys.executable,
            "-m",
            "demo.replay",
            "--url",
            gateway_url,
            "--data",
            str(SAMPLE),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    stored = await db.fetchval("SELECT count(*) FROM transactions")
    degraded = await db.fetchval("SELECT count(*) FROM transactions WHERE degraded")
    assert stored == rows
    assert degraded == 0


async def test_triton_scores_equal_in_process_onnxruntime(
    gateway_url: str, db: asyncpg.Pool, redis_db: object
) -> None:
    """Distinct real rows, sent at once so that dynamic batching merges them.

    Each model is given the columns of its own schema from the row stored with
    the decision, which /risk/analyze of a stored transaction scores again.
    """
    sample = [t.fields for t in iter_file(SAMPLE, limit=96)]
    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        for fields in sample:
            stored = await client.post("/transactions", json=fields)
            assert stored.status_code == 200, stored.text
    rows = {
        r["transaction_id"]: r["features"]
        for r in await db.fetch(
            "SELECT transaction_id, features FROM transactions"
            " WHERE transaction_id = ANY($1)",
            [f["transaction_id"] for f in sample],
        )
    }
    widest = np.array([rows[f["transaction_id"]] for f in sample], dtype=np.float32)
    assert widest.shape == (len(sample), len(SCHEMAS[WIDEST_SCHEMA_ID]))
    np.testing.assert_array_equal(
        widest[:, : len(features.FEATURE_NAMES)], features.encode(sample)
    )
    expected = {}
    for model, output in MODELS.items():
        schema = config_feature_schema(
            ROOT / "model_repository" / model / "config.pbtxt"
        )
        session = ort.InferenceSession(
            str(latest_version(ROOT / "model_repository" / model) / "model.onnx"),
            providers=["CPUExecutionProvider"],
        )
        matrix = columns_for(widest, schema)
        expected[output] = session.run([output], {"features": matrix})[0].reshape(-1)

    async with httpx.AsyncClient(base_url=gateway_url, timeout=10) as client:
        answers = await asyncio.gather(
            *(client.post("/risk/analyze", json=fields) for fields in sample)
        )
    assert {a.status_code for a in answers} == {200}
    for output, values in expected.items():
        served = np.array([a.json()[output] for a in answers])
        np.testing.assert_allclose(served, values, rtol=1e-5, atol=1e-6)
    assert len({a.json()["anomaly_score"] for a in answers}) > 1
