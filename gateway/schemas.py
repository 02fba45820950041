"""Request and response bodies, and the validation rules that guard them."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, Literal

import orjson
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    field_validator,
)

from gateway.codes import COUNTRIES, CURRENCIES
from gateway.policy import Decision

MAX_AMOUNT = Decimal("1000000000")  # fits NUMERIC(14, 2) with room to spare
_AMOUNT_TEXT = re.compile(r"^[0-9]{1,12}(\.[0-9]{1,12})?$")
# RFC 3339 date-time with a mandatory offset (Z or +hh:mm).
_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})$"
)
_EARLIEST = datetime(2000, 1, 1, tzinfo=UTC)
_LATEST = datetime(2100, 1, 1, tzinfo=UTC)
# How far past the server's clock a time may be. A transaction from the future
# would become its customer's latest time and push every real one out of the
# history windows; an outcome from the future would stand over every later
# correction (outcomes are append-only). The margins allow for clock skew.
TRANSACTION_FUTURE_MARGIN = timedelta(days=1)
OUTCOME_FUTURE_MARGIN = timedelta(minutes=5)

IDENTIFIER_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._:@-]*$"
Identifier = Annotated[
    str,
    StringConstraints(min_length=1, max_length=64, pattern=IDENTIFIER_PATTERN),
]
Token = Annotated[
    str,
    StringConstraints(
        strip_whitespace=True,
        min_length=1,
        max_length=32,
        pattern=r"^[A-Za-z0-9][A-Za-z0-9 _./&-]*$",
    ),
]


def _rfc3339_text(value: Any) -> Any:
    if not isinstance(value, str) or not _RFC3339.match(value):
        raise ValueError(
            "must be an RFC 3339 date-time with an offset, e.g. 2026-01-28T14:30:00Z"
        )
    return value


def _supported_years(value: datetime) -> datetime:
    if not _EARLIEST <= value < _LATEST:
        raise ValueError("must be between 2000-01-01 and 2100-01-01")
    return value


def _not_after_now_plus(margin: timedelta, value: datetime, what: str) -> datetime:
    if value > datetime.now(UTC) + margin:
        raise ValueError(f"is in the future: more than {what} past the server's clock")
    return value


# An RFC 3339 string with an offset (never a bare number or a naive time).
Rfc3339 = Annotated[
    datetime, BeforeValidator(_rfc3339_text), AfterValidator(_supported_years)
]


def _decimal_places(amount: Decimal) -> int:
    """Places after the point once trailing zeros go, exactly (no context
    rounding: 17.3400000000000000000000000001 has 28)."""
    _, digits, exponent = amount.as_tuple()
    assert isinstance(exponent, int)
    places = -exponent
    trailing = len(digits) - len("".join(map(str, digits)).rstrip("0"))
    return max(0, places - min(trailing, max(places, 0)))


def _parse_amount(value: Any) -> Decimal:
    # bool is an int in Python; true is not an amount.
    if isinstance(value, bool):
        raise ValueError("must be a number")
    if isinstance(value, str):
        if not _AMOUNT_TEXT.fullmatch(value):
            raise ValueError("must be a decimal number with at most two decimals")
        amount = Decimal(value)
    elif isinstance(value, int):
        amount = Decimal(value)
    elif isinstance(value, float):
        # repr gives the shortest text that reads back as the same float, which
        # is the text the client sent for any amount with up to 15 digits.
        try:
            amount = Decimal(repr(value))
        except InvalidOperation:
            raise ValueError("must be a finite number") from None
    elif isinstance(value, Decimal):
        amount = value
    else:
        raise ValueError("must be a number")
    if not amount.is_finite():
        raise ValueError("must be a finite number")
    if amount <= 0:
        raise ValueError("must be greater than 0")
    if amount > MAX_AMOUNT:
        raise ValueError(f"must not exceed {MAX_AMOUNT}")
    if _decimal_places(amount) > 2:
        raise ValueError("must have at most two decimal places")
    return amount.quantize(Decimal("0.01"))


class TransactionRequest(BaseModel):
    """A transaction to score. Unknown fields are ignored."""

    model_config = ConfigDict(
        extra="ignore",
        json_schema_extra={
            "example": {
                "transaction_id": "txn-0001",
                "user_id": "u-5e35f1b92798",
                "amount": 17.34,
                "currency": "USD",
                "country": "US",
                "device": "mobile",
                "timestamp": "2026-01-28T14:30:00Z",
                "product_category": "W",
            }
        },
    )

    transaction_id: Identifier
    user_id: Identifier
    amount: Annotated[
        Decimal,
        Field(
            description="Positive amount in `currency`, at most two decimals "
            '(a JSON number or a string such as "17.34")'
        ),
    ]
    currency: Annotated[
        str,
        Field(
            description="ISO 4217 code (case-insensitive)", min_length=3, max_length=3
        ),
    ]
    country: Annotated[
        str,
        Field(
            description="ISO 3166-1 alpha-2 code (case-insensitive); "
            "user-assigned codes XA-XZ, QM-QZ, AA and ZZ (unknown) are accepted",
            min_length=2,
            max_length=2,
        ),
    ]
    device: Token
    timestamp: Annotated[
        Rfc3339, Field(description="RFC 3339 date-time with a UTC offset")
    ]
    product_category: Token | None = None

    @field_validator("amount", mode="before")
    @classmethod
    def _amount(cls, value: Any) -> Decimal:
        return _parse_amount(value)

    @field_validator("currency", mode="before")
    @classmethod
    def _currency(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        code = value.upper() if value.isascii() else ""
        if code not in CURRENCIES:
            raise ValueError(f"unknown currency code {value!r}")
        return code

    @field_validator("country", mode="before")
    @classmethod
    def _country(cls, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError("must be a string")
        code = value.upper() if value.isascii() else ""
        if code not in COUNTRIES:
            raise ValueError(f"unknown country code {value!r}")
        return code

    @field_validator("device")
    @classmethod
    def _device(cls, value: str) -> str:
        return value.lower()

    @field_validator("product_category")
    @classmethod
    def _product_category(cls, value: str | None) -> str | None:
        # Case-insensitive like the features' encoding: "w" is the category
        # "W", so the idempotency hash and the stored payload agree.
        return value.upper() if value is not None else None

    @field_validator("timestamp")
    @classmethod
    def _timestamp(cls, value: datetime) -> datetime:
        return _not_after_now_plus(TRANSACTION_FUTURE_MARGIN, value, "1 day")

    def canonical(self) -> dict[str, Any]:
        """The fields that define the transaction, normalised, as JSON values."""
        return {
            "transaction_id": self.transaction_id,
            "user_id": self.user_id,
            "amount": str(self.amount),
            "currency": self.currency,
            "country": self.country,
            "device": self.device,
            "timestamp": self.timestamp.astimezone(UTC).isoformat(),
            "product_category": self.product_category,
        }

    def payload_hash(self) -> str:
        """A digest that is equal for two requests exactly when they mean the same."""
        body = orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()


# Triton's max_batch_size; MAX_BATCH_SIZE may set a lower limit. The length is
# checked before any item is validated.
BATCH_HARD_LIMIT = 1024


class BatchRequest(BaseModel):
    transactions: list[TransactionRequest] = Field(
        min_length=1, max_length=BATCH_HARD_LIMIT
    )


class ScoreResponse(BaseModel):
    transaction_id: str
    anomaly_score: float | None = Field(
        description="Calibrated anomaly score in [0, 1]; null when degraded"
    )
    risk_probability: float | None = Field(
        description="Calibrated fraud probability in [0, 1]; null when degraded"
    )
    combined_score: float | None
    decision: Decision
    processed_at: datetime
    model_versions: dict[str, str] = Field(
        description="Live version of each model that scored; empty when degraded"
    )
    policy_version: str
    degraded: bool = Field(
        description="True when the models could not be reached and the decision "
        "is the policy's fail-safe"
    )


class AnomalyResponse(BaseModel):
    transaction_id: str
    anomaly_score: float
    model_version: str
    processed_at: datetime


class ClassifyResponse(BaseModel):
    transaction_id: str
    risk_probability: float
    model_version: str
    processed_at: datetime


class BatchResponse(BaseModel):
    results: list[ScoreResponse]


class ErrorItem(BaseModel):
    field: str | None
    problem: str


class ErrorResponse(BaseModel):
    error: str = Field(description="A short machine-readable code")
    message: str
    details: list[ErrorItem] = []


class HealthResponse(BaseModel):
    status: str = Field(description="ok, degraded (Redis down) or unavailable")
    checks: dict[str, str]


class ModelState(BaseModel):
    live_version: str | None
    versions: list[str] = Field(description="versions ready in Triton")
    versions_on_disk: list[str] | None = Field(
        None, description="version directories; null unless MODEL_REPOSITORY is set"
    )
    failed_versions: dict[str, str] = Field(
        default_factory=dict, description="version -> why Triton failed to load it"
    )
    feature_schema: str | None
    usable: bool
    problem: str | None
    refused: str | None = Field(
        None, description="newer versions not used, and why (feature schema)"
    )
    training: dict[str, Any] | None = Field(
        None, description="the live version's model card; null unless readable"
    )


class ModelInfoResponse(BaseModel):
    feature_schema: str
    feature_names: list[str]
    policy_version: str
    models: dict[str, ModelState]


class OutcomeRequest(BaseModel):
    """A confirmed outcome of a stored transaction (chargeback, analyst verdict)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "example": {
                "transaction_id": "txn-0001",
                "outcome": "fraud",
                "source": "chargeback",
                "reported_at": "2026-02-11T09:12:00Z",
                "outcome_id": "cb-2026-000417",
            }
        },
    )

    transaction_id: Identifier
    outcome: Literal["fraud", "legitimate"]
    source: Annotated[
        str,
        StringConstraints(min_length=1, max_length=32, pattern=r"^[a-z][a-z0-9_-]*$"),
        Field(description="Who confirmed it: chargeback, analyst, ..."),
    ]
    reported_at: Annotated[
        Rfc3339,
        Field(description="When the outcome became known; RFC 3339 with an offset"),
    ]
    outcome_id: Annotated[
        Identifier | None,
        Field(
            description="The client's id for this report: sending it again with "
            "the same fields records nothing new"
        ),
    ] = None

    @field_validator("reported_at")
    @classmethod
    def _reported_at(cls, value: datetime) -> datetime:
        return _not_after_now_plus(OUTCOME_FUTURE_MARGIN, value, "5 minutes")

    def canonical(self) -> dict[str, Any]:
        return {
            "transaction_id": self.transaction_id,
            "outcome": self.outcome,
            "source": self.source,
            "reported_at": self.reported_at.astimezone(UTC).isoformat(),
        }

    def payload_hash(self) -> str:
        body = orjson.dumps(self.canonical(), option=orjson.OPT_SORT_KEYS)
        return hashlib.sha256(body).hexdigest()


class OutcomeResponse(BaseModel):
    outcome_id: str
    transaction_id: str
    outcome: str
    source: str
    reported_at: datetime
    recorded_at: datetime


class TransactionRecord(BaseModel):
    transaction_id: str
    decision: ScoreResponse = Field(description="The answer given when it was scored")
    outcomes: list[OutcomeResponse] = Field(
        description="Confirmed outcomes, oldest report first"
    )
