"""Concurrent duplicates, with Redis and without it: one scoring, one row."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import asyncpg
import pytest
from conftest import GatewayFactory, closed_port_url
from test_api import count_calls, rows

pytestmark = pytest.mark.integration

CASES = Path(__file__).parent / "cases"


@pytest.mark.parametrize("redis", ["up", "down"])
@pytest.mark.parametrize("copies", [10, 100])
async def test_concurrent_duplicates_score_once(
    gateway: GatewayFactory, db: asyncpg.Pool, copies: int, redis: str
) -> None:
    body = json.loads((CASES / "duplicate.json").read_text())
    overrides = {"redis_url": closed_port_url("redis")} if redis == "down" else {}
    async with gateway(**overrides) as client:
        scorings = count_calls(client, "score")
        answers = await asyncio.gather(
            *(client.post("/transactions", json=body) for _ in range(copies))
        )
    statuses = [a.status_code for a in answers]
    assert set(statuses) <= {200, 409}, statuses
    ok = [a for a in answers if a.status_code == 200]
    assert ok, "no duplicate got an answer"
    assert len({a.content for a in ok}) == 1
    for refused in (a for a in answers if a.status_code == 409):
        assert refused.json()["error"] == "in_progress"
    assert scorings[0] == 1
    assert len(await rows(db)) == 1


@pytest.mark.parametrize("redis", ["up", "down"])
async def test_concurrent_same_id_other_payload_one_wins(
    gateway: GatewayFactory, db: asyncpg.Pool, redis: str
) -> None:
    original = json.loads((CASES / "duplicate.json").read_text())
    changed = json.loads((CASES / "duplicate_changed.json").read_text())
    overrides = {"redis_url": closed_port_url("redis")} if redis == "down" else {}
    async with gateway(**overrides) as client:
        scorings = count_calls(client, "score")
        answers = await asyncio.gather(
            *(
                client.post("/transactions", json=original if i % 2 else changed)
                for i in range(20)
            )
        )
    (row,) = await rows(db)
    stored_amount = json.loads(row["payload"])["amount"]
    for answer, i in zip(answers, range(20), strict=True):
        sent = original if i % 2 else changed
        same = f"{float(sent['amount']):.2f}" == stored_amount
        if same:
            assert answer.status_code in (200, 409)
        else:
            assert answer.status_code == 409
            assert answer.json()["details"][0]["field"] == "transaction_id"
    assert scorings[0] == 1
