"""The gateway through HTTP, against real PostgreSQL, Redis and a private Triton."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from conftest import GatewayFactory, closed_port_url, transaction

pytestmark = pytest.mark.integration

CASES = Path(__file__).parent / "cases"


async def rows(db: asyncpg.Pool) -> list[asyncpg.Record]:
    return await db.fetch("SELECT * FROM transactions ORDER BY id")


def count_calls(client: Any, method: str) -> list[int]:
    """Wrap a scorer method of the app behind ``client`` to count its calls."""
    scorer = client.app.state.service.scorer
    original = getattr(scorer, method)
    calls = [0]

    async def counted(*args: Any, **kwargs: Any) -> Any:
        calls[0] += 1
        return await original(*args, **kwargs)

    setattr(scorer, method, counted)
    return calls


async def test_health_checks_every_dependency(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        response = await client.get("/health")
    assert response.status_code == 200
    assert response.json() == {
        "status": "ok",
        "checks": {"triton": "ok", "postgres": "ok", "redis": "ok"},
    }


async def test_transaction_is_scored_and_stored(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        response = await client.post("/transactions", json=transaction())
    assert response.status_code == 200
    body = response.json()
    assert body["transaction_id"] == "t-1"
    assert 0.0 <= body["anomaly_score"] <= 1.0
    assert 0.0 <= body["risk_probability"] <= 1.0
    assert body["combined_score"] == pytest.approx(body["risk_probability"])
    assert body["decision"] in {"APPROVE", "FLAG", "REVIEW"}
    assert body["degraded"] is False
    # The versions that computed the scores, as Triton reported them.
    assert body["model_versions"] == {
        "anomaly_autoencoder": "1",
        "risk_classifier": "1",
    }
    assert body["policy_version"]

    (row,) = await rows(db)
    assert row["transaction_id"] == "t-1"
    assert row["amount"] == Decimal("48.29")
    assert row["decision"] == body["decision"]
    assert row["risk_probability"] == body["risk_probability"]
    assert row["degraded"] is False
    assert json.loads(row["response"]) == body


async def test_retry_replays_the_identical_answer_without_a_new_row(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        scorings = count_calls(client, "score")
        first = await client.post("/transactions", json=transaction())
        second = await client.post("/transactions", json=transaction())
    assert first.status_code == second.status_code == 200
    assert second.content == first.content
    assert second.headers["idempotent-replay"] == "true"
    assert scorings[0] == 1
    assert len(await rows(db)) == 1


async def test_duplicate_with_other_payload_is_409(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    original = json.loads((CASES / "duplicate.json").read_text())
    changed = json.loads((CASES / "duplicate_changed.json").read_text())
    async with gateway() as client:
        first = await client.post("/transactions", json=original)
        refused = await client.post("/transactions", json=changed)
    assert first.status_code == 200
    assert refused.status_code == 409
    assert refused.json()["details"][0]["field"] == "transaction_id"
    (row,) = await rows(db)
    assert row["amount"] == Decimal("150.00")


async def test_concurrent_duplicates_give_one_scoring_one_row(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    body = json.loads((CASES / "duplicate.json").read_text())
    async with gateway() as client:
        scorings = count_calls(client, "score")
        answers = await asyncio.gather(
            *(client.post("/transactions", json=body) for _ in range(10))
        )
    assert {a.status_code for a in answers} == {200}
    assert len({a.content for a in answers}) == 1
    assert scorings[0] == 1
    assert len(await rows(db)) == 1


async def test_lowercase_country_gets_the_same_answer(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        upper = await client.post("/risk/analyze", json=transaction(country="US"))
        lower = await client.post("/risk/analyze", json=transaction(country="us"))
    assert upper.json()["risk_probability"] == lower.json()["risk_probability"]
    assert upper.json()["anomaly_score"] == lower.json()["anomaly_score"]


@pytest.mark.parametrize(
    ("case", "status", "field"),
    [
        ("amount_infinity.json", 422, "amount"),
        ("amount_nan.json", 422, "amount"),
        ("amount_overflow.txt", 422, "amount"),
        ("amount_zero.json", 422, "amount"),
        ("amount_negative.json", 422, "amount"),
        ("transaction_id_long.json", 422, "transaction_id"),
        ("currency_unknown.json", 422, "currency"),
        ("missing_field.json", 422, "device"),
        ("not_json.txt", 400, None),
    ],
)
async def test_bad_input_is_refused_and_nothing_is_stored(
    gateway: GatewayFactory, db: asyncpg.Pool, case: str, status: int, field: str | None
) -> None:
    async with gateway() as client:
        scorings = count_calls(client, "score")
        response = await client.post(
            "/transactions",
            content=(CASES / case).read_bytes(),
            headers={"content-type": "application/json"},
        )
    assert response.status_code == status
    body = response.json()
    assert set(body) == {"error", "message", "details"}
    if field is not None:
        assert field in {d["field"] for d in body["details"]}
    assert scorings[0] == 0
    assert await rows(db) == []


async def test_amount_is_stored_exactly(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    cents, too_precise = json.loads((CASES / "amount_cents.json").read_text())
    async with gateway() as client:
        stored = await client.post("/transactions", json=cents)
        refused = await client.post("/transactions", json=too_precise)
    assert stored.status_code == 200
    assert refused.status_code == 422
    (row,) = await rows(db)
    assert row["amount"] == Decimal("0.10")
    assert json.loads(row["payload"])["amount"] == "0.10"


async def test_body_over_the_limit_is_413_quickly(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    huge = b'{"transaction_id": "' + b"x" * (5 * 1024 * 1024) + b'"}'
    async with gateway() as client:
        start = time.perf_counter()
        response = await client.post(
            "/transactions", content=huge, headers={"content-type": "application/json"}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"
    assert elapsed < 1.0
    assert await rows(db) == []


async def test_unreachable_triton_fails_safe_and_is_stored_degraded(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway(triton_url=closed_port_url("triton")) as client:
        response = await client.post("/transactions", json=transaction())
        health = await client.get("/health")
        info = await client.get("/model/info")
    body = response.json()
    assert response.status_code == 200
    assert body["decision"] == "REVIEW"
    assert body["degraded"] is True
    assert body["anomaly_score"] is None and body["risk_probability"] is None
    assert body["model_versions"] == {}
    (row,) = await rows(db)
    assert row["degraded"] is True and row["decision"] == "REVIEW"
    assert health.status_code == 503
    assert health.json()["checks"]["triton"] == "unavailable"
    assert info.json()["triton_reachable"] is False


async def test_failsafe_decision_comes_from_the_policy(
    gateway: GatewayFactory, tmp_path: Path
) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        'version = "strict-flag"\n[weights]\nanomaly = 0.5\nrisk = 0.5\n'
        "[review]\nanomaly_above = 0.9\nrisk_above = 0.9\n"
        "[flag]\nanomaly_above = 0.5\nrisk_above = 0.5\n"
        '[failsafe]\ndecision = "FLAG"\n'
    )
    async with gateway(
        triton_url=closed_port_url("triton"), policy_path=policy
    ) as client:
        response = await client.post("/risk/analyze", json=transaction())
    assert response.json()["decision"] == "FLAG"
    assert response.json()["policy_version"] == "strict-flag"


async def test_stopped_postgres_gives_503_and_analysis_still_works(
    gateway: GatewayFactory,
) -> None:
    async with gateway(database_url=closed_port_url("postgresql")) as client:
        stored = await client.post("/transactions", json=transaction())
        analysed = await client.post("/risk/analyze", json=transaction())
        health = await client.get("/health")
    assert stored.status_code == 503
    assert stored.json()["error"] == "storage_unavailable"
    assert analysed.status_code == 200
    assert analysed.json()["degraded"] is False
    assert health.status_code == 503


async def test_stopped_postgres_outcomes_and_reads_are_503_not_500(
    gateway: GatewayFactory,
) -> None:
    async with gateway(database_url=closed_port_url("postgresql")) as client:
        outcome = await client.post(
            "/outcomes",
            json={
                "transaction_id": "t-1",
                "outcome": "fraud",
                "source": "chargeback",
                "reported_at": "2026-02-01T00:00:00Z",
            },
        )
        read = await client.get("/transactions/t-1")
    for response in (outcome, read):
        assert response.status_code == 503, response.text
        assert response.json()["error"] == "storage_unavailable"
        assert response.headers["retry-after"] == "1"


async def test_failed_store_releases_the_claim_for_a_retry(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway(database_url=closed_port_url("postgresql")) as client:
        assert (
            await client.post("/transactions", json=transaction())
        ).status_code == 503
    async with gateway() as client:
        retry = await client.post("/transactions", json=transaction())
    assert retry.status_code == 200
    assert "idempotent-replay" not in retry.headers
    assert len(await rows(db)) == 1


async def test_without_redis_duplicates_are_still_refused(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway(redis_url=closed_port_url("redis")) as client:
        first = await client.post("/transactions", json=transaction())
        again = await client.post("/transactions", json=transaction())
        changed = await client.post("/transactions", json=transaction(amount=1500))
        health = await client.get("/health")
    assert first.status_code == again.status_code == 200
    assert again.content == first.content
    assert changed.status_code == 409
    assert len(await rows(db)) == 1
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"


async def test_batch_is_one_triton_call(gateway: GatewayFactory) -> None:
    batch = [transaction(transaction_id=f"b-{i}", amount=10 + i) for i in range(20)]
    async with gateway() as client:
        calls = count_calls(client, "score")
        response = await client.post("/risk/batch", json={"transactions": batch})
        single = await client.post("/risk/analyze", json=batch[7])
    assert response.status_code == 200
    results = response.json()["results"]
    assert [r["transaction_id"] for r in results] == [f"b-{i}" for i in range(20)]
    assert calls[0] == 2
    assert results[7]["risk_probability"] == pytest.approx(
        single.json()["risk_probability"], rel=1e-6
    )


async def test_batch_with_a_repeated_id_is_422(gateway: GatewayFactory) -> None:
    batch = [transaction(transaction_id="same"), transaction(transaction_id="same")]
    async with gateway() as client:
        response = await client.post("/risk/batch", json={"transactions": batch})
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "transactions.1.transaction_id"


async def test_batch_over_the_size_limit_is_413(gateway: GatewayFactory) -> None:
    batch = [transaction(transaction_id=f"b-{i}") for i in range(5)]
    async with gateway(max_batch_size=4) as client:
        response = await client.post("/risk/batch", json={"transactions": batch})
    assert response.status_code == 413


async def test_single_model_endpoints_agree_with_the_ensemble(
    gateway: GatewayFactory,
) -> None:
    async with gateway() as client:
        both = (await client.post("/risk/analyze", json=transaction())).json()
        anomaly = (await client.post("/anomaly/score", json=transaction())).json()
        risk = (await client.post("/risk/classify", json=transaction())).json()
    assert anomaly["anomaly_score"] == pytest.approx(both["anomaly_score"], rel=1e-6)
    assert risk["risk_probability"] == pytest.approx(both["risk_probability"], rel=1e-6)
    assert anomaly["model_version"] == "1"


async def test_model_info_reads_versions_and_schema_from_triton(
    gateway: GatewayFactory,
) -> None:
    async with gateway() as client:
        info = (await client.get("/model/info")).json()
    assert info["feature_schema"] == "txn-history-v1"
    assert len(info["feature_names"]) == 43
    assert info["triton_reachable"] is True
    for name in ("risk_ensemble", "anomaly_autoencoder", "risk_classifier"):
        model = info["models"][name]
        assert model["live_version"] == "1"
        assert model["feature_schema"] == "txn-basic-v1"
        assert model["usable"] is True


async def test_amount_with_hidden_extra_decimals_is_refused_not_rounded(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    body = json.dumps(transaction()).replace("48.29", "17.340000000000000000001")
    async with gateway() as client:
        response = await client.post(
            "/transactions", content=body, headers={"content-type": "application/json"}
        )
    assert response.status_code == 422
    assert response.json()["details"][0]["field"] == "amount"
    assert await rows(db) == []


async def test_huge_batch_is_refused_before_validating_its_items(
    gateway: GatewayFactory,
) -> None:
    body = '{"transactions": [' + ",".join(["{}"] * 21_000) + "]}"
    async with gateway(max_body_bytes=1_000_000) as client:
        start = time.perf_counter()
        response = await client.post(
            "/risk/batch", content=body, headers={"content-type": "application/json"}
        )
        elapsed = time.perf_counter() - start
    assert response.status_code == 413
    assert response.json()["error"] == "batch_too_large"
    assert len(response.content) < 1_000
    assert elapsed < 1.0


async def test_many_bad_items_give_a_short_error(gateway: GatewayFactory) -> None:
    body = {"transactions": [{} for _ in range(200)]}
    async with gateway() as client:
        response = await client.post("/risk/batch", json=body)
    assert response.status_code == 422
    assert len(response.json()["details"]) <= 20
    assert "more problems" in response.json()["message"]


@pytest.mark.parametrize(
    "request_id", ['a b"<script>', "x" * 65, "id=1 status=200", "ünï"]
)
async def test_unsafe_request_ids_are_replaced(
    gateway: GatewayFactory, request_id: str
) -> None:
    async with gateway() as client:
        response = await client.get(
            "/health", headers={"x-request-id": request_id.encode("utf-8")}
        )
    assert response.headers["x-request-id"] != request_id
    assert len(response.headers["x-request-id"]) == 32


async def test_safe_request_id_is_echoed(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        response = await client.get("/health", headers={"x-request-id": "req-42.a_b"})
    assert response.headers["x-request-id"] == "req-42.a_b"


async def test_health_answers_head_probes(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        response = await client.head("/health")
    assert response.status_code == 200
    assert response.content == b""


@pytest.mark.parametrize(
    "path", ["/transactions/%00", "/transactions/a%00b", "/transactions/" + "x" * 300]
)
async def test_unusable_transaction_ids_in_the_path_are_422(
    gateway: GatewayFactory, path: str
) -> None:
    async with gateway() as client:
        response = await client.get(path)
    assert response.status_code == 422
    assert set(response.json()) == {"error", "message", "details"}


async def test_a_trailing_slash_is_not_redirected(gateway: GatewayFactory) -> None:
    async with gateway() as client:
        response = await client.get("/transactions/", headers={"host": "evil.example"})
    assert response.status_code == 404
    assert "location" not in response.headers


async def test_the_access_log_escapes_the_path(
    gateway: GatewayFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="gateway.access")
    async with gateway() as client:
        await client.get("/zzz%0AFORGED%00line")
    lines = [r.getMessage() for r in caplog.records if r.name == "gateway.access"]
    assert lines and all("\n" not in line and "\x00" not in line for line in lines)
    assert any("zzz\\nFORGED\\x00line" in line for line in lines)
