"""Reading transaction CSVs (the gateway's request schema plus ``is_fraud``)."""

from __future__ import annotations

import csv
import gzip
import io
import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

import numpy as np

import features

COLUMNS: tuple[str, ...] = (
    *features.REQUIRED_FIELDS,
    *features.OPTIONAL_FIELDS,
    features.LABEL_FIELD,
)
REQUIRED_COLUMNS: tuple[str, ...] = features.REQUIRED_FIELDS

UNLABELLED = -1
# Optional column: when the label (chargeback, analyst verdict) became known.
REPORTED_AT = "reported_at"


class MalformedDataError(ValueError):
    """A transaction file that cannot be read, naming the file, line and column."""

    def __init__(self, path: Path, line: int, column: str | None, message: str):
        where = f"{path}:{line}" + (f": column {column!r}" if column else "")
        super().__init__(f"{where}: {message}")
        self.path = path
        self.line = line
        self.column = column


@dataclass(frozen=True)
class Transactions:
    """Parsed columns, ordered by timestamp (ties keep file order)."""

    transaction_id: list[str]
    user_id: list[str]
    amount: np.ndarray
    epoch: np.ndarray
    country: list[str]
    device: list[str]
    currency: list[str]
    product_category: list[str | None]
    is_fraud: np.ndarray
    """1 fraud, 0 legitimate, ``UNLABELLED`` (-1) when the source has no label."""
    reported_epoch: np.ndarray | None = None
    """When each label became known (optional column ``reported_at``); NaN where
    the file does not say. ``training.labels`` decides when a label may be used."""

    def __len__(self) -> int:
        return len(self.transaction_id)

    def encode_kwargs(self) -> dict[str, Any]:
        return {
            "amount": self.amount,
            "epoch": self.epoch,
            "country": self.country,
            "device": self.device,
            "currency": self.currency,
            "product_category": self.product_category,
        }

    def features(self) -> np.ndarray:
        return features.encode_columns(**self.encode_kwargs())

    def take(self, index: np.ndarray) -> Transactions:
        idx = [int(i) for i in index]
        return Transactions(
            transaction_id=[self.transaction_id[i] for i in idx],
            user_id=[self.user_id[i] for i in idx],
            amount=self.amount[index],
            epoch=self.epoch[index],
            country=[self.country[i] for i in idx],
            device=[self.device[i] for i in idx],
            currency=[self.currency[i] for i in idx],
            product_category=[self.product_category[i] for i in idx],
            is_fraud=self.is_fraud[index],
            reported_epoch=(
                None if self.reported_epoch is None else self.reported_epoch[index]
            ),
        )


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _parse_amount(value: str) -> float:
    amount = float(value)
    # The gateway refuses an amount that is not > 0: no such row is served.
    if not math.isfinite(amount) or amount <= 0:
        raise ValueError("must be a finite number greater than 0")
    return amount


def _parse_timestamp(value: str) -> float:
    stamp = datetime.fromisoformat(value)
    if stamp.tzinfo is None:
        raise ValueError("must carry a UTC offset (RFC 3339)")
    return stamp.timestamp()


def _parse_label(value: str) -> int:
    if value == "":
        return UNLABELLED
    if value not in ("0", "1"):
        raise ValueError("must be 0, 1 or empty")
    return int(value)


def _parse_reported(value: str, epoch: float) -> float:
    if not value.strip():
        return math.nan
    reported = _parse_timestamp(value.strip())
    if reported < epoch:
        raise ValueError("is before the transaction's timestamp")
    return reported


def _rows(path: Path, reader: Any, header: list[str]) -> Iterator[tuple[int, dict]]:
    for row in reader:
        if not row:
            continue
        if len(row) != len(header):
            raise MalformedDataError(
                path,
                reader.line_num,
                None,
                f"expected {len(header)} fields, found {len(row)}",
            )
        yield reader.line_num, dict(zip(header, row, strict=True))


def read_transactions(path: str | Path, max_rows: int | None = None) -> Transactions:
    """Read a transaction CSV (plain or gzip), at most ``max_rows`` data rows."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no transaction file at {path}")

    ids: list[str] = []
    users: list[str] = []
    amounts: list[float] = []
    epochs: list[float] = []
    countries: list[str] = []
    devices: list[str] = []
    currencies: list[str] = []
    categories: list[str | None] = []
    labels: list[int] = []
    reported: list[float] = []
    seen: dict[str, int] = {}  # transaction_id -> its line

    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise MalformedDataError(path, 1, None, "empty file, expected a header")
        missing = [c for c in REQUIRED_COLUMNS if c not in header]
        if missing:
            raise MalformedDataError(path, 1, None, f"header lacks columns {missing}")
        has_reported = REPORTED_AT in header

        for line, row in _rows(path, reader, header):
            if max_rows is not None and len(ids) >= max_rows:
                break
            for column in (
                "transaction_id",
                "user_id",
                "currency",
                "country",
                "device",
            ):
                if not row[column].strip():
                    raise MalformedDataError(path, line, column, "is empty")
            if not row["device"].strip():
                raise MalformedDataError(path, line, "device", "is empty")
            first = seen.setdefault(row["transaction_id"], line)
            if first != line:
                # The gateway answers a second id with another payload 409 and
                # stores a replay once: either way, one row per transaction.
                raise MalformedDataError(
                    path,
                    line,
                    "transaction_id",
                    f"{row['transaction_id']!r} repeats line {first}",
                )
            try:
                column = "amount"
                amounts.append(_parse_amount(row["amount"]))
                column = "timestamp"
                epochs.append(_parse_timestamp(row["timestamp"]))
                column = "is_fraud"
                labels.append(_parse_label(row["is_fraud"].strip()))
                if has_reported:
                    column = REPORTED_AT
                    reported.append(_parse_reported(row[column], epochs[-1]))
            except ValueError as exc:
                raise MalformedDataError(
                    path, line, column, f"{row[column]!r} {exc}"
                ) from None
            ids.append(row["transaction_id"])
            users.append(row["user_id"])
            countries.append(row["country"])
            devices.append(row["device"])
            currencies.append(row["currency"])
            category = row.get("product_category")
            categories.append(category if category else None)

    if not ids:
        raise MalformedDataError(path, 2, None, "no transactions after the header")

    unordered = Transactions(
        transaction_id=ids,
        user_id=users,
        amount=np.asarray(amounts, dtype=np.float64),
        epoch=np.asarray(epochs, dtype=np.float64),
        country=countries,
        device=devices,
        currency=currencies,
        product_category=categories,
        is_fraud=np.asarray(labels, dtype=np.int8),
        reported_epoch=np.asarray(reported, dtype=np.float64) if has_reported else None,
    )
    order = np.argsort(unordered.epoch, kind="stable")
    if np.all(order == np.arange(len(order))):
        return unordered
    return unordered.take(order)
