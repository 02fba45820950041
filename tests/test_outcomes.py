"""Confirmed outcomes: POST /outcomes, GET /transactions/{id}, append-only storage."""

from __future__ import annotations

import asyncio
import hashlib
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
import redis.asyncio as aioredis
from conftest import TEST_REDIS_PREFIX, GatewayFactory, transaction

from features.history import CustomerState
from gateway import auth
from gateway.history import HistoryStore

SCORER = "rk_scorer_key_for_outcome_tests"
REPORTER = "rk_reporter_key_for_outcome_tests"
OPERATOR = "rk_operator_key_for_outcome_tests"
API_KEYS = (
    f"scorer:score:{auth.digest(SCORER)},"
    f"reporter:outcomes:{auth.digest(REPORTER)},"
    f"operator:operator:{auth.digest(OPERATOR)}"
)


def key(value: str) -> dict[str, str]:
    return {"X-API-Key": value}


def outcome(transaction_id: str, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": transaction_id,
        "outcome": "fraud",
        "source": "chargeback",
        "reported_at": "2026-02-11T09:12:00+01:00",
    }
    body.update(overrides)
    return body


async def _stored(client: Any) -> str:
    transaction_id = f"t-{uuid.uuid4().hex[:12]}"
    response = await client.post(
        "/transactions", json=transaction(transaction_id=transaction_id)
    )
    assert response.status_code == 200
    return transaction_id


@pytest.mark.integration
async def test_outcome_of_a_stored_transaction_is_recorded_and_read_back(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        transaction_id = await _stored(client)
        first = await client.post("/outcomes", json=outcome(transaction_id))
        second = await client.post(
            "/outcomes",
            json=outcome(
                transaction_id,
                outcome="legitimate",
                source="analyst",
                reported_at="2026-02-01T10:00:00Z",
            ),
        )
        record = await client.get(f"/transactions/{transaction_id}")
    assert first.status_code == 201
    body = first.json()
    assert body["outcome"] == "fraud"
    assert body["reported_at"] == "2026-02-11T08:12:00Z"
    assert body["outcome_id"].startswith("out-")
    assert second.status_code == 201
    assert record.status_code == 200
    stored = record.json()
    assert stored["decision"]["transaction_id"] == transaction_id
    assert stored["decision"]["decision"] in ("APPROVE", "FLAG", "REVIEW")
    # Oldest report first, whatever order they arrived in.
    assert [o["source"] for o in stored["outcomes"]] == ["analyst", "chargeback"]
    count = await db.fetchval(
        "SELECT count(*) FROM transaction_outcomes WHERE transaction_id = $1",
        transaction_id,
    )
    assert count == 2


@pytest.mark.integration
async def test_unknown_transaction_is_404(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        posted = await client.post("/outcomes", json=outcome("never-stored"))
        read = await client.get("/transactions/never-stored")
    for response in (posted, read):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


@pytest.mark.integration
@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"outcome": "maybe"}, "outcome"),
        ({"source": ""}, "source"),
        ({"source": "Charge back!"}, "source"),
        ({"reported_at": "2026-02-11T09:12:00"}, "reported_at"),
        ({"reported_at": "yesterday"}, "reported_at"),
        ({"transaction_id": "bad id"}, "transaction_id"),
        ({"surprise": 1}, "surprise"),
        # Known before the transaction happened: impossible.
        ({"reported_at": "2026-01-28T14:29:59Z"}, "reported_at"),
    ],
)
async def test_bad_outcome_is_422_naming_the_field(
    gateway: GatewayFactory, overrides: dict[str, Any], field: str
) -> None:
    async with gateway() as client:
        transaction_id = await _stored(client)
        response = await client.post(
            "/outcomes", json={**outcome(transaction_id), **overrides}
        )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert field in [d["field"] for d in body["details"]]


@pytest.mark.integration
async def test_same_outcome_id_is_recorded_once(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        transaction_id = await _stored(client)
        sent = outcome(transaction_id, outcome_id="cb-000417")
        first = await client.post("/outcomes", json=sent)
        again = await client.post("/outcomes", json=sent)
        other = await client.post("/outcomes", json={**sent, "outcome": "legitimate"})
    assert first.status_code == 201
    assert again.status_code == 200
    assert again.headers["Idempotent-Replay"] == "true"
    assert again.json() == first.json()
    assert other.status_code == 409
    assert other.json()["error"] == "idempotency_conflict"
    rows = await db.fetchval(
        "SELECT count(*) FROM transaction_outcomes WHERE outcome_id = 'cb-000417'"
    )
    assert rows == 1


@pytest.mark.integration
async def test_scopes_guard_outcomes(gateway: GatewayFactory) -> None:
    async with gateway(api_keys=API_KEYS) as client:
        scored = await client.post(
            "/transactions",
            json=transaction(transaction_id="t-scoped"),
            headers=key(SCORER),
        )
        by_scorer = await client.post(
            "/outcomes", json=outcome("t-scoped"), headers=key(SCORER)
        )
        by_reporter = await client.post(
            "/outcomes", json=outcome("t-scoped"), headers=key(REPORTER)
        )
        by_operator = await client.post(
            "/outcomes", json=outcome("t-scoped"), headers=key(OPERATOR)
        )
        read_scorer = await client.get("/transactions/t-scoped", headers=key(SCORER))
        read_reporter = await client.get(
            "/transactions/t-scoped", headers=key(REPORTER)
        )
        read_operator = await client.get(
            "/transactions/t-scoped", headers=key(OPERATOR)
        )
    assert scored.status_code == 200
    assert by_scorer.status_code == 403
    assert by_scorer.json()["error"] == "forbidden"
    assert by_reporter.status_code == 201
    assert by_operator.status_code == 403
    assert read_scorer.status_code == 403
    assert read_reporter.status_code == 200
    assert read_operator.status_code == 200


@pytest.mark.integration
async def test_outcomes_table_refuses_update_and_delete(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        transaction_id = await _stored(client)
        response = await client.post("/outcomes", json=outcome(transaction_id))
    assert response.status_code == 201
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute("UPDATE transaction_outcomes SET outcome = 'legitimate'")
    with pytest.raises(asyncpg.RestrictViolationError, match="append-only"):
        await db.execute("DELETE FROM transaction_outcomes")


_STANDING = """
SELECT DISTINCT ON (transaction_id) transaction_id, outcome
FROM transaction_outcomes WHERE transaction_id = ANY($1)
ORDER BY transaction_id, reported_at DESC, id DESC
"""


@pytest.mark.integration
async def test_concurrent_outcomes_leave_the_history_with_the_standing_verdict(
    gateway: GatewayFactory,
    db: asyncpg.Pool,
    redis_db: aioredis.Redis,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    rng = random.Random(11)
    # Each outcome reaches Redis a random moment after its row is committed,
    # so the history updates land in an order unrelated to the database's.
    apply_outcome = HistoryStore.apply_outcome

    async def late(self: HistoryStore, *args: Any, **kwargs: Any) -> None:
        await asyncio.sleep(rng.uniform(0.0, 0.03))
        await apply_outcome(self, *args, **kwargs)

    monkeypatch.setattr(HistoryStore, "apply_outcome", late)
    # Two customers, two transactions each: outcomes of one customer's two
    # transactions also race on the same state.
    users = {"u-race-a": ["ra-1", "ra-2"], "u-race-b": ["rb-1", "rb-2"]}
    # 80 requests at once: room to queue for a connection on a loaded machine.
    patient = {
        "db_acquire_timeout_ms": 10_000,
        "db_statement_timeout_ms": 10_000,
        "history_timeout_ms": 5_000,
        "request_timeout_ms": 30_000,
    }
    async with gateway(**patient) as client:
        for round_ in range(5):
            tids = {}
            for user, names in users.items():
                for name in names:
                    tid = f"{name}-{round_}"
                    tids[tid] = user
                    body = transaction(transaction_id=tid, user_id=user)
                    answer = await client.post("/transactions", json=body)
                    assert answer.status_code == 200
            posts = []
            for tid in tids:
                minutes = list(range(20))
                rng.shuffle(minutes)  # report times out of order
                for i, minute in enumerate(minutes):
                    posts.append(
                        outcome(
                            tid,
                            outcome="fraud" if i % 2 == 0 else "legitimate",
                            reported_at=f"2026-02-01T10:{minute:02d}:00Z",
                            outcome_id=f"o-{tid}-{i}",
                        )
                    )
            rng.shuffle(posts)
            answers = await asyncio.gather(
                *(client.post("/outcomes", json=p) for p in posts)
            )
            assert [a.status_code for a in answers] == [201] * len(posts)
            standing = {
                r["transaction_id"]: r["outcome"]
                for r in await db.fetch(_STANDING, list(tids))
            }
            assert len(standing) == len(tids)
            for user in users:
                state = await _history_state(redis_db, user)
                mine = [tid for tid, owner in tids.items() if owner == user]
                for tid in mine:
                    label = state.outcomes[tid][0]
                    assert label == (standing[tid] == "fraud"), (round_, tid)
                # Every round's verdicts count, each by its standing verdict.
                everyone = list((await _all_standing(db, user)).values())
                assert state.known_fraud == everyone.count("fraud"), round_
                assert state.known_legit == everyone.count("legitimate"), round_

            # Replays of any of them change nothing.
            versions = {u: await _version(redis_db, u) for u in users}
            replays = await asyncio.gather(
                *(client.post("/outcomes", json=p) for p in posts[:10])
            )
            assert [a.status_code for a in replays] == [200] * 10
            assert {u: await _version(redis_db, u) for u in users} == versions


async def _all_standing(db: asyncpg.Pool, user: str) -> dict[str, str]:
    tids = await db.fetch(
        "SELECT transaction_id FROM transactions WHERE user_id = $1", user
    )
    rows = await db.fetch(_STANDING, [r["transaction_id"] for r in tids])
    return {r["transaction_id"]: r["outcome"] for r in rows}


def _state_key(user_id: str) -> str:
    return f"{TEST_REDIS_PREFIX}hist:v1:{hashlib.sha256(user_id.encode()).hexdigest()}"


async def _version(redis: aioredis.Redis, user_id: str) -> bytes | None:
    return await redis.hget(_state_key(user_id), "v")  # type: ignore[no-any-return]


async def _history_state(redis: aioredis.Redis, user_id: str) -> CustomerState:
    raw = await redis.hget(_state_key(user_id), "s")
    assert raw is not None
    return CustomerState.from_json(raw)


@pytest.mark.integration
@pytest.mark.parametrize("ahead", [timedelta(minutes=6), timedelta(days=365 * 70)])
async def test_an_outcome_reported_in_the_future_is_422(
    gateway: GatewayFactory, db: asyncpg.Pool, ahead: timedelta
) -> None:
    reported = (datetime.now(UTC) + ahead).isoformat().replace("+00:00", "Z")
    async with gateway() as client:
        transaction_id = await _stored(client)
        response = await client.post(
            "/outcomes", json=outcome(transaction_id, reported_at=reported)
        )
        just_now = datetime.now(UTC).isoformat().replace("+00:00", "Z")
        fine = await client.post(
            "/outcomes", json=outcome(transaction_id, reported_at=just_now)
        )
    assert response.status_code == 422
    body = response.json()
    assert body["error"] == "validation_error"
    assert [d["field"] for d in body["details"]] == ["reported_at"]
    assert "future" in body["details"][0]["problem"]
    assert fine.status_code == 201
    assert await db.fetchval("SELECT count(*) FROM transaction_outcomes") == 1
