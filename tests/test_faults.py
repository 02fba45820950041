"""Faults injected into private PostgreSQL, Redis and Triton servers under load.

Every server here is the test's own, on free ports of 127.0.0.1: Triton is
SIGKILLed and started again, PostgreSQL is stopped like a crash and started
again, Redis is stopped and started again, the gateway process is SIGKILLed,
clients hang up mid-request, and a proxy turns each dependency into one that
accepts connections and never answers. Load is bounded in time and count.

Run with ``-s`` to see the figures each test measured (lines ``FIGURE ...``).
"""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
import redis.asyncio as aioredis
from conftest import transaction
from fault_services import (
    PrivatePostgres,
    PrivateRedis,
    PrivateTriton,
    StallProxy,
    run_sync,
)
from triton_fixtures import build_test_repository, free_port, free_ports

from gateway.app import create_app
from gateway.config import Settings
from gateway.migrate import apply_migrations
from triton_local.server import LaunchOptions

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "faults:"
CONCURRENCY = 8

Stack = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def figure(name: str, value: object) -> None:
    print(f"FIGURE {name}={value}")


@pytest.fixture(scope="module")
def pg() -> Iterator[PrivatePostgres]:
    server = PrivatePostgres()
    try:
        server.init()
        server.start()
        run_sync(apply_migrations(server.dsn))
        yield server
    finally:
        server.destroy()


@pytest.fixture(scope="module")
def private_redis() -> Iterator[PrivateRedis]:
    server = PrivateRedis()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrivateTriton]:
    base = tmp_path_factory.mktemp("faults-triton")
    server = PrivateTriton(
        LaunchOptions(
            repository=build_test_repository(base / "repository"),
            run_dir=base / "run",
            ports=free_ports(),
            control_mode="explicit",
        )
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def pg_pool(
    pg: PrivatePostgres, private_redis: PrivateRedis
) -> AsyncIterator[asyncpg.Pool]:
    """The private database, emptied (with the private Redis) for each test."""
    if not pg.running():
        await asyncio.to_thread(pg.start)
    if not _listening(private_redis.port):
        await asyncio.to_thread(private_redis.start)
    pool = await asyncpg.create_pool(pg.dsn, min_size=1, max_size=2)
    await pool.execute("TRUNCATE transactions")
    client = aioredis.Redis.from_url(private_redis.url)
    await client.flushdb()
    await client.aclose()
    try:
        yield pool
    finally:
        await pool.close()


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture
def stack(
    pg_pool: asyncpg.Pool,
    pg: PrivatePostgres,
    private_redis: PrivateRedis,
    triton: PrivateTriton,
) -> Stack:
    """An in-process gateway on the private servers; keywords override settings."""

    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        app = create_app(
            Settings(**{**_settings(pg, private_redis, triton), **overrides})
        )
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app),
                base_url="http://gateway",
                timeout=30,
            ) as client,
        ):
            client.app = app  # type: ignore[attr-defined]
            yield client

    return make


def _settings(
    pg: PrivatePostgres, private_redis: PrivateRedis, triton: PrivateTriton
) -> dict[str, Any]:
    return {
        "database_url": pg.dsn,
        "redis_url": private_redis.url,
        "redis_key_prefix": PREFIX,
        "triton_url": triton.grpc_url,
        "triton_timeout_ms": 1000,
        "model_refresh_s": 0.5,
        "db_acquire_timeout_ms": 300,
        "db_statement_timeout_ms": 1000,
        "request_timeout_ms": 3000,
    }


@dataclass(frozen=True)
class Sent:
    transaction_id: str
    status: int  # 0: no answer (connection error or client timeout)
    body: dict[str, Any]
    started: float
    latency: float


async def post(client: httpx.AsyncClient, transaction_id: str, **extra: Any) -> Sent:
    started = time.monotonic()
    try:
        answer = await client.post(
            "/transactions", json=transaction(transaction_id=transaction_id, **extra)
        )
    except httpx.HTTPError:
        return Sent(transaction_id, 0, {}, started, time.monotonic() - started)
    try:
        body = answer.json()
    except ValueError:
        body = {}
    return Sent(
        transaction_id, answer.status_code, body, started, time.monotonic() - started
    )


async def wait_healthy(client: httpx.AsyncClient, timeout_s: float = 15.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (await client.get("/health")).status_code != 200:
        assert time.monotonic() < deadline, "the stack never became healthy"
        await asyncio.sleep(0.2)


async def load(
    client: httpx.AsyncClient,
    stop: asyncio.Event,
    tag: str,
    sent: list[Sent],
    *,
    limit: int = 4000,
    pause_s: float = 0.005,
) -> list[Sent]:
    """CONCURRENCY clients posting new transactions into ``sent`` until ``stop``."""

    async def worker(w: int) -> None:
        i = 0
        while not stop.is_set() and len(sent) < limit:
            sent.append(await post(client, f"{tag}-{w}-{i}"))
            i += 1
            await asyncio.sleep(pause_s)

    await asyncio.gather(*(worker(w) for w in range(CONCURRENCY)))
    return sent


async def stored(pool: asyncpg.Pool) -> dict[str, asyncpg.Record]:
    records = await pool.fetch(
        "SELECT transaction_id, decision, degraded, anomaly_score FROM transactions"
    )
    return {r["transaction_id"]: r for r in records}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def test_triton_killed_under_load_fails_safe_then_recovers(
    stack: Stack, pg_pool: asyncpg.Pool, triton: PrivateTriton
) -> None:
    async with stack() as client:
        stop = asyncio.Event()
        running = asyncio.create_task(load(client, stop, "tk", []))
        await asyncio.sleep(1.0)
        killed_at = time.monotonic()
        await asyncio.to_thread(triton.kill)
        await asyncio.sleep(1.5)
        stop.set()
        sent = await running

        restart_at = time.monotonic()
        await asyncio.to_thread(triton.restart)
        restarted_at = time.monotonic()
        after: list[Sent] = []
        while time.monotonic() - restarted_at < 20:
            after.append(await post(client, f"tk-after-{len(after)}"))
            if after[-1].status == 200 and not after[-1].body["degraded"]:
                break
            await asyncio.sleep(0.1)
        resumed_s = time.monotonic() - restarted_at

    answered = [s for s in sent + after if s.status == 200]
    assert {s.status for s in sent + after} == {200}
    degraded = [s for s in answered if s.body["degraded"]]
    for s in answered:
        if s.body["decision"] == "APPROVE":
            assert not s.body["degraded"]
            assert s.body["anomaly_score"] is not None
        if s.body["degraded"]:
            assert s.body["decision"] == "REVIEW"
            assert s.body["anomaly_score"] is None
    assert any(s.started > killed_at + 0.2 for s in degraded)
    rows = await stored(pg_pool)
    for s in answered:
        row = rows[s.transaction_id]
        assert row["decision"] == s.body["decision"]
        assert row["degraded"] == s.body["degraded"]
    assert not after[-1].body["degraded"], "scoring did not resume after restart"
    # gRPC's reconnect backoff is capped at 1 s (gateway.triton).
    assert resumed_s < 2.0, resumed_s
    figure("triton_kill.requests", len(sent) + len(after))
    figure("triton_kill.degraded_answers", len(degraded))
    figure("triton_kill.rows_expected", len(answered))
    figure("triton_kill.rows_found", sum(s.transaction_id in rows for s in answered))
    figure("triton_kill.restart_s", round(restarted_at - restart_at, 2))
    figure("triton_kill.scoring_resumed_after_ready_s", round(resumed_s, 2))


async def test_postgres_stopped_under_load_503_fast_and_nothing_acknowledged_lost(
    stack: Stack, pg_pool: asyncpg.Pool, pg: PrivatePostgres
) -> None:
    async with stack() as client:
        stop = asyncio.Event()
        sent: list[Sent] = []
        running = asyncio.create_task(load(client, stop, "pg", sent))
        await asyncio.sleep(1.0)
        stopped_at = time.monotonic()
        await asyncio.to_thread(pg.stop, "immediate")
        await asyncio.sleep(2.0)
        await asyncio.to_thread(pg.start)
        restarted_at = time.monotonic()
        # Keep loading until the pool has found the server again, by itself.
        while time.monotonic() - restarted_at < 15:
            await asyncio.sleep(0.2)
            if sum(s.status == 200 and s.started > restarted_at for s in sent) >= 20:
                break
        stop.set()
        await running
        final = await post(client, "pg-final")

    statuses = {s.status for s in sent}
    assert statuses <= {200, 503}, statuses
    refused = [s for s in sent if s.status == 503]
    assert refused, "no request met the stopped database"
    for s in refused:
        assert s.body["error"] in ("storage_unavailable", "deadline_exceeded")
    latencies = [s.latency for s in refused]
    p50, worst = statistics.median(latencies), max(latencies)
    # Bounded by DB_ACQUIRE_TIMEOUT_MS (300) + DB_STATEMENT_TIMEOUT_MS (1000).
    assert p50 < 0.3, p50
    assert worst < 1.5, worst
    late_ok = [s for s in sent if s.status == 200 and s.started > restarted_at]
    assert late_ok, "the pool did not recover after the restart"
    assert final.status == 200

    rows = await stored(pg_pool)
    acknowledged = [s for s in sent if s.status == 200]
    missing = [s.transaction_id for s in acknowledged if s.transaction_id not in rows]
    assert missing == []
    stored_503 = sum(s.transaction_id in rows for s in refused)
    figure("pg_stop.requests", len(sent))
    figure("pg_stop.acknowledged_200", len(acknowledged))
    figure("pg_stop.rows_found_of_acknowledged", len(acknowledged) - len(missing))
    figure("pg_stop.refused_503", len(refused))
    figure("pg_stop.503_stored_anyway", stored_503)
    figure("pg_stop.503_p50_ms", round(p50 * 1000, 1))
    figure("pg_stop.503_max_ms", round(worst * 1000, 1))
    figure(
        "pg_stop.recovered_after_restart_s",
        round(min(s.started for s in late_ok) - restarted_at, 2),
    )
    figure("pg_stop.down_s", round(restarted_at - stopped_at, 2))


async def test_redis_stopped_duplicates_still_refused_then_reconnects(
    stack: Stack, pg_pool: asyncpg.Pool, private_redis: PrivateRedis
) -> None:
    key = PREFIX + "idem:txn:"
    async with stack(redis_timeout_ms=100) as client:
        first = await post(client, "rd-1")
        assert first.status == 200
        async with _redis(private_redis) as cache:
            assert await cache.exists(key + "rd-1")

        await asyncio.to_thread(private_redis.stop)
        replay = await client.post(
            "/transactions", json=transaction(transaction_id="rd-1")
        )
        copies = await asyncio.gather(*(post(client, "rd-2") for _ in range(10)))
        other = await post(client, "rd-2", amount=99.99)

        await asyncio.to_thread(private_redis.start)
        restarted_at = time.monotonic()
        back: list[Sent] = []
        async with _redis(private_redis) as cache:
            while time.monotonic() - restarted_at < 10:
                back.append(await post(client, f"rd-back-{len(back)}"))
                assert back[-1].status == 200
                if await cache.exists(key + back[-1].transaction_id):
                    break
                await asyncio.sleep(0.1)
            else:
                pytest.fail("the gateway never wrote to Redis again")
        reconnected_s = time.monotonic() - restarted_at

    assert replay.status_code == 200
    assert replay.headers["idempotent-replay"] == "true"
    assert replay.json() == first.body
    assert {c.status for c in copies} <= {200, 409}
    ok = [c for c in copies if c.status == 200]
    assert ok and all(c.body == ok[0].body for c in ok)
    assert other.status == 409
    assert other.body["error"] == "idempotency_conflict"
    counts = dict(
        await pg_pool.fetch(
            "SELECT transaction_id, count(*) FROM transactions GROUP BY 1"
        )
    )
    assert counts["rd-1"] == 1
    assert counts["rd-2"] == 1
    latencies = [c.latency for c in copies]
    figure("redis_stop.duplicates_sent", 1 + len(copies) + 1)
    figure("redis_stop.rows_for_duplicated_ids", counts["rd-1"] + counts["rd-2"])
    figure("redis_stop.duplicate_max_ms", round(max(latencies) * 1000, 1))
    figure("redis_stop.reconnected_after_restart_s", round(reconnected_s, 2))


@asynccontextmanager
async def _redis(server: PrivateRedis) -> AsyncIterator[aioredis.Redis]:
    client = aioredis.Redis.from_url(server.url)
    try:
        yield client
    finally:
        await client.aclose()


@asynccontextmanager
async def gateway_process(
    tmp_path: Path, **env: str
) -> AsyncIterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m gateway`` on a free port; killed at the end if still running."""
    port = free_port()
    log_path = tmp_path / "gateway.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"],
            cwd=ROOT,
            env={
                **os.environ,
                "HOST": "127.0.0.1",
                "PORT": str(port),
                "API_KEYS": "",
                "LOG_LEVEL": "WARNING",
                **env,
            },
            stdout=log,
            stderr=log,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        async with httpx.AsyncClient(timeout=1) as probe:
            deadline = time.monotonic() + 30
            while True:
                assert process.poll() is None, log_path.read_text()
                try:
                    if (await probe.get(f"{url}/health")).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                assert time.monotonic() < deadline, log_path.read_text()
                await asyncio.sleep(0.2)
        yield process, url
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


def _process_env(
    pg: PrivatePostgres, private_redis: PrivateRedis, triton_url: str
) -> dict[str, str]:
    return {
        "DATABASE_URL": pg.dsn,
        "REDIS_URL": private_redis.url,
        "REDIS_KEY_PREFIX": PREFIX,
        "TRITON_URL": triton_url,
        "TRITON_TIMEOUT_MS": "2000",
    }


async def test_gateway_killed_under_load_loses_no_acknowledged_transaction(
    pg_pool: asyncpg.Pool,
    pg: PrivatePostgres,
    private_redis: PrivateRedis,
    triton: PrivateTriton,
    tmp_path: Path,
) -> None:
    env = _process_env(pg, private_redis, triton.grpc_url)
    sent: list[Sent] = []
    async with (
        gateway_process(tmp_path, **env) as (process, url),
        httpx.AsyncClient(base_url=url, timeout=5) as client,
    ):
        stop = asyncio.Event()
        running = asyncio.create_task(load(client, stop, "gk", sent))
        await asyncio.sleep(1.5)
        process.send_signal(signal.SIGKILL)
        await asyncio.sleep(0.3)
        stop.set()
        await running

    acknowledged = [s for s in sent if s.status == 200]
    assert len(acknowledged) > 20
    assert any(s.status == 0 for s in sent), "the kill cut no request short"
    rows = await stored(pg_pool)
    missing = [s.transaction_id for s in acknowledged if s.transaction_id not in rows]
    assert missing == []
    answered_ids = {s.transaction_id for s in acknowledged}
    figure("gateway_kill.requests", len(sent))
    figure("gateway_kill.acknowledged_200", len(acknowledged))
    figure("gateway_kill.acknowledged_missing", len(missing))
    figure("gateway_kill.rows_stored_unacknowledged", len(set(rows) - answered_ids))


async def _idle_in_transaction(pool: asyncpg.Pool, database: str) -> int:
    return int(
        await pool.fetchval(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = $1 AND state LIKE 'idle in transaction%'",
            database,
        )
    )


async def test_clients_that_hang_up_leave_no_open_transaction(
    pg_pool: asyncpg.Pool,
    pg: PrivatePostgres,
    triton: PrivateTriton,
    tmp_path: Path,
) -> None:
    """Redis is down, so each request holds a transaction (the advisory lock)
    while Triton, slowed by a proxy, scores it: the worst moment to hang up."""
    slow = StallProxy(triton.handle.ports.grpc)
    slow.delay_s = 0.3
    env = {
        **_process_env(pg, PrivateRedis(), slow.address),  # nothing on that port
        "REDIS_TIMEOUT_MS": "50",
    }
    try:
        async with gateway_process(tmp_path, **env) as (process, url):
            host, port = "127.0.0.1", int(url.rsplit(":", 1)[1])
            async with httpx.AsyncClient(base_url=url, timeout=0.05) as impatient:
                hung_up = await asyncio.gather(
                    *(post(impatient, f"hu-timeout-{i}") for i in range(20))
                )
            body = b'{"transaction_id": "hu-half", "user_id": "u-1", "amount": 1'
            half = (
                b"POST /transactions HTTP/1.1\r\nhost: x\r\n"
                b"content-type: application/json\r\ncontent-length: 300\r\n\r\n" + body
            )
            await asyncio.gather(
                *(_send_and_close(host, port, half) for _ in range(10))
            )
            full = [_raw_post(f"hu-close-{i}") for i in range(10)]
            await asyncio.gather(*(_send_and_close(host, port, r) for r in full))
            during = await _idle_in_transaction(pg_pool, pg.database)
            # Well past the 0.3 s scorings, well before the server's own 5 s
            # idle_in_transaction_session_timeout would hide a leak.
            await asyncio.sleep(1.5)
            after = await _idle_in_transaction(pg_pool, pg.database)
            async with httpx.AsyncClient(base_url=url, timeout=10) as client:
                still = await post(client, "hu-after")
            assert process.poll() is None
    finally:
        slow.close()

    assert all(s.status == 0 for s in hung_up)
    assert after == 0
    assert still.status == 200 and not still.body["degraded"]
    figure("disconnects.clients_hung_up", len(hung_up) + 20)
    figure("disconnects.idle_in_transaction_while_scoring", during)
    figure("disconnects.idle_in_transaction_after", after)


def _raw_post(transaction_id: str) -> bytes:
    import orjson

    body = orjson.dumps(transaction(transaction_id=transaction_id))
    return (
        b"POST /transactions HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        + f"content-length: {len(body)}\r\n\r\n".encode()
        + body
    )


async def _send_and_close(host: str, port: int, data: bytes) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    writer.write(data)
    await writer.drain()
    await asyncio.sleep(0.05)
    writer.close()
    await writer.wait_closed()


@pytest.mark.parametrize(
    "silent",
    ["redis", "postgres", "triton", "all", "all-from-start", "postgres-past-deadline"],
)
async def test_a_dependency_that_never_answers_gets_a_timely_answer(
    stack: Stack,
    pg: PrivatePostgres,
    private_redis: PrivateRedis,
    triton: PrivateTriton,
    silent: str,
) -> None:
    proxies = {
        "redis": StallProxy(private_redis.port),
        "postgres": StallProxy(pg.port),
        "triton": StallProxy(triton.handle.ports.grpc),
    }
    stalled = list(proxies) if silent.startswith("all") else [silent.split("-")[0]]
    # Each dependency's own timeout answers first (Redis 100 ms, Triton 300 ms,
    # PostgreSQL 300 ms to connect and 1000 ms a statement); with a statement
    # timeout longer than the request's, the request deadline answers.
    timeout_ms = 1000 if silent == "postgres-past-deadline" else 3000
    statement_ms = 5000 if silent == "postgres-past-deadline" else 1000
    bound_s = {"redis": 1.0, "triton": 1.0, "postgres-past-deadline": 1.3}.get(
        silent, 1.7
    )
    overrides = {
        "db_statement_timeout_ms": statement_ms,
        "redis_url": f"redis://{proxies['redis'].address}/0",
        "database_url": f"postgresql://postgres@{proxies['postgres'].address}/"
        + pg.database,
        "triton_url": proxies["triton"].address,
        "request_timeout_ms": timeout_ms,
        "triton_timeout_ms": 300,
    }
    if silent == "all-from-start":
        for name in stalled:
            proxies[name].stalled = True
    try:
        started = time.monotonic()
        async with stack(**overrides) as client:
            startup_s = time.monotonic() - started
            if silent != "all-from-start":
                # Through the proxies, the gateway's first read of Triton's
                # models can time out on a loaded machine; the next refresh
                # follows. The warm-up needs a healthy stack to begin with.
                await wait_healthy(client)
                warm = await post(client, f"dl-{silent}-warm")
                assert warm.status == 200 and not warm.body["degraded"]
                for name in stalled:
                    proxies[name].stalled = True
            answers = await asyncio.gather(
                *(post(client, f"dl-{silent}-{i}") for i in range(5))
            )
    finally:
        for proxy in proxies.values():
            proxy.close()

    worst = max(a.latency for a in answers)
    assert worst < bound_s, worst
    statuses = {a.status for a in answers}
    errors = {a.body.get("error") for a in answers if a.status != 200}
    if silent == "redis":
        assert statuses == {200}
        assert not any(a.body["degraded"] for a in answers)
    elif silent == "triton":
        assert statuses == {200}
        assert all(a.body["degraded"] for a in answers)
        assert {a.body["decision"] for a in answers} == {"REVIEW"}
    elif silent == "postgres-past-deadline":
        assert statuses == {503}
        assert errors == {"deadline_exceeded"}
    else:
        assert statuses == {503}
        assert errors == {"storage_unavailable"}
    figure(
        f"deadline.{silent}.answers",
        sorted(f"{a.status} {a.body.get('error', '')}".strip() for a in answers),
    )
    figure(f"deadline.{silent}.max_ms", round(worst * 1000, 1))
    figure(f"deadline.{silent}.gateway_startup_s", round(startup_s, 2))
