"""Request validation, without any service: each bad input is a clear error."""

import json
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from gateway.schemas import TransactionRequest

CASES = Path(__file__).parent / "cases"


def valid(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "transaction_id": "t-1",
        "user_id": "u-1",
        "amount": 10.0,
        "currency": "USD",
        "country": "US",
        "device": "mobile",
        "timestamp": "2026-01-28T14:30:00Z",
    }
    body.update(overrides)
    return body


def error_fields(body: dict[str, Any]) -> set[str]:
    with pytest.raises(ValidationError) as info:
        TransactionRequest.model_validate(body)
    return {str(e["loc"][0]) for e in info.value.errors()}


@pytest.mark.parametrize(
    "amount",
    [
        "Infinity",
        "-Infinity",
        "NaN",
        "nan",
        "inf",
        float("inf"),
        float("nan"),
        0,
        0.0,
        "0",
        -5.0,
        "-5",
        1e309,
        10.001,
        "10.001",
        48.717983,
        "1e3",
        True,
        None,
        [],
        {},
        "",
        " ",
        "10,00",
        10**13,
    ],
)
def test_bad_amounts_name_the_field(amount: Any) -> None:
    assert error_fields(valid(amount=amount)) == {"amount"}


@pytest.mark.parametrize(
    ("sent", "kept"),
    [
        (0.1, "0.10"),
        (48.71, "48.71"),
        ("48.71", "48.71"),
        (17, "17.00"),
        (0.29, "0.29"),
        (999999999.99, "999999999.99"),
    ],
)
def test_amount_is_kept_as_an_exact_decimal(sent: Any, kept: str) -> None:
    request = TransactionRequest.model_validate(valid(amount=sent))
    assert request.amount == Decimal(kept)
    assert str(request.amount) == kept


def test_lowercase_codes_mean_the_same_transaction() -> None:
    lower = TransactionRequest.model_validate(valid(country="us", currency="usd"))
    upper = TransactionRequest.model_validate(valid())
    assert lower.payload_hash() == upper.payload_hash()


@pytest.mark.parametrize("currency", ["XYZ", "US", "USDD", "", 840, "€"])
def test_unknown_currency_is_refused(currency: Any) -> None:
    assert error_fields(valid(currency=currency)) == {"currency"}


def test_legacy_currencies_from_card_feeds_are_accepted_as_sent() -> None:
    for code in ("VEF", "NIS", "GGP"):
        assert TransactionRequest.model_validate(valid(currency=code)).currency == code


@pytest.mark.parametrize("country", ["XY1", "U", "QA1", "00", "", "USA", 1])
def test_unknown_country_is_refused(country: Any) -> None:
    assert error_fields(valid(country=country)) == {"country"}


def test_user_assigned_countries_are_accepted() -> None:
    for code in ("XA", "QM", "ZZ"):
        assert TransactionRequest.model_validate(valid(country=code)).country == code


@pytest.mark.parametrize(
    "timestamp",
    [
        "2026-01-28T14:30:00",  # no offset
        "2026-01-28",
        "28/01/2026 14:30",
        1769610600,
        "2026-13-28T14:30:00Z",
        "1999-12-31T23:59:59Z",
        "2026-01-28T14:30:00+25:00",
    ],
)
def test_timestamp_must_be_rfc3339_with_offset(timestamp: Any) -> None:
    assert error_fields(valid(timestamp=timestamp)) == {"timestamp"}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("transaction_id", "x" * 65),
        ("transaction_id", ""),
        ("transaction_id", "a b"),
        ("transaction_id", "tx\x00"),
        ("user_id", "u" * 300),
        ("device", "d" * 33),
        ("product_category", "c" * 33),
        ("transaction_id", 12345),
    ],
)
def test_bounded_identifiers(field: str, value: Any) -> None:
    assert error_fields(valid(**{field: value})) == {field}


def test_offset_timestamp_is_the_same_transaction_as_utc() -> None:
    utc = TransactionRequest.model_validate(valid())
    shifted = TransactionRequest.model_validate(
        valid(timestamp="2026-01-28T15:30:00+01:00")
    )
    assert utc.payload_hash() == shifted.payload_hash()


def test_different_amount_is_a_different_payload() -> None:
    a = TransactionRequest.model_validate(valid(amount=150.0))
    b = TransactionRequest.model_validate(valid(amount=1500.0))
    assert a.payload_hash() != b.payload_hash()


@pytest.mark.parametrize(
    ("case", "field"),
    [
        ("amount_infinity.json", "amount"),
        ("amount_nan.json", "amount"),
        ("amount_zero.json", "amount"),
        ("amount_negative.json", "amount"),
        ("transaction_id_long.json", "transaction_id"),
        ("currency_unknown.json", "currency"),
        ("missing_field.json", "device"),
    ],
)
def test_known_bad_cases(case: str, field: str) -> None:
    body = json.loads((CASES / case).read_text())
    assert error_fields(body) == {field}


@pytest.mark.parametrize("currency", ["uſd", "ıNR", " USD", "USD "])
def test_currency_must_be_plain_ascii_letters(currency: str) -> None:
    assert error_fields(valid(currency=currency)) == {"currency"}


@pytest.mark.parametrize("country", ["ſe", " US", "US\n"])
def test_country_must_be_plain_ascii_letters(country: str) -> None:
    assert error_fields(valid(country=country)) == {"country"}


@pytest.mark.parametrize("amount", [" 17.34", "17.34\n", "１７.34"])
def test_amount_text_must_be_plain_digits(amount: str) -> None:
    assert error_fields(valid(amount=amount)) == {"amount"}


@pytest.mark.parametrize(
    "amount",
    [Decimal("17.3400000000000000000000000001"), "17.3400000000000000000000001"],
)
def test_digits_beyond_the_cents_are_refused_however_many(amount: Any) -> None:
    assert error_fields(valid(amount=amount)) == {"amount"}


@pytest.mark.parametrize("amount", [Decimal("17.340"), "17.340", "17.3400"])
def test_trailing_zeros_after_the_cents_are_the_same_amount(amount: Any) -> None:
    assert TransactionRequest.model_validate(valid(amount=amount)).amount == Decimal(
        "17.34"
    )
