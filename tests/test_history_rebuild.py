"""gateway.history_rebuild: the customer history rebuilt from PostgreSQL alone."""

from __future__ import annotations

import asyncpg
import pytest
import redis.asyncio as aioredis
from conftest import (
    TEST_DATABASE_URL,
    TEST_REDIS_PREFIX,
    TEST_REDIS_URL,
    GatewayFactory,
    transaction,
)

from features.history import HISTORY_FEATURE_NAMES
from gateway.history_rebuild import rebuild

HIST = TEST_REDIS_PREFIX + "hist:v1:"
COUNT_7D = 26 + HISTORY_FEATURE_NAMES.index("hist_log_count_7d")
KNOWN_FRAUD = 26 + HISTORY_FEATURE_NAMES.index("hist_log_known_fraud")


async def _snapshot(redis: aioredis.Redis) -> dict[str, object]:
    """Every state and amount counter (not the per-transaction markers)."""
    out: dict[str, object] = {}
    async for raw in redis.scan_iter(match=HIST + "*"):
        key = raw.decode()
        if key.startswith(HIST + "applied:"):
            continue
        if key.startswith(HIST + "amounts:"):
            out[key] = await redis.hgetall(key)
        else:
            out[key] = await redis.hget(key, "s")
    return out


@pytest.mark.integration
async def test_rebuild_gives_back_the_history_redis_lost(
    gateway: GatewayFactory, db: asyncpg.Pool, redis_db: aioredis.Redis
) -> None:
    plan = [
        ("r-1", "u-a", "2026-01-10T10:00:00Z", "20.00", "mobile"),
        ("r-2", "u-b", "2026-01-10T10:05:00Z", "20.00", "desktop"),
        ("r-3", "u-a", "2026-01-10T11:30:00+01:00", "35.50", "desktop"),
        ("r-4", "u-a", "2026-01-12T08:00:00Z", "20.00", "mobile"),
        ("r-5", "u-c", "2026-01-13T09:00:00Z", "7.25", "mobile"),
        ("r-6", "u-a", "2026-01-20T09:00:00Z", "99.99", "mobile"),
    ]
    async with gateway() as client:
        for i, (tid, user, stamp, amount, device) in enumerate(plan):
            body = transaction(
                transaction_id=tid, user_id=user, timestamp=stamp,
                amount=amount, device=device,
            )  # fmt: skip
            assert (await client.post("/transactions", json=body)).status_code == 200
            if i == 3:  # r-1 confirmed fraud, known before r-5
                response = await client.post(
                    "/outcomes",
                    json={
                        "transaction_id": "r-1",
                        "outcome": "fraud",
                        "source": "chargeback",
                        "reported_at": "2026-01-12T12:00:00Z",
                    },
                )
                assert response.status_code == 201
        before = await _snapshot(redis_db)
        assert len(before) >= 3 + 1  # three customers, amount days

        # Redis loses everything of ours.
        async for key in redis_db.scan_iter(match=HIST + "*"):
            await redis_db.delete(key)
        summary = await rebuild(TEST_DATABASE_URL, TEST_REDIS_URL, TEST_REDIS_PREFIX)
        assert summary["transactions"] == 6 and summary["outcomes"] == 1
        assert summary["customers"] == 3
        assert await _snapshot(redis_db) == before

        # Scoring goes on from the rebuilt history.
        body = transaction(
            transaction_id="r-7", user_id="u-a", timestamp="2026-01-21T09:00:00Z"
        )
        answer = await client.post("/transactions", json=body)
        assert answer.status_code == 200 and answer.json()["degraded"] is False
    row = await db.fetchrow(
        "SELECT features FROM transactions WHERE transaction_id = 'r-7'"
    )
    assert row["features"][COUNT_7D] > 0  # r-4 and r-6 within 7 days
    assert row["features"][KNOWN_FRAUD] > 0  # the chargeback on r-1


@pytest.mark.integration
async def test_dry_run_writes_nothing(
    gateway: GatewayFactory, db: asyncpg.Pool, redis_db: aioredis.Redis
) -> None:
    async with gateway() as client:
        assert (
            await client.post("/transactions", json=transaction())
        ).status_code == 200
    async for key in redis_db.scan_iter(match=HIST + "*"):
        await redis_db.delete(key)
    summary = await rebuild(
        TEST_DATABASE_URL, TEST_REDIS_URL, TEST_REDIS_PREFIX, dry_run=True
    )
    assert summary["customers"] == 1 and summary["written"] is False
    assert await _snapshot(redis_db) == {}
