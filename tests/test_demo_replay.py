import io
import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from demo import replay as replay_module
from demo.dataset import Transaction, read_transactions
from demo.replay import (
    Answered,
    build_parser,
    check_idempotency,
    compare_answers,
    parse_headers,
    run_replay,
    with_other_amount,
)
from demo.summary import (
    Outcome,
    format_summary,
    fraud_recall,
    legit_review_share,
    percentile,
    summarise,
)

BASE_URL = "http://127.0.0.1:8080"
HEADER = (
    "transaction_id,user_id,amount,currency,country,device,timestamp,"
    "product_category,is_fraud\n"
)


def outcome(
    decision: str | None = "APPROVE",
    label: bool | None = False,
    status: int | None = 200,
    latency_s: float = 0.01,
    degraded: bool = False,
    error: str | None = None,
) -> Outcome:
    return Outcome(
        transaction_id="t",
        label=label,
        latency_s=latency_s,
        status=status,
        decision=decision,
        degraded=degraded,
        error=error,
    )


# --- percentiles and the summary --------------------------------------------


def test_percentile_interpolates_between_ranks() -> None:
    values = [5.0, 1.0, 3.0, 2.0, 4.0]

    assert percentile(values, 0) == 1.0
    assert percentile(values, 50) == 3.0
    assert percentile(values, 100) == 5.0
    assert percentile(values, 95) == pytest.approx(4.8)
    assert percentile([7.0], 99) == 7.0


def test_percentile_of_nothing_is_an_error() -> None:
    with pytest.raises(ValueError):
        percentile([], 50)
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_summary_counts_decisions_by_label() -> None:
    summary = summarise(
        [
            outcome("REVIEW", label=True),
            outcome("FLAG", label=True),
            outcome("APPROVE", label=True),
            outcome("APPROVE", label=False),
            outcome("REVIEW", label=False, degraded=True),
            outcome("FLAG", label=None),
        ]
    )

    assert summary.decisions == {"APPROVE": 2, "FLAG": 2, "REVIEW": 2}
    assert summary.by_label["fraud"] == {"REVIEW": 1, "FLAG": 1, "APPROVE": 1}
    assert summary.by_label["unlabelled"] == {"FLAG": 1}
    assert summary.degraded == 1
    assert fraud_recall(summary) == (2, 3)
    assert legit_review_share(summary) == (1, 2)


def test_errors_are_grouped_by_status_with_the_first_body_as_sample() -> None:
    summary = summarise(
        [
            outcome(status=409, decision=None, error='{"detail": "first"}'),
            outcome(status=409, decision=None, error='{"detail": "second"}'),
            outcome(status=None, decision=None, error="ConnectError: refused"),
            outcome(status=200, decision=None, error="not a JSON object: []"),
            outcome("APPROVE"),
        ]
    )

    assert summary.failed == 4
    assert summary.succeeded == 1
    assert summary.errors["409"].count == 2
    assert summary.errors["409"].sample == '{"detail": "first"}'
    assert summary.errors["no answer"].count == 1
    assert summary.errors["200 unreadable body"].count == 1
    assert len(summary.latencies_s) == 4


def test_unknown_decision_is_counted_apart() -> None:
    summary = summarise([outcome("DECLINE", label=True)])

    assert summary.decisions["other"] == 1
    assert "other" in format_summary(summary, concurrency=1)


def test_report_shows_latency_throughput_errors_and_the_label_table() -> None:
    outcomes = [outcome("APPROVE", latency_s=0.001 * i) for i in range(1, 101)]
    outcomes += [outcome("REVIEW", label=True), outcome(status=503, error="down")]
    summary = summarise(outcomes, elapsed_s=2.0)

    report = format_summary(summary, concurrency=4)

    assert "requests: 102 in 2.00 s (51.0/s) at concurrency 4" in report
    assert "101 answered, 1 failed" in report
    assert "p50 " in report and "p95 " in report and "p99 " in report
    assert "503: 1  sample: down" in report
    assert "fraud recall (FLAG+REVIEW): 1/1 = 100.0%" in report
    assert "legit sent to REVIEW: 0/100 = 0.0%" in report
    table = report.splitlines()
    fraud_row = next(line for line in table if line.startswith("fraud "))
    assert fraud_row.split() == ["fraud", "0", "0", "1", "1"]


def test_report_warns_when_answers_are_degraded() -> None:
    summary = summarise([outcome("REVIEW", degraded=True), outcome("APPROVE")])

    assert "warning: 1 answers are degraded" in format_summary(summary, 1)


def test_report_without_labels_says_so() -> None:
    summary = summarise([outcome("APPROVE", label=None)], elapsed_s=1.0)

    report = format_summary(summary, concurrency=1)

    assert "fraud recall (FLAG+REVIEW): n/a (none)" in report
    assert "errors: none" in report
    assert "warning" not in report


# --- small helpers of the client ----------------------------------------------


def test_headers_are_parsed_and_malformed_ones_rejected() -> None:
    assert parse_headers(["X-API-Key: abc:def"]) == {"X-API-Key": "abc:def"}
    with pytest.raises(ValueError, match="NAME:VALUE"):
        parse_headers(["no-colon"])


def test_answers_differing_only_in_the_replay_mark_are_the_same() -> None:
    first = {"decision": "FLAG", "combined_score": 0.4, "replayed": False}

    assert compare_answers(first, {**first, "replayed": True}) == []
    assert compare_answers(first, {**first, "decision": "REVIEW"}) == ["decision"]
    assert compare_answers(first, {"decision": "FLAG", "replayed": True}) == [
        "combined_score"
    ]


def test_conflicting_payload_changes_only_the_amount() -> None:
    txn = Transaction(fields={"transaction_id": "t1", "amount": "17.30"}, label=None)

    other = with_other_amount(txn)

    assert other.fields == {"transaction_id": "t1", "amount": "18.30"}


def test_defaults_of_the_command_line() -> None:
    args = build_parser().parse_args(["--data", "x.csv"])

    assert args.url == "http://127.0.0.1:8080"
    assert args.concurrency == 8
    assert args.amount_as == "number"
    assert args.limit is None


# --- against a fake gateway, in process ---------------------------------------


def fake_gateway() -> FastAPI:
    """Scores by amount, stores answers, 409s on a changed payload."""
    app = FastAPI()
    stored: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    app.state.raw_bodies = []

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/transactions")
    async def transactions(request: Request) -> JSONResponse:
        raw = (await request.body()).decode()
        app.state.raw_bodies.append(raw)
        payload = json.loads(raw, parse_float=Decimal)
        txn_id = payload["transaction_id"]
        if txn_id == "boom":
            return JSONResponse({"detail": "scoring exploded"}, status_code=500)

        if txn_id in stored:
            first_payload, answer = stored[txn_id]
            if first_payload != payload:
                return JSONResponse({"detail": "conflict"}, status_code=409)
            return JSONResponse({**answer, "replayed": True}, status_code=200)

        amount = payload["amount"]
        decision = "REVIEW" if amount >= 500 else "FLAG" if amount >= 100 else "APPROVE"
        answer = {
            "transaction_id": txn_id,
            "combined_score": float(amount) / 1000,
            "decision": decision,
            "processed_at": f"2024-01-01T00:00:{len(stored):02d}Z",
            "degraded": txn_id.endswith("-degraded"),
            "replayed": False,
        }
        stored[txn_id] = (payload, answer)
        return JSONResponse(answer, status_code=201)

    return app


def transactions(*lines: str) -> list[Transaction]:
    return list(read_transactions(io.StringIO(HEADER + "".join(lines))))


def line(txn_id: str, amount: str, label: str) -> str:
    return f"{txn_id},u1,{amount},USD,US,mobile,2024-01-01T00:00:00Z,W,{label}\n"


@pytest.fixture
def app() -> FastAPI:
    return fake_gateway()


@pytest.fixture
async def client(app: FastAPI):
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        yield client


async def test_replay_posts_every_row_and_counts_the_answers(
    app: FastAPI, client: httpx.AsyncClient
) -> None:
    rows = transactions(
        line("a", "10.00", "0"),
        line("b", "150.50", "1"),
        line("c", "900.10", "1"),
        line("d-degraded", "20.00", ""),
        line("boom", "1.00", "0"),
    )

    summary, answered = await run_replay(client, rows, concurrency=3)

    assert summary.total == 5
    assert summary.decisions == {"APPROVE": 2, "FLAG": 1, "REVIEW": 1}
    assert summary.degraded == 1
    assert fraud_recall(summary) == (2, 2)
    assert summary.errors["500"].count == 1
    assert "scoring exploded" in summary.errors["500"].sample
    assert answered is not None and answered.transaction.transaction_id != "boom"
    assert any('"amount": 150.50' in body for body in app.state.raw_bodies)


async def test_idempotency_check_passes_against_an_idempotent_gateway(
    client: httpx.AsyncClient,
) -> None:
    _, answered = await run_replay(
        client, transactions(line("a", "10.00", "0")), concurrency=1
    )
    assert answered is not None

    check = await check_idempotency(client, answered, "number")

    assert check.passed
    assert check.replay_status == 200
    assert check.replay_marker is True
    assert check.conflict_status == 409


async def test_idempotency_check_fails_when_the_answer_changes(
    client: httpx.AsyncClient,
) -> None:
    rows = transactions(line("a", "10.00", "0"))
    _, answered = await run_replay(client, rows, concurrency=1)
    assert answered is not None
    altered = Answered(answered.transaction, {**answered.answer, "decision": "FLAG"})

    check = await check_idempotency(client, altered, "number")

    assert not check.passed
    assert check.differences == ["decision"]


async def test_unreachable_gateway_counts_as_no_answer() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    transport = httpx.MockTransport(refuse)
    async with httpx.AsyncClient(transport=transport, base_url=BASE_URL) as client:
        summary, answered = await run_replay(
            client, transactions(line("a", "1.00", "0")), concurrency=2
        )

    assert answered is None
    assert summary.errors["no answer"].count == 1
    assert "ConnectError" in summary.errors["no answer"].sample


async def test_whole_run_prints_report_and_exit_status(
    app: FastAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "txns.csv"
    data.write_text(HEADER + line("a", "10.00", "0") + line("b", "700.00", "1"))
    args = build_parser().parse_args(["--data", str(data), "--concurrency", "2"])

    status = await replay_module.replay(args, transport=httpx.ASGITransport(app=app))

    out = capsys.readouterr().out
    assert status == 0
    assert "/health -> 200" in out
    assert "decisions: APPROVE 1, FLAG 0, REVIEW 1" in out
    assert "idempotency check on a: passed" in out


async def test_whole_run_fails_when_a_request_fails(
    app: FastAPI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "txns.csv"
    data.write_text(HEADER + line("a", "10.00", "0") + line("boom", "5.00", "0"))
    args = build_parser().parse_args(["--data", str(data)])

    status = await replay_module.replay(args, transport=httpx.ASGITransport(app=app))

    assert status == 1
    assert "500: 1" in capsys.readouterr().out


def test_summary_says_how_many_answers_were_replays() -> None:
    from demo.summary import Outcome, format_summary, summarise

    outcomes = [
        Outcome("a", None, 0.01, 200, decision="APPROVE", replayed=True),
        Outcome("b", None, 0.01, 200, decision="FLAG"),
    ]
    text = format_summary(summarise(outcomes), concurrency=1)
    assert "1 answers were stored before and replayed" in text
