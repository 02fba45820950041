"""PostgreSQL: the durable record of every acknowledged decision."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import asyncpg
import orjson

from gateway.schemas import ScoreResponse, TransactionRequest

log = logging.getLogger("gateway.storage")


class StorageUnavailable(Exception):
    """PostgreSQL could not be reached or did not answer in time."""


@dataclass(frozen=True)
class StoredDecision:
    payload_sha256: str
    response: dict[str, Any]


_INSERT = """
INSERT INTO transactions (
    transaction_id, user_id, payload, payload_sha256, amount, currency,
    anomaly_score, risk_probability, combined_score, decision,
    model_versions, policy_version, degraded, response
) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)
ON CONFLICT (transaction_id) DO NOTHING
RETURNING id
"""

_SELECT = """
SELECT payload_sha256, response FROM transactions WHERE transaction_id = $1
"""

_UNAVAILABLE = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.CannotConnectNowError,
    asyncpg.QueryCanceledError,
    asyncpg.TooManyConnectionsError,
    asyncpg.AdminShutdownError,
)


async def _init_connection(conn: asyncpg.Connection) -> None:
    for type_name in ("json", "jsonb"):
        await conn.set_type_codec(
            type_name,
            encoder=lambda v: orjson.dumps(v).decode(),
            decoder=orjson.loads,
            schema="pg_catalog",
        )


class Storage:
    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        acquire_timeout_s: float,
        statement_timeout_s: float,
    ) -> None:
        self._dsn = dsn
        self._min_size = min_size
        self._max_size = max_size
        self._acquire_timeout = acquire_timeout_s
        self._statement_timeout = statement_timeout_s
        self._pool: asyncpg.Pool | None = None

    async def open(self) -> None:
        # min_size=0 lets the gateway start while PostgreSQL is down; the pool
        # then connects on first use and keeps the connections it makes.
        self._pool = await asyncpg.create_pool(
            self._dsn,
            min_size=0,
            max_size=self._max_size,
            command_timeout=self._statement_timeout,
            init=_init_connection,
            server_settings={
                "statement_timeout": str(int(self._statement_timeout * 1000)),
                "idle_in_transaction_session_timeout": "5000",
                "application_name": "risk-gateway",
            },
        )
        try:
            await self.warm_up(self._min_size)
        except StorageUnavailable as exc:
            log.warning("PostgreSQL not reachable at start-up: %s", exc)

    async def warm_up(self, count: int) -> None:
        pool = self._require_pool()
        conns = []
        try:
            for _ in range(count):
                conns.append(await pool.acquire(timeout=self._acquire_timeout))
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        finally:
            for conn in conns:
                await pool.release(conn)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        return self._pool

    async def insert(
        self, request: TransactionRequest, payload_hash: str, response: ScoreResponse
    ) -> bool:
        """Store a decision; False when the transaction_id is already stored.

        Returns only after the row is committed (the statement runs in its
        own implicit transaction).
        """
        pool = self._require_pool()
        body = response.model_dump(mode="json")
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                row_id = await conn.fetchval(
                    _INSERT,
                    request.transaction_id,
                    request.user_id,
                    request.canonical(),
                    payload_hash,
                    request.amount,
                    request.currency,
                    response.anomaly_score,
                    response.risk_probability,
                    response.combined_score,
                    response.decision.value,
                    response.model_versions,
                    response.policy_version,
                    response.degraded,
                    body,
                )
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        return row_id is not None

    async def fetch(self, transaction_id: str) -> StoredDecision | None:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                row = await conn.fetchrow(_SELECT, transaction_id)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        if row is None:
            return None
        return StoredDecision(row["payload_sha256"], row["response"])

    async def ping(self) -> None:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
