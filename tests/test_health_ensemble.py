"""GET /health and scoring need the two scoring models, never the ensemble.

The ensemble is parked (absent from Triton) while its members speak different
feature schemas, and fails to load if its config is broken; GET /model/info
says so, but /health stays 200 while both scoring models serve.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
from conftest import (
    TEST_DATABASE_URL,
    TEST_REDIS_PREFIX,
    TEST_REDIS_URL,
    GatewayFactory,
    transaction,
)
from triton_fixtures import build_test_repository, free_ports

from export import live
from gateway.app import create_app
from gateway.config import Settings
from triton_local.server import LaunchOptions, TritonHandle, start_triton

pytestmark = pytest.mark.integration

SCORING = ("anomaly_autoencoder", "risk_classifier")


async def check_scoring_and_health(client: httpx.AsyncClient) -> dict[str, Any]:
    """Asserts /health is 200 ok and a transaction is scored; the ensemble's
    entry of GET /model/info."""
    health = await client.get("/health")
    scored = await client.post("/risk/analyze", json=transaction())
    info = (await client.get("/model/info")).json()["models"]
    assert health.status_code == 200, health.text
    assert health.json()["status"] == "ok"
    assert scored.status_code == 200
    assert scored.json()["degraded"] is False
    assert set(scored.json()["model_versions"]) == set(SCORING)
    assert all(info[m]["usable"] for m in SCORING)
    (ensemble,) = (v for k, v in info.items() if k not in SCORING)
    assert ensemble["usable"] is False
    return dict(ensemble)


async def test_missing_ensemble_leaves_health_ok(gateway: GatewayFactory) -> None:
    async with gateway(triton_ensemble="risk_ensemble_parked") as client:
        ensemble = await check_scoring_and_health(client)
    assert ensemble["problem"] == "not in Triton's model repository"
    assert ensemble["failed_versions"] == {}


@pytest.fixture(scope="module")
def failed_ensemble_triton(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[TritonHandle]:
    """A private Triton (explicit mode) whose ensemble failed to load."""
    repository = build_test_repository(
        tmp_path_factory.mktemp("failed-ensemble") / "repository"
    )
    handle = start_triton(
        LaunchOptions(
            repository=repository,
            run_dir=tmp_path_factory.mktemp("failed-ensemble-run"),
            ports=free_ports(),
            control_mode="explicit",
        )
    )
    try:
        control = live.Triton(handle.http_url, timeout_s=30.0)
        control.unload(live.ENSEMBLE)
        config = repository / live.ENSEMBLE / "config.pbtxt"
        # An input width that neither member takes.
        config.write_text(config.read_text().replace("dims: [ 26 ]", "dims: [ 27 ]"))
        with pytest.raises(live.ReleaseError, match="refused to load"):
            control.load(live.ENSEMBLE)
        yield handle
    finally:
        handle.stop()


@pytest.fixture
async def failed_ensemble_client(
    failed_ensemble_triton: TritonHandle, db: object, redis_db: object
) -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(
        Settings(
            database_url=TEST_DATABASE_URL,
            redis_url=TEST_REDIS_URL,
            redis_key_prefix=TEST_REDIS_PREFIX,
            triton_url=failed_ensemble_triton.grpc_url,
            triton_timeout_ms=2000,
        )
    )
    async with (
        app.router.lifespan_context(app),
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://gateway"
        ) as client,
    ):
        yield client


async def test_failed_ensemble_leaves_health_ok(
    failed_ensemble_client: httpx.AsyncClient,
) -> None:
    ensemble = await check_scoring_and_health(failed_ensemble_client)
    # Triton answers the failed load with its reason but lists the ensemble
    # in its index as unloaded, without one.
    assert ensemble["problem"] == "no ready version"
