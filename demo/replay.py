"""Replays a transaction CSV file against the gateway and reports what it did.

    python -m demo.replay --url http://127.0.0.1:8080 \\
        --data data/samples/afd_coldstart_sample.csv [--concurrency 8] [--limit N]

Exits 1 if any request failed or the idempotency check did not hold.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import httpx

from demo.dataset import AmountFormat, DatasetError, Transaction, iter_file
from demo.summary import Outcome, Summary, format_summary

TRANSACTIONS_PATH = "/transactions"
# A gateway may mark an answer served from storage; that mark may differ
# between the first answer and the replay, everything else may not.
REPLAY_MARKERS = frozenset({"replayed"})


@dataclass(frozen=True)
class Answered:
    """A transaction that the gateway accepted, with its answer."""

    transaction: Transaction
    answer: dict[str, Any]


@dataclass(frozen=True)
class IdempotencyCheck:
    transaction_id: str
    replay_status: int | None
    differences: list[str] = field(default_factory=list)
    replay_marker: Any = None
    conflict_status: int | None = None

    @property
    def passed(self) -> bool:
        return (
            self.replay_status == 200
            and not self.differences
            and self.conflict_status == 409
        )


def parse_headers(values: Sequence[str]) -> dict[str, str]:
    headers: dict[str, str] = {}
    for value in values:
        name, sep, content = value.partition(":")
        if not sep or not name.strip():
            raise ValueError(f"header must look like NAME:VALUE, got {value!r}")
        headers[name.strip()] = content.strip()
    return headers


def compare_answers(first: Mapping[str, Any], second: Mapping[str, Any]) -> list[str]:
    """Names of the fields whose values differ between two answers."""
    keys = (first.keys() | second.keys()) - REPLAY_MARKERS
    return sorted(key for key in keys if first.get(key) != second.get(key))


def with_other_amount(transaction: Transaction) -> Transaction:
    """The same transaction id with a different amount: a conflicting payload."""
    try:
        amount = Decimal(transaction.fields["amount"]) + 1
    except InvalidOperation as exc:
        raise DatasetError(f"amount {transaction.fields['amount']!r}") from exc
    return replace(transaction, fields={**transaction.fields, "amount": str(amount)})


def outcome_from_response(
    transaction: Transaction, response: httpx.Response, latency_s: float
) -> tuple[Outcome, dict[str, Any] | None]:
    base = Outcome(
        transaction_id=transaction.transaction_id,
        label=transaction.label,
        latency_s=latency_s,
        status=response.status_code,
    )
    if not response.is_success:
        return replace(base, error=response.text), None

    try:
        answer = response.json()
    except json.JSONDecodeError:
        answer = None
    if not isinstance(answer, dict):
        return replace(base, error=f"not a JSON object: {response.text}"), None

    outcome = replace(
        base,
        decision=answer.get("decision"),
        degraded=bool(answer.get("degraded")),
        replayed=response.headers.get("idempotent-replay") == "true",
    )
    return outcome, answer


async def post_transaction(
    client: httpx.AsyncClient,
    transaction: Transaction,
    amount_format: AmountFormat,
) -> tuple[Outcome, dict[str, Any] | None]:
    body = transaction.body(amount_format)
    started = time.perf_counter()
    try:
        response = await client.post(
            TRANSACTIONS_PATH,
            content=body,
            headers={"content-type": "application/json"},
        )
    except httpx.HTTPError as exc:
        outcome = Outcome(
            transaction_id=transaction.transaction_id,
            label=transaction.label,
            latency_s=time.perf_counter() - started,
            status=None,
            error=f"{type(exc).__name__}: {exc}",
        )
        return outcome, None
    return outcome_from_response(transaction, response, time.perf_counter() - started)


async def run_replay(
    client: httpx.AsyncClient,
    transactions: Iterable[Transaction],
    concurrency: int,
    amount_format: AmountFormat = "number",
) -> tuple[Summary, Answered | None]:
    """Posts every transaction with at most ``concurrency`` in flight."""
    summary = Summary()
    first: Answered | None = None
    queue: asyncio.Queue[Transaction | None] = asyncio.Queue(maxsize=2 * concurrency)

    async def worker() -> None:
        nonlocal first
        while (transaction := await queue.get()) is not None:
            outcome, answer = await post_transaction(client, transaction, amount_format)
            summary.add(outcome)
            if first is None and answer is not None:
                first = Answered(transaction=transaction, answer=answer)

    started = time.perf_counter()
    workers = [asyncio.create_task(worker()) for _ in range(concurrency)]
    try:
        for transaction in transactions:
            await queue.put(transaction)
    finally:
        for _ in workers:
            await queue.put(None)
        await asyncio.gather(*workers)
    summary.elapsed_s = time.perf_counter() - started
    return summary, first


async def check_idempotency(
    client: httpx.AsyncClient, answered: Answered, amount_format: AmountFormat
) -> IdempotencyCheck:
    """Resends an accepted transaction, then the same id with another amount."""
    transaction = answered.transaction
    outcome, replay = await post_transaction(client, transaction, amount_format)
    differences = ["(no answer)"] if replay is None else []
    if replay is not None:
        differences = compare_answers(answered.answer, replay)

    conflict, _ = await post_transaction(
        client, with_other_amount(transaction), amount_format
    )
    return IdempotencyCheck(
        transaction_id=transaction.transaction_id,
        replay_status=outcome.status,
        differences=differences,
        replay_marker=None if replay is None else replay.get("replayed"),
        conflict_status=conflict.status,
    )


def format_check(check: IdempotencyCheck) -> str:
    same = "yes" if not check.differences else "no: " + ", ".join(check.differences)
    marker = "" if check.replay_marker is None else f", replayed={check.replay_marker}"
    verdict = "passed" if check.passed else "FAILED"
    return (
        f"idempotency check on {check.transaction_id}: {verdict}\n"
        f"  same payload again -> {check.replay_status} (expected 200), "
        f"same answer: {same}{marker}\n"
        f"  same id, other amount -> {check.conflict_status} (expected 409)"
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m demo.replay",
        description="Replay a transaction CSV file against the gateway.",
    )
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--data", type=Path, required=True, help="CSV or CSV.gz")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--limit", type=int, default=None)
    parser.add_argument(
        "--amount-as",
        choices=("number", "string"),
        default="number",
        help="send the amount as a JSON number (the file's digits) or a string",
    )
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds")
    parser.add_argument(
        "--header",
        action="append",
        default=[],
        metavar="NAME:VALUE",
        help="extra request header; repeatable",
    )
    parser.add_argument(
        "--api-key",
        default=os.environ.get("API_KEY"),
        help="sent as X-API-Key (default: the API_KEY environment variable)",
    )
    return parser


def request_headers(args: argparse.Namespace) -> dict[str, str]:
    headers = parse_headers(args.header)
    if args.api_key:
        headers["X-API-Key"] = args.api_key
    return headers


async def replay(
    args: argparse.Namespace, transport: httpx.AsyncBaseTransport | None = None
) -> int:
    headers = request_headers(args)
    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(
        base_url=args.url,
        headers=headers,
        timeout=args.timeout,
        limits=limits,
        transport=transport,
    ) as client:
        try:
            health = await client.get("/health")
        except httpx.HTTPError as exc:
            print(f"cannot reach the gateway at {args.url}: {exc}", file=sys.stderr)
            return 1
        print(f"gateway {args.url} /health -> {health.status_code} {health.text}")

        transactions = iter_file(args.data, args.limit)
        summary, answered = await run_replay(
            client, transactions, args.concurrency, args.amount_as
        )
        print(format_summary(summary, args.concurrency))

        if answered is None:
            print("idempotency check skipped: no transaction was accepted")
            return 1
        check = await check_idempotency(client, answered, args.amount_as)
        print(format_check(check))

    return 0 if summary.failed == 0 and check.passed else 1


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.concurrency < 1:
        parser.error("--concurrency must be at least 1")
    if args.limit is not None and args.limit < 0:
        parser.error("--limit must not be negative")
    try:
        return asyncio.run(replay(args))
    except (DatasetError, OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
