"""Customer history online: the gateway computes, keeps and stores exactly the
features that training computes offline, whatever schemas the live models
speak, and never counts a transaction or a verdict twice."""

from __future__ import annotations

import csv
import hashlib
import heapq
import re
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import numpy as np
import pytest
import redis.asyncio as aioredis
import tritonclient.grpc as grpcclient
from conftest import (
    TEST_DATABASE_URL,
    TEST_REDIS_PREFIX,
    TEST_REDIS_URL,
    GatewayFactory,
    closed_port_url,
    transaction,
)
from triton_fixtures import COMMITTED_REPOSITORY, free_ports, write_linear_onnx

from features import history
from features.schemas import BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID, SCHEMAS, width
from gateway.app import create_app
from gateway.config import Settings
from gateway.history import HistoryStore
from training import synthetic
from training.data import Transactions, read_transactions
from training.history import encode
from training.labels import label_known_at
from triton_local.server import LaunchOptions, TritonHandle, start_triton

pytestmark = pytest.mark.integration

NAMES = list(SCHEMAS[HISTORY_SCHEMA_ID])

ANOMALY, CLASSIFIER = "anomaly_autoencoder", "risk_classifier"
# Model -> (output, weight seed, schema) of the stand-ins in the mixed Triton.
MIXED = {
    ANOMALY: ("anomaly_score", 11, BASIC_SCHEMA_ID),
    CLASSIFIER: ("risk_probability", 12, HISTORY_SCHEMA_ID),
}


def _config(model: str, schema: str) -> str:
    text = (COMMITTED_REPOSITORY / model / "config.pbtxt").read_text()
    text = re.sub(r"dims: \[ \d+ \]", f"dims: [ {width(schema)} ]", text, count=1)
    text = re.sub(r'string_value: "[^"]*"', f'string_value: "{schema}"', text)
    return re.sub(
        r"^version_policy:.*$",
        "version_policy: { latest: { num_versions: 1 } }",
        text,
        flags=re.MULTILINE,
    )


def _publish(
    repository: Path, model: str, version: int, schema: str, seed: int
) -> None:
    output = MIXED[model][0]
    write_linear_onnx(
        repository / model / str(version) / "model.onnx", output, seed, width(schema)
    )
    (repository / model / "config.pbtxt").write_text(_config(model, schema))


def _linear(x: np.ndarray, seed: int) -> np.ndarray:
    """What a stand-in model computes (``write_linear_onnx``'s weights)."""
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(x.shape[1], 1)).astype(np.float32)
    b = rng.normal(size=(1,)).astype(np.float32)
    logit = (x.astype(np.float64) @ w.astype(np.float64)).ravel() + float(b[0])
    return 1.0 / (1.0 + np.exp(-logit))


@pytest.fixture(scope="module")
def mixed_triton(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TritonHandle]:
    """The autoencoder on txn-basic-v1, the classifier on txn-history-v1 (no
    ensemble: its one input cannot feed two widths)."""
    repository = tmp_path_factory.mktemp("mixed") / "repository"
    for model, (_, seed, schema) in MIXED.items():
        _publish(repository, model, 1, schema, seed)
    handle = start_triton(
        LaunchOptions(
            repository=repository,
            run_dir=tmp_path_factory.mktemp("mixed-run"),
            ports=free_ports(),
            control_mode="poll",
            poll_secs=1,
        )
    )
    handle.repository = repository  # type: ignore[attr-defined]
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture
def mixed_gateway(
    db: asyncpg.Pool, redis_db: aioredis.Redis, mixed_triton: TritonHandle
) -> GatewayFactory:
    @asynccontextmanager
    async def make(**overrides: Any) -> AsyncIterator[httpx.AsyncClient]:
        values: dict[str, Any] = {
            "database_url": TEST_DATABASE_URL,
            "redis_url": TEST_REDIS_URL,
            "redis_key_prefix": TEST_REDIS_PREFIX,
            "triton_url": mixed_triton.grpc_url,
            "triton_timeout_ms": 2000,
            # Only what a request itself finds out about the models counts.
            "model_refresh_s": 3600,
        }
        values.update(overrides)
        app = create_app(Settings(**values))
        async with (
            app.router.lifespan_context(app),
            httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://gateway"
            ) as client,
        ):
            yield client

    return make


# --- the synthetic file -------------------------------------------------------


@pytest.fixture(scope="module")
def replay_file(tmp_path_factory: pytest.TempPathFactory) -> Transactions:
    """~400 rows, 20 customers over 30 days, bursts minutes apart; shared
    amounts so the global counter moves, and some rows without a label."""
    rows = synthetic.generate(400, seed=31, days=30, fraud_rate=0.08)
    for i, row in enumerate(rows):
        if i % 9 == 0:
            row["amount"] = "25.00"
        if i % 11 == 0:
            row["is_fraud"] = ""
    path = synthetic.write_csv(rows, tmp_path_factory.mktemp("file") / "file.csv")
    with path.open() as handle:
        assert len(list(csv.DictReader(handle))) == 400
    return read_transactions(path)


def _body(txns: Transactions, i: int) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": txns.transaction_id[i],
        "user_id": txns.user_id[i],
        "amount": round(float(txns.amount[i]), 2),
        "currency": txns.currency[i],
        "country": txns.country[i],
        "device": txns.device[i],
        "timestamp": _rfc3339(float(txns.epoch[i])),
    }
    if txns.product_category[i] is not None:
        body["product_category"] = txns.product_category[i]
    return body


def _rfc3339(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _stream(txns: Transactions) -> list[tuple[str, int, float]]:
    """Transactions and confirmed outcomes merged in time: an outcome known at
    t goes before the first transaction later than t (``history.fold``)."""
    known = label_known_at(txns)
    pending = [(float(known[i]), i) for i in range(len(txns)) if np.isfinite(known[i])]
    heapq.heapify(pending)
    out: list[tuple[str, int, float]] = []
    for i in range(len(txns)):
        while pending and pending[0][0] < txns.epoch[i]:
            at, j = heapq.heappop(pending)
            out.append(("outcome", j, at))
        out.append(("transaction", i, float(txns.epoch[i])))
    out.extend(("outcome", j, at) for at, j in sorted(pending))
    return out


def _outcome(txns: Transactions, i: int, at: float) -> dict[str, Any]:
    return {
        "transaction_id": txns.transaction_id[i],
        "outcome": "fraud" if txns.is_fraud[i] == 1 else "legitimate",
        "source": "chargeback",
        "reported_at": _rfc3339(at),
        "outcome_id": f"o-{txns.transaction_id[i]}",
    }


async def _replay(client: httpx.AsyncClient, txns: Transactions) -> list[dict]:
    answers = []
    for kind, i, at in _stream(txns):
        if kind == "transaction":
            response = await client.post("/transactions", json=_body(txns, i))
            assert response.status_code == 200, response.text
            answers.append(response.json())
        else:
            response = await client.post("/outcomes", json=_outcome(txns, i, at))
            assert response.status_code in (200, 201), response.text
    return answers


async def _stored_features(db: asyncpg.Pool) -> dict[str, tuple[np.ndarray, str]]:
    rows = await db.fetch(
        "SELECT transaction_id, features, feature_schema FROM transactions"
    )
    return {
        r["transaction_id"]: (
            np.asarray(r["features"], np.float32),
            r["feature_schema"],
        )
        for r in rows
    }


async def _history_keys(redis: aioredis.Redis) -> dict[bytes, Any]:
    """Every history key of this run and its value."""
    out: dict[bytes, Any] = {}
    async for key in redis.scan_iter(match=TEST_REDIS_PREFIX + "hist:*"):
        kind = await redis.type(key)
        out[key] = await (redis.hgetall(key) if kind == b"hash" else redis.get(key))
    return out


def _state_key(user_id: str) -> str:
    """Where a customer's history lives: no raw user id in Redis."""
    return f"{TEST_REDIS_PREFIX}hist:v1:{hashlib.sha256(user_id.encode()).hexdigest()}"


def _marker_key(transaction_id: str) -> str:
    digest = hashlib.sha256(transaction_id.encode()).hexdigest()
    return f"{TEST_REDIS_PREFIX}hist:v1:applied:{digest}"


def _assert_same_features(
    now: dict[str, tuple[np.ndarray, str]], before: dict[str, tuple[np.ndarray, str]]
) -> None:
    assert now.keys() == before.keys()
    for tid, (vector, schema) in before.items():
        assert now[tid][1] == schema, tid
        assert np.array_equal(now[tid][0], vector), tid


async def _state(redis: aioredis.Redis, user_id: str) -> history.CustomerState:
    raw = await redis.hget(_state_key(user_id), "s")
    assert raw is not None, "no history kept for this customer"
    return history.CustomerState.from_json(raw)


# --- (a) parity, (b) replays, (d) per-model schemas ------------------------------


async def test_features_stored_online_equal_the_offline_fold_exactly(
    mixed_gateway: GatewayFactory,
    db: asyncpg.Pool,
    redis_db: aioredis.Redis,
    replay_file: Transactions,
) -> None:
    txns = replay_file
    expected = encode(txns, HISTORY_SCHEMA_ID)
    block = expected[:, width(BASIC_SCHEMA_ID) :]
    names = history.HISTORY_FEATURE_NAMES
    # The file exercises the history: bursts, repeats, known outcomes.
    for feature in (
        "hist_log_count_1h",
        "hist_same_amount_before",
        "hist_log_amount_count_7d_all",
        "hist_log_known_fraud",
        "hist_log_known_legit",
        "hist_new_device",
    ):
        assert np.count_nonzero(block[:, names.index(feature)]) >= 3, feature
    assert np.count_nonzero(block[:, names.index("hist_is_first")]) == len(
        set(txns.user_id)
    )

    async with mixed_gateway() as client:
        answers = await _replay(client, txns)

    stored = await _stored_features(db)
    assert len(stored) == len(txns)
    for i, tid in enumerate(txns.transaction_id):
        vector, schema = stored[tid]
        assert schema == HISTORY_SCHEMA_ID
        assert vector.dtype == np.float32 and vector.shape == expected[i].shape
        mismatch = np.flatnonzero(vector != expected[i])
        assert mismatch.size == 0, (
            f"row {i} ({tid}): online != offline in "
            f"{[(NAMES[j], vector[j], expected[i][j]) for j in mismatch]}"
        )

    # Each model got the columns of its own schema, and both answered.
    assert not any(a["degraded"] for a in answers)
    assert all(set(a["model_versions"]) == {ANOMALY, CLASSIFIER} for a in answers)
    anomaly = np.array([a["anomaly_score"] for a in answers])
    risk = np.array([a["risk_probability"] for a in answers])
    basic = expected[:, : width(BASIC_SCHEMA_ID)]
    # float32 inside the models: compare with a float32-sized tolerance.
    close = {"rtol": 1e-4, "atol": 1e-6}
    np.testing.assert_allclose(anomaly, _linear(basic, MIXED[ANOMALY][1]), **close)
    np.testing.assert_allclose(risk, _linear(expected, MIXED[CLASSIFIER][1]), **close)
    # The history columns matter to the classifier's answers.
    without = np.pad(basic, ((0, 0), (0, expected.shape[1] - basic.shape[1])))
    assert not np.allclose(risk, _linear(without, MIXED[CLASSIFIER][1]), rtol=0.01)


async def test_retries_and_a_whole_replay_change_neither_history_nor_features(
    mixed_gateway: GatewayFactory,
    db: asyncpg.Pool,
    redis_db: aioredis.Redis,
    replay_file: Transactions,
) -> None:
    txns = replay_file
    async with mixed_gateway() as client:
        await _replay(client, txns)
        features_before = await _stored_features(db)
        keys_before = await _history_keys(redis_db)
        # Without its marker, a retry that touched the history would count the
        # transaction again: the idempotency layer must answer it alone.
        last = len(txns) - 1
        marker = _marker_key(txns.transaction_id[last]).encode()
        assert await redis_db.delete(marker) == 1
        retry = await client.post("/transactions", json=_body(txns, last))
        assert retry.status_code == 200
        assert retry.headers.get("Idempotent-Replay") == "true"
        keys_before.pop(marker)
        assert await _history_keys(redis_db) == keys_before

        await _replay(client, txns)
    assert await _history_keys(redis_db) == keys_before
    _assert_same_features(await _stored_features(db), features_before)


async def test_a_transaction_applied_twice_counts_once_and_returns_its_block(
    redis_db: aioredis.Redis,
) -> None:
    store = HistoryStore(
        TEST_REDIS_URL, key_prefix=TEST_REDIS_PREFIX, timeout_s=1, budget_s=1
    )
    event = history.HistoryEvent.of(
        user_id="u-twice",
        transaction_id="tw-1",
        amount=12.5,
        epoch=1_700_000_000.0,
        country="US",
        device="mobile",
        product_category="W",
    )
    later = history.HistoryEvent.of(
        user_id="u-twice",
        transaction_id="tw-2",
        amount=12.5,
        epoch=1_700_000_060.0,
        country="US",
        device="mobile",
        product_category="W",
    )
    try:
        first = await store.apply(event)
        second = await store.apply(event)
        then = await store.apply(later)
        assert np.array_equal(first, second)
        state = await _state(redis_db, "u-twice")
        assert state.count == 2
        fold = history.HistoryFold()
        fold.score_and_apply(event)
        assert np.array_equal(then, fold.score_and_apply(later))
    finally:
        await store.close()


# --- (c) outcomes ---------------------------------------------------------------


async def test_a_reposted_verdict_changes_nothing_and_a_reversed_one_moves_counts(
    mixed_gateway: GatewayFactory, db: asyncpg.Pool, redis_db: aioredis.Redis
) -> None:
    user = "u-verdicts"
    async with mixed_gateway() as client:
        body = transaction(transaction_id="v-1", user_id=user)
        assert (await client.post("/transactions", json=body)).status_code == 200
        fraud = {
            "transaction_id": "v-1",
            "outcome": "fraud",
            "source": "chargeback",
            "reported_at": "2026-02-04T10:00:00Z",
            "outcome_id": "cb-1",
        }
        assert (await client.post("/outcomes", json=fraud)).status_code == 201
        state = await _state(redis_db, user)
        assert (state.known_fraud, state.known_legit) == (1, 0)
        version = await redis_db.hget(_state_key(user), "v")

        replay = await client.post("/outcomes", json=fraud)
        assert replay.status_code == 200
        assert await redis_db.hget(_state_key(user), "v") == version
        # Another report of the same verdict: recorded later, so it becomes
        # the standing one, and the counts stay.
        again = await client.post("/outcomes", json={**fraud, "outcome_id": "cb-2"})
        assert again.status_code == 201
        state = await _state(redis_db, user)
        assert (state.known_fraud, state.known_legit) == (1, 0)

        reversed_ = {
            **fraud,
            "outcome": "legitimate",
            "source": "analyst",
            "reported_at": "2026-02-05T10:00:00Z",
            "outcome_id": "an-1",
        }
        assert (await client.post("/outcomes", json=reversed_)).status_code == 201
        state = await _state(redis_db, user)
        assert (state.known_fraud, state.known_legit) == (0, 1)
        # The replay of the first report does not bring the overturned verdict back.
        assert (await client.post("/outcomes", json=fraud)).status_code == 200
        state = await _state(redis_db, user)
        assert (state.known_fraud, state.known_legit) == (0, 1)

        nxt = transaction(
            transaction_id="v-2", user_id=user, timestamp="2026-02-06T10:00:00Z"
        )
        assert (await client.post("/transactions", json=nxt)).status_code == 200
    vector = (await _stored_features(db))["v-2"][0]
    assert vector[NAMES.index("hist_log_known_fraud")] == 0.0
    assert vector[NAMES.index("hist_log_known_legit")] == np.float32(np.log1p(1.0))


# --- a model changes schema under the gateway -----------------------------------


async def test_a_model_switching_schema_is_followed_without_a_degraded_answer(
    mixed_gateway: GatewayFactory, db: asyncpg.Pool, mixed_triton: TritonHandle
) -> None:
    repository: Path = mixed_triton.repository  # type: ignore[attr-defined]
    async with mixed_gateway() as client:
        first = await client.post(
            "/transactions", json=transaction(transaction_id="s-1")
        )
        assert first.json()["degraded"] is False

        # A classifier version on txn-basic-v1 goes live behind its back.
        _publish(repository, CLASSIFIER, 2, BASIC_SCHEMA_ID, seed=21)
        try:
            _await_config(mixed_triton.grpc_url, CLASSIFIER, width(BASIC_SCHEMA_ID))
            switched = await client.post(
                "/transactions",
                json=transaction(
                    transaction_id="s-2", timestamp="2026-01-28T15:00:00Z"
                ),
            )
            answer = switched.json()
            assert switched.status_code == 200 and answer["degraded"] is False
            assert answer["model_versions"][CLASSIFIER] == "2"
            info = (await client.get("/model/info")).json()
            assert info["models"][CLASSIFIER]["feature_schema"] == BASIC_SCHEMA_ID
            assert info["models"][ANOMALY]["feature_schema"] == BASIC_SCHEMA_ID
        finally:
            # Back to the history classifier for any later test.
            _publish(repository, CLASSIFIER, 3, HISTORY_SCHEMA_ID, seed=12)
            _await_config(mixed_triton.grpc_url, CLASSIFIER, width(HISTORY_SCHEMA_ID))
    stored = await _stored_features(db)
    # The history kept being computed and stored while no model read it.
    assert stored["s-2"][1] == HISTORY_SCHEMA_ID


def _await_config(url: str, model: str, dims: int, timeout_s: float = 30.0) -> None:
    client = grpcclient.InferenceServerClient(url=url)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                config = client.get_model_config(model, as_json=True)["config"]
                ready = client.is_model_ready(model)
            except Exception:  # reloading
                config, ready = {}, False
            inputs = config.get("input", [{}])
            if ready and [int(d) for d in inputs[0].get("dims", [])] == [dims]:
                return
            time.sleep(0.1)
    finally:
        client.close()
    raise AssertionError(f"{model} did not reload with {dims} inputs")


# --- (e) Redis down ---------------------------------------------------------------


async def test_redis_down_with_a_history_model_live_is_the_degraded_failsafe(
    mixed_gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with mixed_gateway(redis_url=closed_port_url("redis")) as client:
        response = await client.post(
            "/transactions", json=transaction(transaction_id="r-1")
        )
        metrics = (await client.get("/metrics")).text
    answer = response.json()
    assert response.status_code == 200
    assert answer["degraded"] is True
    assert answer["decision"] != "APPROVE"
    assert answer["model_versions"] == {}
    assert 'gateway_history_unavailable_total{consequence="degraded"}' in metrics
    row = await db.fetchrow(
        "SELECT degraded, feature_schema, features FROM transactions "
        "WHERE transaction_id = 'r-1'"
    )
    assert row["degraded"] is True and row["feature_schema"] == BASIC_SCHEMA_ID
    assert len(row["features"]) == width(BASIC_SCHEMA_ID)


async def test_redis_down_with_only_basic_models_is_answered_normally(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway(redis_url=closed_port_url("redis")) as client:
        response = await client.post(
            "/transactions", json=transaction(transaction_id="r-2")
        )
    answer = response.json()
    assert response.status_code == 200 and answer["degraded"] is False
    row = await db.fetchrow(
        "SELECT feature_schema, features FROM transactions WHERE transaction_id = 'r-2'"
    )
    assert row["feature_schema"] == BASIC_SCHEMA_ID
    assert len(row["features"]) == width(BASIC_SCHEMA_ID)
