"""Shared fixtures: a test database, a Redis db, a private Triton, a gateway."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from triton_fixtures import free_port, triton_repository, triton_server  # noqa: F401

from gateway.app import create_app
from gateway.config import Settings
from gateway.migrate import apply_migrations

# Each run gets its own database and Redis key prefix, so that two runs on one
# machine (or a developer's own data) never see each other's rows.
RUN_TOKEN = uuid.uuid4().hex[:10]
_OWN_DATABASE = "TEST_DATABASE_URL" not in os.environ
TEST_DATABASE_URL = os.environ.get(
    "TEST_DATABASE_URL", f"postgresql://postgres@127.0.0.1:5432/risk_test_{RUN_TOKEN}"
)
TEST_REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")
TEST_REDIS_PREFIX = f"test-{RUN_TOKEN}:"

GatewayFactory = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def transaction(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": "t-1",
        "user_id": "u-5e35f1b92798",
        "amount": 48.29,
        "currency": "USD",
        "country": "US",
        "device": "mobile",
        "timestamp": "2026-01-28T14:30:00Z",
        "product_category": "W",
    }
    body.update(overrides)
    return body


def closed_port_url(scheme: str) -> str:
    """An address where nothing listens, to stand for a stopped service."""
    port = free_port()
    if scheme == "postgresql":
        return f"postgresql://postgres@127.0.0.1:{port}/risk_test"
    if scheme == "redis":
        return f"redis://127.0.0.1:{port}/0"
    return f"127.0.0.1:{port}"


@pytest.fixture(scope="session")
async def database() -> AsyncIterator[asyncpg.Pool]:
    await apply_migrations(TEST_DATABASE_URL)
    pool = await asyncpg.create_pool(TEST_DATABASE_URL, min_size=1, max_size=4)
    try:
        yield pool
    finally:
        await pool.close()
        if _OWN_DATABASE:
            await _drop_database(TEST_DATABASE_URL)


async def _drop_database(dsn: str) -> None:
    parts = urlsplit(dsn)
    admin = await asyncpg.connect(urlunsplit(parts._replace(path="/postgres")))
    try:
        await admin.execute(
            f'DROP DATABASE IF EXISTS "{parts.path.lstrip("/")}" WITH (FORCE)'
        )
    finally:
        await admin.close()


@pytest.fixture
async def db(database: asyncpg.Pool) -> asyncpg.Pool:
    await database.execute("TRUNCATE transactions, transaction_outcomes")
    return database


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(TEST_REDIS_URL)

    async def forget() -> None:
        async for key in client.scan_iter(match=TEST_REDIS_PREFIX + "*"):
            await client.delete(key)

    await forget()
    try:
        yield client
    finally:
        await forget()
        await client.aclose()


@pytest.fixture
def gateway(
    db: asyncpg.Pool,
    redis_db: aioredis.Redis,
    triton_server: Any,  # noqa: F811
) -> GatewayFactory:
    """Builds an in-process gateway; keyword arguments override its settings."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "database_url": TEST_DATABASE_URL,
            "redis_url": TEST_REDIS_URL,
            "redis_key_prefix": TEST_REDIS_PREFIX,
            "triton_url": triton_server.grpc_url,
            "triton_timeout_ms": 2000,
        }
        values.update(overrides)
        app = create_app(Settings(**values))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client,
        ):
            client.app = app  # type: ignore[attr-defined]
            yield client

    return make
