"""Reading transaction CSV files (plain or gzip) into gateway requests."""

from __future__ import annotations

import csv
import gzip
import io
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, TextIO

import features

AmountFormat = Literal["number", "string"]

REQUIRED_COLUMNS: tuple[str, ...] = features.REQUIRED_FIELDS
OPTIONAL_COLUMNS: tuple[str, ...] = features.OPTIONAL_FIELDS
LABEL_COLUMN = features.LABEL_FIELD

_JSON_NUMBER = re.compile(r"-?(?:0|[1-9]\d*)(?:\.\d+)?(?:[eE][+-]?\d+)?")
_GZIP_MAGIC = b"\x1f\x8b"


class DatasetError(ValueError):
    """A file that does not follow the transaction CSV schema."""


@dataclass(frozen=True)
class Transaction:
    """One CSV row: the request fields as text, plus its label if known."""

    fields: dict[str, str]
    label: bool | None

    @property
    def transaction_id(self) -> str:
        return self.fields["transaction_id"]

    def body(self, amount_format: AmountFormat = "number") -> bytes:
        return encode_request(self.fields, amount_format)


def encode_request(fields: dict[str, str], amount_format: AmountFormat) -> bytes:
    """The JSON request body, with the amount exactly as written in the file.

    As a JSON number the file's digits are written verbatim, so "17.30" is
    sent as 17.30 rather than whatever a float would print.
    """
    parts = []
    for key, value in fields.items():
        if key == "amount" and amount_format == "number":
            if not _JSON_NUMBER.fullmatch(value):
                raise DatasetError(f"amount is not a plain number: {value!r}")
            encoded = value
        else:
            encoded = json.dumps(value, ensure_ascii=False)
        parts.append(f"{json.dumps(key)}: {encoded}")
    return ("{" + ", ".join(parts) + "}").encode()


def parse_label(text: str) -> bool | None:
    value = text.strip()
    if value == "":
        return None
    if value in ("1", "0"):
        return value == "1"
    raise DatasetError(f"is_fraud must be 1, 0 or empty, got {text!r}")


def parse_row(row: dict[str, str | None], line: int) -> Transaction:
    fields: dict[str, str] = {}
    for column in REQUIRED_COLUMNS:
        fields[column] = (row.get(column) or "").strip()

    amount = fields["amount"]
    if not _JSON_NUMBER.fullmatch(amount):
        raise DatasetError(f"line {line}: amount is not a plain number: {amount!r}")

    for column in OPTIONAL_COLUMNS:
        value = (row.get(column) or "").strip()
        if value:
            fields[column] = value

    try:
        label = parse_label(row.get(LABEL_COLUMN) or "")
    except DatasetError as exc:
        raise DatasetError(f"line {line}: {exc}") from None
    return Transaction(fields=fields, label=label)


def read_transactions(stream: TextIO) -> Iterator[Transaction]:
    reader = csv.DictReader(stream)
    missing = [c for c in REQUIRED_COLUMNS if c not in (reader.fieldnames or ())]
    if missing:
        raise DatasetError(f"missing columns: {', '.join(missing)}")

    for row in reader:
        yield parse_row(row, reader.line_num)


def open_text(path: Path) -> TextIO:
    """Opens a CSV file for reading, gunzipping it when it is gzip data."""
    with path.open("rb") as probe:
        compressed = probe.read(2) == _GZIP_MAGIC
    if compressed:
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return path.open("r", encoding="utf-8", newline="")


def iter_file(path: Path, limit: int | None = None) -> Iterator[Transaction]:
    with open_text(path) as stream:
        for count, transaction in enumerate(read_transactions(stream)):
            if limit is not None and count >= limit:
                return
            yield transaction
