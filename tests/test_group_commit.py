"""Group commit: concurrent inserts share a statement; each answered after it."""

from __future__ import annotations

import asyncio
from typing import Any

import asyncpg
import pytest
from conftest import TEST_DATABASE_URL, GatewayFactory, closed_port_url, transaction

from gateway.schemas import ScoreResponse, TransactionRequest
from gateway.storage import Storage, StorageUnavailable

pytestmark = pytest.mark.integration


def _decision(transaction_id: str) -> ScoreResponse:
    return ScoreResponse.model_validate(
        {
            "transaction_id": transaction_id,
            "anomaly_score": 0.2,
            "risk_probability": 0.1,
            "combined_score": 0.14,
            "decision": "APPROVE",
            "processed_at": "2026-01-28T14:30:01Z",
            "model_versions": {"risk_ensemble": "1"},
            "policy_version": "test",
            "degraded": False,
        }
    )


def _request(transaction_id: str, **overrides: Any) -> TransactionRequest:
    return TransactionRequest.model_validate(
        transaction(transaction_id=transaction_id, **overrides)
    )


async def _storage(dsn: str = TEST_DATABASE_URL, **kwargs: Any) -> Storage:
    options: dict[str, Any] = {
        "min_size": 1,
        "max_size": 4,
        "acquire_timeout_s": 0.5,
        "statement_timeout_s": 1.0,
        "group_commit_max_rows": 64,
    }
    options.update(kwargs)
    storage = Storage(dsn, **options)
    await storage.open()
    return storage


async def _insert(storage: Storage, transaction_id: str) -> bool:
    request = _request(transaction_id)
    return await storage.insert(
        request, request.payload_hash(), _decision(transaction_id)
    )


async def test_concurrent_inserts_are_all_stored_in_fewer_statements(
    db: asyncpg.Pool,
) -> None:
    storage = await _storage()
    statements = [0]
    original = storage._insert_many

    async def counted(rows: list[Any]) -> set[str]:
        statements[0] += 1
        return await original(rows)

    storage._insert_many = counted  # type: ignore[method-assign]
    try:
        ids = [f"g-{i}" for i in range(40)]
        results = await asyncio.gather(*(_insert(storage, i) for i in ids))
    finally:
        await storage.close()

    assert results == [True] * 40
    stored = await db.fetch(
        "SELECT transaction_id, response->>'decision' AS decision,"
        " jsonb_typeof(payload) AS payload FROM transactions"
    )
    assert sorted(r["transaction_id"] for r in stored) == sorted(ids)
    assert {(r["decision"], r["payload"]) for r in stored} == {("APPROVE", "object")}
    assert statements[0] <= 2


async def test_a_conflict_answers_false_for_that_row_only(db: asyncpg.Pool) -> None:
    storage = await _storage()
    try:
        assert await _insert(storage, "dup-1") is True
        results = await asyncio.gather(
            _insert(storage, "new-1"),
            _insert(storage, "dup-1"),
            _insert(storage, "new-2"),
            _insert(storage, "new-2"),
        )
    finally:
        await storage.close()
    assert results == [True, False, True, False]
    count = await db.fetchval("SELECT count(*) FROM transactions")
    assert count == 3


async def test_a_row_the_database_refuses_fails_alone(db: asyncpg.Pool) -> None:
    storage = await _storage()
    good = _request("ok-1")
    # Negative scores break a CHECK constraint; validation never lets one through.
    bad = _decision("bad-1").model_copy(update={"anomaly_score": -1.0})
    try:
        results = await asyncio.gather(
            storage.insert(good, good.payload_hash(), _decision("ok-1")),
            storage.insert(_request("bad-1"), "0" * 64, bad),
            return_exceptions=True,
        )
    finally:
        await storage.close()
    assert results[0] is True
    assert isinstance(results[1], asyncpg.CheckViolationError)
    assert await db.fetchval("SELECT count(*) FROM transactions") == 1


async def test_postgres_down_fails_every_waiting_insert() -> None:
    storage = await _storage(closed_port_url("postgresql"))
    try:
        results = await asyncio.gather(
            *(_insert(storage, f"down-{i}") for i in range(5)),
            return_exceptions=True,
        )
    finally:
        await storage.close()
    assert all(isinstance(r, StorageUnavailable) for r in results)


async def test_concurrent_transactions_through_the_api_are_each_stored(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway(db_group_commit_max_rows=16) as client:
        responses = await asyncio.gather(
            *(
                client.post("/transactions", json=transaction(transaction_id=f"c-{i}"))
                for i in range(30)
            )
        )
    assert [r.status_code for r in responses] == [200] * 30
    assert await db.fetchval("SELECT count(*) FROM transactions") == 30
