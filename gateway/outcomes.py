"""Confirmed outcomes of stored transactions: append-only, idempotent on outcome_id."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.errors import ApiError
from gateway.schemas import OutcomeRequest
from gateway.storage import Storage

_STORED_TIMESTAMP = """
SELECT payload->>'timestamp' FROM transactions WHERE transaction_id = $1
"""

_INSERT = """
INSERT INTO transaction_outcomes (
    outcome_id, transaction_id, outcome, source, reported_at, payload_sha256
) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (outcome_id) DO NOTHING
RETURNING outcome_id, transaction_id, outcome, source, reported_at, recorded_at
"""

_BY_OUTCOME_ID = """
SELECT outcome_id, transaction_id, outcome, source, reported_at, recorded_at,
       payload_sha256
FROM transaction_outcomes WHERE outcome_id = $1
"""

_FOR_TRANSACTION = """
SELECT outcome_id, transaction_id, outcome, source, reported_at, recorded_at
FROM transaction_outcomes WHERE transaction_id = $1
ORDER BY reported_at, id
"""

_DECISION = "SELECT response FROM transactions WHERE transaction_id = $1"

_FIELDS = ("outcome_id", "transaction_id", "outcome", "source")


@dataclass(frozen=True)
class RecordedOutcome:
    body: dict[str, Any]
    replayed: bool


def _as_json(row: asyncpg.Record) -> dict[str, Any]:
    body: dict[str, Any] = {name: row[name] for name in _FIELDS}
    for name in ("reported_at", "recorded_at"):
        body[name] = row[name].isoformat().replace("+00:00", "Z")
    return body


def not_found(transaction_id: str) -> ApiError:
    return ApiError(
        404,
        "not_found",
        f"no stored transaction with transaction_id {transaction_id!r}",
        [{"field": "transaction_id", "problem": "not a stored transaction"}],
    )


async def record(storage: Storage, body: OutcomeRequest) -> RecordedOutcome:
    """Append one outcome; the same outcome_id with the same fields is a replay."""
    payload_hash = body.payload_hash()
    outcome_id = body.outcome_id or f"out-{uuid.uuid4().hex}"
    async with storage.transaction() as conn:
        stored = await conn.fetchval(_STORED_TIMESTAMP, body.transaction_id)
        if stored is None:
            raise not_found(body.transaction_id)
        if body.reported_at < datetime.fromisoformat(stored):
            raise ApiError(
                422,
                "validation_error",
                "invalid request: reported_at",
                [
                    {
                        "field": "reported_at",
                        "problem": f"is before the transaction's timestamp {stored}",
                    }
                ],
            )
        row = await conn.fetchrow(
            _INSERT,
            outcome_id,
            body.transaction_id,
            body.outcome,
            body.source,
            body.reported_at,
            payload_hash,
        )
        if row is not None:
            return RecordedOutcome(_as_json(row), replayed=False)
        existing = await conn.fetchrow(_BY_OUTCOME_ID, outcome_id)
    if existing is None or existing["payload_sha256"] != payload_hash:
        raise ApiError(
            409,
            "idempotency_conflict",
            f"outcome_id {outcome_id!r} was already used with different fields",
            [{"field": "outcome_id", "problem": "already used with other fields"}],
        )
    return RecordedOutcome(_as_json(existing), replayed=True)


async def transaction_record(storage: Storage, transaction_id: str) -> dict[str, Any]:
    """The stored decision of a transaction and its outcomes, oldest report first."""
    async with storage.transaction() as conn:
        decision = await conn.fetchval(_DECISION, transaction_id)
        if decision is None:
            raise not_found(transaction_id)
        rows = await conn.fetch(_FOR_TRANSACTION, transaction_id)
    return {
        "transaction_id": transaction_id,
        "decision": decision,
        "outcomes": [_as_json(row) for row in rows],
    }
