"""PostgreSQL: the durable record of every acknowledged decision."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import asyncpg
import numpy as np
import orjson

from gateway.metrics import GROUP_COMMIT_ROWS
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
    model_versions, policy_version, degraded, response, features, feature_schema
) VALUES (
    $1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16
)
ON CONFLICT (transaction_id) DO NOTHING
RETURNING id
"""

# The group commit's statement: one row per array element, one transaction.
_INSERT_MANY = """
INSERT INTO transactions (
    transaction_id, user_id, payload, payload_sha256, amount, currency,
    anomaly_score, risk_probability, combined_score, decision,
    model_versions, policy_version, degraded, response, features, feature_schema
)
SELECT t, u, p::jsonb, h, a, c, s1, s2, s3, d, m::jsonb, v, g, r::jsonb,
       f::real[], fs
FROM unnest(
    $1::text[], $2::text[], $3::text[], $4::text[], $5::numeric[], $6::text[],
    $7::float8[], $8::float8[], $9::float8[], $10::text[],
    $11::text[], $12::text[], $13::bool[], $14::text[], $15::text[], $16::text[]
) AS rows(t, u, p, h, a, c, s1, s2, s3, d, m, v, g, r, f, fs)
ON CONFLICT (transaction_id) DO NOTHING
RETURNING transaction_id
"""

_SELECT = """
SELECT payload_sha256, response FROM transactions WHERE transaction_id = $1
"""

# Serialises everything done for one transaction id across gateway processes,
# until the end of the enclosing transaction. 64-bit hash: a collision only
# makes two ids wait for each other.
_LOCK = "SELECT pg_advisory_xact_lock(hashtextextended($1, 0))"

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


FeatureRow = Sequence[float] | np.ndarray
# Positions in ``_row`` of the columns that travel as text in a group commit.
_JSON_COLUMNS = (2, 10, 13)
_FEATURES_COLUMN = 14


def _float32s(values: FeatureRow | None) -> list[float] | None:
    """Python floats holding float32 values exactly, as PostgreSQL real keeps them."""
    if values is None:
        return None
    return [float(v) for v in np.asarray(values, dtype=np.float32)]


def _array_literal(values: list[float] | None) -> str | None:
    # repr gives the shortest decimal that reads back as the same float32.
    return None if values is None else "{" + ",".join(map(repr, values)) + "}"


def _row(
    request: TransactionRequest,
    payload_hash: str,
    response: ScoreResponse,
    features: FeatureRow | None = None,
    feature_schema: str | None = None,
) -> tuple[Any, ...]:
    """The parameters of ``_INSERT`` for one decision."""
    return (
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
        response.model_dump(mode="json"),
        _float32s(features),
        feature_schema,
    )


class Locked:
    """One connection inside a transaction that holds a transaction id's lock."""

    def __init__(self, conn: asyncpg.Connection) -> None:
        self._conn = conn

    async def fetch(self, transaction_id: str) -> StoredDecision | None:
        try:
            row = await self._conn.fetchrow(_SELECT, transaction_id)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        if row is None:
            return None
        return StoredDecision(row["payload_sha256"], row["response"])

    async def insert(
        self,
        request: TransactionRequest,
        payload_hash: str,
        response: ScoreResponse,
        *,
        features: FeatureRow | None = None,
        feature_schema: str | None = None,
    ) -> bool:
        """Insert within the lock's transaction: durable once the block is left."""
        row = _row(request, payload_hash, response, features, feature_schema)
        try:
            row_id = await self._conn.fetchval(_INSERT, *row)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        return row_id is not None


class Storage:
    def __init__(
        self,
        dsn: str,
        *,
        min_size: int,
        max_size: int,
        acquire_timeout_s: float,
        statement_timeout_s: float,
        group_commit_max_rows: int = 1,
        group_commit_window_s: float = 0.0,
    ) -> None:
        self._dsn = dsn
        # Group commit: inserts that arrive while one is being written wait and
        # go together in the next statement (at most max_rows; 1 turns it off).
        self._group_max = group_commit_max_rows
        self._group_window = group_commit_window_s
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[bool]]] = []
        self._writer: asyncio.Task[None] | None = None
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
        if self._writer is not None:
            await asyncio.wait([self._writer], timeout=self._statement_timeout * 2)
        if self._pool is not None:
            await self._pool.close()

    def _require_pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise StorageUnavailable("storage is not open")
        return self._pool

    async def insert(
        self,
        request: TransactionRequest,
        payload_hash: str,
        response: ScoreResponse,
        *,
        features: FeatureRow | None = None,
        feature_schema: str | None = None,
    ) -> bool:
        """Store a decision and the feature row it was made from; False when
        the transaction_id is already stored.

        Returns only after the row is committed, alone or in a group commit.
        """
        row = _row(request, payload_hash, response, features, feature_schema)
        if self._group_max <= 1:
            return await self._insert_one(row)
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._pending.append((row, done))
        if self._writer is None:
            self._writer = asyncio.create_task(self._write_pending())
        return await done

    async def _insert_one(self, row: tuple[Any, ...]) -> bool:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                row_id = await conn.fetchval(_INSERT, *row)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        return row_id is not None

    async def _write_pending(self) -> None:
        """Write what is pending, a statement at a time, until nothing is left."""
        try:
            while self._pending:
                if self._group_window > 0:
                    await asyncio.sleep(self._group_window)
                group = self._pending[: self._group_max]
                del self._pending[: self._group_max]
                # A caller that gave up (its deadline passed) was told nothing
                # was stored: its row is not written behind its back.
                group = [(row, done) for row, done in group if not done.done()]
                if not group:
                    continue
                try:
                    await self._commit_group(group)
                except Exception as exc:  # every caller must get an answer
                    log.exception("group commit failed")
                    for _, done in group:
                        _settle(done, exc=StorageUnavailable(str(exc)))
        finally:
            # Reached only by cancellation with work left: nobody may hang.
            for _, done in self._pending:
                if not done.done():
                    done.set_exception(StorageUnavailable("storage is closing"))
            self._pending.clear()
            self._writer = None

    async def _commit_group(
        self, group: list[tuple[tuple[Any, ...], asyncio.Future[bool]]]
    ) -> None:
        # An id sent twice within one group goes in once; the later caller is
        # answered False after the commit and reads the stored row, as it would
        # if it had come a moment later.
        first: dict[str, tuple[tuple[Any, ...], asyncio.Future[bool]]] = {}
        repeats = []
        for row, done in group:
            if row[0] in first:
                repeats.append(done)
            else:
                first[row[0]] = (row, done)
        rows = [row for row, _ in first.values()]
        GROUP_COMMIT_ROWS.observe(len(rows))
        try:
            inserted = await self._insert_many(rows)
        except StorageUnavailable as exc:
            # The rows queued behind this write would wait their own statement
            # timeout each, one group after another, on a database that just
            # failed: they are answered now, so that every 503 comes within
            # one acquire and one statement timeout.
            waiting, self._pending = self._pending, []
            for _, done in group + waiting:
                _settle(done, exc=exc)
            return
        except asyncpg.PostgresError:
            # A row the database refuses must not fail the others: retry alone.
            log.warning("group insert refused; writing %d rows one by one", len(rows))
            for row, done in first.values():
                try:
                    _settle(done, await self._insert_one(row))
                except Exception as exc:  # handed to the caller, not lost
                    _settle(done, exc=exc)
            for done in repeats:
                _settle(done, False)
            return
        for transaction_id, (_, done) in first.items():
            _settle(done, transaction_id in inserted)
        for done in repeats:
            _settle(done, False)

    async def _insert_many(self, rows: list[tuple[Any, ...]]) -> set[str]:
        columns = list(zip(*rows, strict=True))
        for index in _JSON_COLUMNS:  # JSONB columns travel as JSON text
            columns[index] = tuple(orjson.dumps(v).decode() for v in columns[index])
        # unnest would flatten a 2-D array: each row's features travel as text.
        columns[_FEATURES_COLUMN] = tuple(
            _array_literal(v) for v in columns[_FEATURES_COLUMN]
        )
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                records = await conn.fetch(_INSERT_MANY, *columns)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc
        return {record["transaction_id"] for record in records}

    @asynccontextmanager
    async def serialised(self, transaction_id: str) -> AsyncIterator[Locked]:
        """A transaction holding ``transaction_id``'s advisory lock.

        Leaving the block normally commits; only then is an insert made in it
        durable. Waiting for the lock is bounded by the statement timeout.
        """
        pool = self._require_pool()
        try:
            async with (
                pool.acquire(timeout=self._acquire_timeout) as conn,
                conn.transaction(),
            ):
                await conn.execute(_LOCK, transaction_id)
                yield Locked(conn)
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc

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

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection inside a transaction, committed when the block ends."""
        pool = self._require_pool()
        try:
            async with (
                pool.acquire(timeout=self._acquire_timeout) as conn,
                conn.transaction(),
            ):
                yield conn
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc

    async def ping(self) -> None:
        pool = self._require_pool()
        try:
            async with pool.acquire(timeout=self._acquire_timeout) as conn:
                await conn.fetchval("SELECT 1")
        except _UNAVAILABLE as exc:
            raise StorageUnavailable(str(exc) or type(exc).__name__) from exc


def _settle(
    done: asyncio.Future[bool], result: bool = False, exc: BaseException | None = None
) -> None:
    if done.done():  # the caller gave up (cancelled); the row may still be stored
        return
    if exc is not None:
        done.set_exception(exc)
    else:
        done.set_result(result)
