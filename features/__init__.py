"""The feature contract shared by training and serving.

A transaction becomes a fixed-length float32 vector whose layout is named by
``SCHEMA_NAME`` and versioned by ``SCHEMA_VERSION``. The vector is raw and
deterministic: scaling and calibration live inside each model's ONNX graph,
so a model version carries everything it learned from data.

This module depends on numpy only, so the gateway can import it without
pulling in a training framework.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import numpy as np

SCHEMA_NAME = "txn-basic"
SCHEMA_VERSION = 1
SCHEMA_ID = f"{SCHEMA_NAME}-v{SCHEMA_VERSION}"

# The fields of a transaction, as a request or a CSV row carries them (CSV
# files add the label column `is_fraud`).
REQUIRED_FIELDS: tuple[str, ...] = (
    "transaction_id",
    "user_id",
    "amount",
    "currency",
    "country",
    "device",
    "timestamp",
)
OPTIONAL_FIELDS: tuple[str, ...] = ("product_category",)
LABEL_FIELD = "is_fraud"

# Every categorical field has an explicit bucket for values never seen in
# training. The vocabularies are part of the schema: changing one is a new
# schema version, because it moves the columns that a model was trained on.
OTHER = "__other__"
MISSING = "__missing__"

COUNTRIES: tuple[str, ...] = ("US", "ZZ", "XA", "XB", "XC", "XD")
DEVICES: tuple[str, ...] = ("mobile", "desktop", "unknown")
CURRENCIES: tuple[str, ...] = ("USD",)
PRODUCT_CATEGORIES: tuple[str, ...] = ("W", "C", "R", "H", "S", MISSING)

NUMERIC_FEATURES: tuple[str, ...] = (
    "log_amount",
    "amount_cents",
    "hour_sin",
    "hour_cos",
    "weekday_sin",
    "weekday_cos",
)


@dataclass(frozen=True)
class Vocabulary:
    field: str
    values: tuple[str, ...]

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(f"{self.field}={v}" for v in (*self.values, OTHER))

    def index(self, values: Sequence[str]) -> np.ndarray:
        """Column offsets within this one-hot block; unseen values go to OTHER."""
        lookup = {v: i for i, v in enumerate(self.values)}
        other = len(self.values)
        return np.fromiter(
            (lookup.get(v, other) for v in values), dtype=np.int64, count=len(values)
        )


VOCABULARIES: tuple[Vocabulary, ...] = (
    Vocabulary("country", COUNTRIES),
    Vocabulary("device", DEVICES),
    Vocabulary("currency", CURRENCIES),
    Vocabulary("product_category", PRODUCT_CATEGORIES),
)

FEATURE_NAMES: tuple[str, ...] = NUMERIC_FEATURES + tuple(
    c for vocab in VOCABULARIES for c in vocab.columns
)
NUM_FEATURES = len(FEATURE_NAMES)

_SECONDS_PER_DAY = 86_400.0
_SECONDS_PER_WEEK = 7 * _SECONDS_PER_DAY
# 1970-01-01 was a Thursday; shifting by three days puts Sunday 00:00 UTC at
# phase zero of the week.
_SUNDAY_SHIFT = 3 * _SECONDS_PER_DAY


def normalise_country(value: str) -> str:
    return value.strip().upper()


def normalise_currency(value: str) -> str:
    return value.strip().upper()


def normalise_device(value: str) -> str:
    return value.strip().lower()


def normalise_category(value: str | None) -> str:
    # Case-insensitive like the other fields: "w" is the category "W".
    if value is None or not value.strip():
        return MISSING
    return value.strip().upper()


def epoch_seconds(timestamp: datetime | str) -> float:
    """Seconds since the epoch of an aware timestamp or an RFC 3339 string."""
    if isinstance(timestamp, str):
        timestamp = datetime.fromisoformat(timestamp)
    if timestamp.tzinfo is None:
        raise ValueError("timestamp must carry a UTC offset")
    return timestamp.astimezone(UTC).timestamp()


def encode_columns(
    amount: np.ndarray,
    epoch: np.ndarray,
    country: Sequence[str],
    device: Sequence[str],
    currency: Sequence[str],
    product_category: Sequence[str | None],
) -> np.ndarray:
    """Vectorised encoding of already-parsed columns into the schema's layout."""
    amount = np.asarray(amount, dtype=np.float64)
    epoch = np.asarray(epoch, dtype=np.float64)
    n = amount.shape[0]
    out = np.zeros((n, NUM_FEATURES), dtype=np.float32)

    out[:, 0] = np.log1p(amount)
    # Cents from the amount rounded to two decimals, so 0.29 gives 0.29 and
    # not 0.28999.
    cents = np.rint(amount * 100.0) % 100.0
    out[:, 1] = cents / 100.0

    day_phase = 2.0 * math.pi * (epoch % _SECONDS_PER_DAY) / _SECONDS_PER_DAY
    out[:, 2] = np.sin(day_phase)
    out[:, 3] = np.cos(day_phase)
    week_phase = (
        2.0
        * math.pi
        * ((epoch - _SUNDAY_SHIFT) % _SECONDS_PER_WEEK)
        / _SECONDS_PER_WEEK
    )
    out[:, 4] = np.sin(week_phase)
    out[:, 5] = np.cos(week_phase)

    columns = (
        [normalise_country(v) for v in country],
        [normalise_device(v) for v in device],
        [normalise_currency(v) for v in currency],
        [normalise_category(v) for v in product_category],
    )
    offset = len(NUMERIC_FEATURES)
    rows = np.arange(n)
    for vocab, values in zip(VOCABULARIES, columns, strict=True):
        out[rows, offset + vocab.index(values)] = 1.0
        offset += len(vocab.values) + 1
    return out


def encode(transactions: Iterable[Mapping[str, Any]]) -> np.ndarray:
    """Encode transactions (mappings with the request's fields) as a float32 matrix.

    ``amount`` may be a Decimal, float, int or string; ``timestamp`` an aware
    datetime or an RFC 3339 string; ``product_category`` may be absent.
    """
    items = list(transactions)
    amount = np.array(
        [float(Decimal(str(t["amount"]))) for t in items], dtype=np.float64
    )
    epoch = np.array([epoch_seconds(t["timestamp"]) for t in items], dtype=np.float64)
    return encode_columns(
        amount,
        epoch,
        [t["country"] for t in items],
        [t["device"] for t in items],
        [t["currency"] for t in items],
        [t.get("product_category") for t in items],
    )
