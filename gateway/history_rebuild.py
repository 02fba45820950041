"""Rebuild the customer history in Redis from PostgreSQL.

``python -m gateway.history_rebuild`` (settings from the gateway's environment:
``DATABASE_URL``, ``REDIS_URL``, ``REDIS_KEY_PREFIX``)

PostgreSQL holds every decided transaction (the request as sent) and every
confirmed outcome; Redis holds only what was folded from them. After Redis
lost its data (a restart without persistence, a new Redis), or to fill the
history before a history model goes live on a new deployment, this folds the
stored transactions in time order, each outcome entering its customer's
history at its ``reported_at``, with the functions the gateway uses, and
writes every customer's state and the last days' amount counters.

Transactions are folded in timestamp order; the gateway applied them in
arrival order, so a customer whose transactions arrived out of order may get
a slightly different state (the order of seen values, the running mean past
20 transactions). It overwrites the states of the customers it finds: run it while no
transaction is being scored (a transaction scored meanwhile may be counted
in the old state and lost from the new one). ``--dry-run`` folds and reports
without writing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections.abc import Sequence
from datetime import datetime
from typing import Any

import asyncpg
import redis.asyncio as aioredis

from features import history
from gateway.config import Settings
from gateway.history import AMOUNTS_TTL_S, STATE_TTL_S, HistoryStore

_TRANSACTIONS = """
SELECT transaction_id, user_id, payload FROM transactions
ORDER BY (payload->>'timestamp')::timestamptz, id
"""
_OUTCOMES = """
SELECT o.id, o.transaction_id, o.outcome, o.reported_at, t.user_id
FROM transaction_outcomes o JOIN transactions t USING (transaction_id)
ORDER BY o.reported_at, o.id
"""
_BATCH = 500


def _event(record: Any) -> history.HistoryEvent:
    payload = record["payload"]
    if isinstance(payload, str):
        payload = json.loads(payload)
    return history.HistoryEvent.from_transaction(payload)


def _outcome(record: Any) -> history.Outcome:
    reported: datetime = record["reported_at"]
    return history.Outcome(
        known_at=reported.timestamp(),
        user_id=record["user_id"],
        transaction_id=record["transaction_id"],
        is_fraud=record["outcome"] == "fraud",
        # The order key the gateway gave it (gateway.outcomes.record).
        tiebreak=record["id"],
    )


async def fold_stored(database_url: str) -> tuple[history.HistoryFold, int, int]:
    """Every customer's history as the stored rows give it."""
    connection = await asyncpg.connect(database_url)
    try:
        events = [_event(r) for r in await connection.fetch(_TRANSACTIONS)]
        outcomes = [_outcome(r) for r in await connection.fetch(_OUTCOMES)]
    finally:
        await connection.close()
    state = history.HistoryFold()
    history.fold(events, outcomes, into=state)
    return state, len(events), len(outcomes)


async def write(state: history.HistoryFold, redis_url: str, key_prefix: str) -> None:
    store = HistoryStore(redis_url, key_prefix=key_prefix, timeout_s=5, budget_s=60)
    client = aioredis.Redis.from_url(redis_url, socket_timeout=5)
    try:
        items = list(state.customers.items())
        for start in range(0, len(items), _BATCH):
            async with client.pipeline(transaction=False) as pipe:
                for user_id, customer in items[start : start + _BATCH]:
                    key = store.state_key(user_id)
                    # The version moves on, so an online update that read the
                    # old state fails its compare-and-set and reads this one.
                    pipe.hincrby(key, "v", 1)
                    pipe.hset(key, "s", customer.to_json())
                    pipe.expire(key, STATE_TTL_S)
                await pipe.execute()
        async with client.pipeline(transaction=False) as pipe:
            for day, counts in state.amounts.days().items():
                key = store.amount_key(day)
                pipe.delete(key)
                if counts:
                    pipe.hset(key, mapping={str(c): n for c, n in counts.items()})
                    pipe.expire(key, AMOUNTS_TTL_S)
            await pipe.execute()
    finally:
        await client.aclose()
        await store.close()


async def rebuild(
    database_url: str, redis_url: str, key_prefix: str, dry_run: bool = False
) -> dict[str, Any]:
    started = time.monotonic()
    state, transactions, outcomes = await fold_stored(database_url)
    if not dry_run:
        await write(state, redis_url, key_prefix)
    return {
        "transactions": transactions,
        "outcomes": outcomes,
        "customers": len(state.customers),
        "amount_days": len(state.amounts.days()),
        "written": not dry_run,
        "seconds": round(time.monotonic() - started, 2),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m gateway.history_rebuild",
        description="Rebuild the customer history in Redis from PostgreSQL.",
    )
    parser.add_argument("--dry-run", action="store_true", help="fold, do not write")
    args = parser.parse_args(argv)
    settings = Settings()
    try:
        summary = asyncio.run(
            rebuild(
                settings.database_url,
                settings.redis_url,
                settings.redis_key_prefix,
                args.dry_run,
            )
        )
    except (OSError, asyncpg.PostgresError, aioredis.RedisError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
