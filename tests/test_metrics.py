"""GET /metrics: latency per route, time per stage, decisions; GET /noop on request."""

from __future__ import annotations

import re

import pytest
from conftest import GatewayFactory, transaction

pytestmark = pytest.mark.integration


def _sample(text: str, name: str, **labels: str) -> float:
    wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)(?:\{(.*)\})? (\S+)", line)
        if not match or match[1] != name:
            continue
        found = ",".join(sorted((match[2] or "").split(","))) if match[2] else ""
        if found == wanted:
            return float(match[3])
    return 0.0


async def test_metrics_count_requests_stages_and_decisions(
    gateway: GatewayFactory,
) -> None:
    async with gateway() as client:
        before = (await client.get("/metrics")).text
        response = await client.post("/transactions", json=transaction())
        after_response = await client.get("/metrics")
    after = after_response.text
    assert after_response.headers["content-type"].startswith("text/plain")
    decision = response.json()["decision"]

    def grew(name: str, **labels: str) -> float:
        return _sample(after, name, **labels) - _sample(before, name, **labels)

    assert (
        grew(
            "gateway_request_duration_seconds_count",
            route="/transactions",
            method="POST",
            status="200",
        )
        == 1
    )
    for stage in ("validation", "idempotency", "features", "triton", "policy"):
        assert grew("gateway_stage_duration_seconds_count", stage=stage) >= 1, stage
    assert grew("gateway_stage_duration_seconds_count", stage="persistence") == 1
    assert grew("gateway_decisions_total", decision=decision) == 1


async def test_unknown_paths_share_one_label(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        await client.get("/no/such/path/123")
        text = (await client.get("/metrics")).text
    assert "/no/such/path/123" not in text
    assert 'route="unmatched"' in text


async def test_noop_route_exists_only_when_enabled(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        assert (await client.get("/noop")).status_code == 404
    async with gateway(noop_route=True) as client:
        response = await client.get("/noop")
    assert response.status_code == 200
    assert response.json() == {"ok": True}
