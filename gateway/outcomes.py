"""Confirmed outcomes of stored transactions: append-only, idempotent on outcome_id."""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from gateway.errors import ApiError
from gateway.history import HistoryStore, HistoryUnavailable
from gateway.metrics import HISTORY_UNAVAILABLE
from gateway.schemas import OutcomeRequest
from gateway.storage import Storage

log = logging.getLogger("gateway.outcomes")

_STORED = """
SELECT user_id, payload->>'timestamp' AS timestamp
FROM transactions WHERE transaction_id = $1
"""

_INSERT = """
INSERT INTO transaction_outcomes (
    outcome_id, transaction_id, outcome, source, reported_at, payload_sha256
) VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (outcome_id) DO NOTHING
RETURNING id, outcome_id, transaction_id, outcome, source, reported_at, recorded_at
"""

_BY_OUTCOME_ID = """
SELECT id, outcome_id, transaction_id, outcome, source, reported_at, recorded_at,
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


async def record(
    storage: Storage, history: HistoryStore, body: OutcomeRequest
) -> RecordedOutcome:
    """Append one outcome, then bring the customer's history up to date.

    The verdict that stands is the latest reported, ties going to the row
    recorded last (the larger id). The history is given this outcome with
    that order key, not a re-read standing verdict: concurrent outcomes of one
    transaction then leave the history with the database's verdict whatever
    order their updates land in. The same outcome_id with the same fields is
    a replay; applying it again changes nothing unless an earlier attempt
    could not reach the history store.
    """
    recorded, user_id, row = await _append(storage, body)
    try:
        await history.apply_outcome(
            user_id,
            row["transaction_id"],
            row["outcome"] == "fraud",
            reported_epoch=row["reported_at"].timestamp(),
            tiebreak=row["id"],
        )
    except HistoryUnavailable as exc:
        # Limitation: the customer's history misses this verdict until the
        # outcome is posted again (a replay) or the history is rebuilt.
        HISTORY_UNAVAILABLE.labels("outcome").inc()
        log.warning("outcome stored but not applied to the history: %s", exc)
    return recorded


async def _append(
    storage: Storage, body: OutcomeRequest
) -> tuple[RecordedOutcome, str, asyncpg.Record]:
    """The stored outcome, the transaction's user id, and the stored row."""
    payload_hash = body.payload_hash()
    outcome_id = body.outcome_id or f"out-{uuid.uuid4().hex}"
    async with storage.transaction() as conn:
        transaction = await conn.fetchrow(_STORED, body.transaction_id)
        if transaction is None:
            raise not_found(body.transaction_id)
        stored, user_id = transaction["timestamp"], transaction["user_id"]
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
        if row is None:
            row = await conn.fetchrow(_BY_OUTCOME_ID, outcome_id)
            if row is None or row["payload_sha256"] != payload_hash:
                raise ApiError(
                    409,
                    "idempotency_conflict",
                    f"outcome_id {outcome_id!r} was already used with different fields",
                    [{"field": "outcome_id", "problem": "used with other fields"}],
                )
            replayed = True
        else:
            replayed = False
    return RecordedOutcome(_as_json(row), replayed=replayed), user_id, row


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
