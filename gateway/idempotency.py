"""Redis: the fast path that keeps retries of a transaction from being scored twice.

PostgreSQL's unique key remains the truth; losing Redis costs speed only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import orjson
import redis.asyncio as aioredis
from redis.exceptions import RedisError

log = logging.getLogger("gateway.idempotency")


@dataclass(frozen=True)
class Claimed:
    """This request owns the transaction id and must score and store it."""


@dataclass(frozen=True)
class Seen:
    """Another request got there first; ``response`` is None while it runs."""

    payload_sha256: str
    response: dict[str, Any] | None


@dataclass(frozen=True)
class Unavailable:
    """Redis did not answer; fall back on the database."""

    reason: str


ClaimResult = Claimed | Seen | Unavailable


def connect(url: str, timeout_s: float) -> aioredis.Redis:
    """A Redis client whose every connect and command gives up after
    ``timeout_s``, never retried behind the caller's back."""
    return aioredis.Redis.from_url(
        url,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry_on_timeout=False,
        health_check_interval=30,
    )


class IdempotencyStore:
    def __init__(
        self,
        url: str,
        *,
        ttl_s: int,
        pending_ttl_s: int,
        timeout_s: float,
        key_prefix: str = "risk:",
    ) -> None:
        self._prefix = key_prefix + "idem:txn:"
        self._ttl = ttl_s
        # A claim whose owner died must not block retries for a day.
        self._pending_ttl = pending_ttl_s
        self._redis = connect(url, timeout_s)

    async def close(self) -> None:
        await self._redis.aclose()

    async def ping(self) -> None:
        await self._redis.ping()

    async def claim(self, transaction_id: str, payload_sha256: str) -> ClaimResult:
        key = self._prefix + transaction_id
        marker = orjson.dumps({"h": payload_sha256})
        try:
            if await self._redis.set(key, marker, nx=True, ex=self._pending_ttl):
                return Claimed()
            raw = await self._redis.get(key)
        except (RedisError, OSError) as exc:
            return Unavailable(str(exc) or type(exc).__name__)
        if raw is None:
            # The other claim expired between SET and GET: treat as ours to retry.
            return await self.claim(transaction_id, payload_sha256)
        doc = orjson.loads(raw)
        return Seen(doc["h"], doc.get("r"))

    async def peek(self, transaction_id: str) -> Seen | None:
        try:
            raw = await self._redis.get(self._prefix + transaction_id)
        except (RedisError, OSError):
            return None
        if raw is None:
            return None
        doc = orjson.loads(raw)
        return Seen(doc["h"], doc.get("r"))

    async def complete(
        self, transaction_id: str, payload_sha256: str, response: dict[str, Any]
    ) -> None:
        value = orjson.dumps({"h": payload_sha256, "r": response})
        try:
            await self._redis.set(self._prefix + transaction_id, value, ex=self._ttl)
        except (RedisError, OSError) as exc:
            log.warning("idempotency record not cached: %s", exc)

    async def release(self, transaction_id: str, payload_sha256: str) -> None:
        """Drop our pending claim so that a retry can proceed at once."""
        key = self._prefix + transaction_id
        try:
            raw = await self._redis.get(key)
            if raw is not None and orjson.loads(raw) == {"h": payload_sha256}:
                await self._redis.delete(key)
        except (RedisError, OSError) as exc:
            log.warning("idempotency claim not released: %s", exc)
