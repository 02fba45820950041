"""Other spellings of the bad-input cases, through HTTP: encodings, JSON
oddities, other fields and limits. Each is refused in the one error shape,
with nothing scored or stored."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import asyncpg
import pytest
from conftest import GatewayFactory, transaction
from test_api import count_calls, rows

pytestmark = pytest.mark.integration

JSON = {"content-type": "application/json"}
VALID = json.dumps(transaction()).encode()


def with_raw(field: str, raw: str) -> bytes:
    """The valid transaction with ``field``'s JSON value replaced by ``raw`` text."""
    body = transaction()
    marker = "__RAW__"
    body[field] = marker
    return json.dumps(body).replace(f'"{marker}"', raw).encode()


def assert_error_shape(body: dict[str, Any]) -> None:
    assert set(body) == {"error", "message", "details"}
    assert isinstance(body["error"], str) and isinstance(body["message"], str)
    for item in body["details"]:
        assert set(item) == {"field", "problem"}


@pytest.mark.parametrize(
    ("name", "content", "headers", "status", "field"),
    [
        pytest.param(*case, id=case[0])
        for case in [
            ("utf8_bom", b"\xef\xbb\xbf" + VALID, JSON, 400, "body"),
            (
                "latin1_bytes",
                with_raw("device", '"m\xf6bile"').replace(b"\xc3\xb6", b"\xf6"),
                JSON,
                400,
                None,
            ),
            ("utf16", VALID.decode().encode("utf-16"), JSON, 400, None),
            ("text_plain", VALID, {"content-type": "text/plain"}, 415, "content-type"),
            (
                "form",
                b"transaction_id=t-1",
                {"content-type": "application/x-www-form-urlencoded"},
                415,
                "content-type",
            ),
            ("no_content_type", VALID, {}, 415, "content-type"),
            ("empty_body", b"", JSON, 422, None),
            ("json_null", b"null", JSON, 422, None),
            ("json_array", b"[]", JSON, 422, None),
            ("json_string", b'"t-1"', JSON, 422, None),
            ("truncated", VALID[:-5], JSON, 400, "body"),
            ("trailing_garbage", VALID + b"}", JSON, 400, "body"),
            (
                "deeply_nested",
                with_raw("device", "[" * 10_000 + "]" * 10_000),
                JSON,
                400,
                "body",
            ),
            (
                "nested_in_extra",
                with_raw("extra", "[" * 5000 + "]" * 5000),
                JSON,
                400,
                "body",
            ),
            (
                "amount_huge_string",
                with_raw("amount", '"' + "9" * 5000 + '"'),
                JSON,
                422,
                "amount",
            ),
            ("amount_huge_number", with_raw("amount", "9" * 4000), JSON, 422, "amount"),
            (
                "integer_over_digit_limit",
                with_raw("amount", "9" * 5000),
                JSON,
                400,
                "body",
            ),
            ("amount_tiny_exponent", with_raw("amount", "1e-400"), JSON, 422, "amount"),
            ("amount_neg_overflow", with_raw("amount", "-1e309"), JSON, 422, "amount"),
            (
                "amount_arabic_digits",
                with_raw("amount", '"\u0661\u0662"'),
                JSON,
                422,
                "amount",
            ),
            (
                "amount_fullwidth",
                with_raw("amount", '"\uff11\uff12"'),
                JSON,
                422,
                "amount",
            ),
            ("amount_hex", with_raw("amount", '"0x10"'), JSON, 422, "amount"),
            ("amount_underscore", with_raw("amount", '"1_000"'), JSON, 422, "amount"),
            ("amount_plus", with_raw("amount", '"+5"'), JSON, 422, "amount"),
            ("amount_object", with_raw("amount", '{"value": 5}'), JSON, 422, "amount"),
            (
                "id_nul",
                with_raw("transaction_id", '"t\\u0000"'),
                JSON,
                422,
                "transaction_id",
            ),
            ("user_nul", with_raw("user_id", '"u\\u0000x"'), JSON, 422, "user_id"),
            ("device_nul", with_raw("device", '"mob\\u0000ile"'), JSON, 422, "device"),
            (
                "category_nul",
                with_raw("product_category", '"W\\u0000"'),
                JSON,
                422,
                "product_category",
            ),
            (
                "lone_surrogate_id",
                with_raw("transaction_id", '"t\\ud800"'),
                JSON,
                422,
                "transaction_id",
            ),
            (
                "lone_surrogate_device",
                with_raw("device", '"\\udfff"'),
                JSON,
                422,
                "device",
            ),
            (
                "lone_surrogate_currency",
                with_raw("currency", '"\\ud800SD"'),
                JSON,
                422,
                "currency",
            ),
            (
                "id_unicode_digits",
                with_raw("transaction_id", '"t-\u0661\u0662"'),
                JSON,
                422,
                "transaction_id",
            ),
            (
                "id_newline",
                with_raw("transaction_id", '"t-1\\n"'),
                JSON,
                422,
                "transaction_id",
            ),
            (
                "user_long",
                with_raw("user_id", '"' + "u" * 300 + '"'),
                JSON,
                422,
                "user_id",
            ),
            (
                "device_long",
                with_raw("device", '"' + "d" * 300 + '"'),
                JSON,
                422,
                "device",
            ),
            (
                "currency_cyrillic",
                with_raw("currency", '"\u0423SD"'),
                JSON,
                422,
                "currency",
            ),
            ("country_null", with_raw("country", "null"), JSON, 422, "country"),
            (
                "timestamp_number",
                with_raw("timestamp", "1769610600"),
                JSON,
                422,
                "timestamp",
            ),
            (
                "timestamp_year_99999",
                with_raw("timestamp", '"99999-01-01T00:00:00Z"'),
                JSON,
                422,
                "timestamp",
            ),
            (
                "timestamp_unicode_digits",
                with_raw("timestamp", '"\u0662026-01-28T14:30:00Z"'),
                JSON,
                422,
                "timestamp",
            ),
            (
                "amount_infinity_token",
                with_raw("amount", "Infinity"),
                JSON,
                400,
                "body",
            ),
            ("amount_nan_token", with_raw("amount", "NaN"), JSON, 400, "body"),
        ]
    ],
)
async def test_malformed_request_is_refused_before_any_work(
    gateway: GatewayFactory,
    db: asyncpg.Pool,
    name: str,
    content: bytes,
    headers: dict[str, str],
    status: int,
    field: str | None,
) -> None:
    async with gateway() as client:
        scorings = count_calls(client, "score")
        response = await client.post("/transactions", content=content, headers=headers)
    assert response.status_code == status, response.text[:300]
    assert_error_shape(response.json())
    if field is not None:
        assert field in {d["field"] for d in response.json()["details"]}
    assert scorings[0] == 0
    assert await rows(db) == []


async def test_duplicate_keys_in_json_are_refused(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    # Two parsers may keep different copies of a repeated key; refuse it.
    content = VALID[:-1] + b', "amount": 9999.99}'
    async with gateway() as client:
        response = await client.post("/transactions", content=content, headers=JSON)
    assert response.status_code == 400
    assert_error_shape(response.json())
    assert "'amount'" in response.json()["message"]
    assert await rows(db) == []


async def test_body_limit_holds_for_chunked_bodies_and_other_routes(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async def chunks() -> Any:
        for _ in range(100):
            yield b" " * 1024

    async with gateway(max_body_bytes=4096) as client:
        chunked = await client.post("/transactions", content=chunks(), headers=JSON)
        batch = await client.post(
            "/risk/batch", content=b"[" + b" " * 5000 + b"]", headers=JSON
        )
        lying = await client.post(
            "/risk/analyze", content=VALID, headers={**JSON, "content-length": "x1"}
        )
    for response in (chunked, batch):
        assert response.status_code == 413
        assert_error_shape(response.json())
        assert response.json()["details"][0]["field"] == "body"
    assert lying.status_code in (400, 413)
    assert await rows(db) == []


async def test_batch_size_limit_and_empty_batch(gateway: GatewayFactory) -> None:
    batch = [transaction(transaction_id=f"b-{i}") for i in range(3)]
    async with gateway(max_batch_size=2) as client:
        over = await client.post("/risk/batch", json={"transactions": batch})
        empty = await client.post("/risk/batch", json={"transactions": []})
        bad_item = await client.post(
            "/risk/batch",
            json={"transactions": [transaction(), transaction(amount="NaN")]},
        )
    assert over.status_code == 413
    assert over.json()["error"] == "batch_too_large"
    assert empty.status_code == 422
    assert bad_item.status_code == 422
    assert bad_item.json()["details"][0]["field"] == "transactions.1.amount"


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/nowhere", 404, "not_found"),
        ("GET", "/transactions", 405, "method_not_allowed"),
        ("DELETE", "/health", 405, "method_not_allowed"),
    ],
)
async def test_routing_errors_share_the_error_shape(
    gateway: GatewayFactory, method: str, path: str, status: int, code: str
) -> None:
    async with gateway() as client:
        response = await client.request(method, path)
    assert response.status_code == status
    assert_error_shape(response.json())
    assert response.json()["error"] == code
    assert response.json()["details"]


async def test_an_overlong_integer_is_refused_without_python_internals(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        responses = [
            await client.post(
                path, content=with_raw("amount", "9" * 5000), headers=JSON
            )
            for path in ("/transactions", "/risk/analyze")
        ]
    for response in responses:
        assert response.status_code == 400
        body = response.json()
        assert_error_shape(body)
        assert "number too long" in body["message"]
        assert "sys." not in response.text and "4300" not in response.text
    assert await rows(db) == []


SCORING_ROUTES = ["/transactions", "/risk/analyze", "/anomaly/score", "/risk/classify"]


@pytest.mark.parametrize("path", [*SCORING_ROUTES, "/risk/batch"])
async def test_a_transaction_from_the_future_is_422_on_every_scoring_route(
    gateway: GatewayFactory, db: asyncpg.Pool, path: str
) -> None:
    late = (datetime.now(UTC) + timedelta(days=1, minutes=5)).isoformat()
    bodies = [
        transaction(timestamp="2099-01-01T00:00:00Z"),
        transaction(timestamp=late),
    ]
    async with gateway() as client:
        scorings = count_calls(client, "score")
        responses = []
        for body in bodies:
            sent = {"transactions": [body]} if path == "/risk/batch" else body
            responses.append(await client.post(path, json=sent))
        refused_scorings = scorings[0]
        # Within the margin (a client clock a little ahead) is accepted.
        soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
        body = transaction(transaction_id="t-soon", timestamp=soon)
        sent = {"transactions": [body]} if path == "/risk/batch" else body
        accepted = await client.post(path, json=sent)
    for response in responses:
        assert response.status_code == 422, response.text
        body = response.json()
        assert_error_shape(body)
        (detail,) = body["details"]
        assert detail["field"].endswith("timestamp")
        assert "future" in detail["problem"] and "1 day" in detail["problem"]
    assert refused_scorings == 0
    assert accepted.status_code == 200, accepted.text


async def test_category_letter_case_is_the_same_transaction(
    gateway: GatewayFactory, db: asyncpg.Pool
) -> None:
    async with gateway() as client:
        first = await client.post("/transactions", json=transaction())
        lower = await client.post(
            "/transactions",
            json=transaction(product_category=" w", country="us", currency="usd"),
        )
        other = await client.post(
            "/transactions", json=transaction(product_category="C")
        )
    assert first.status_code == lower.status_code == 200
    assert lower.headers["idempotent-replay"] == "true"
    assert other.status_code == 409
    (row,) = await rows(db)
    assert json.loads(row["payload"])["product_category"] == "W"
