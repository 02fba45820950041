"""Convert the IEEE-CIS competition files into the project's transaction CSV.

``python -m training.ieee_cis --transactions train_transaction.csv
--identity train_identity.csv --out ieee.csv.gz``

Reads only the columns it needs, streaming (the transaction table is 590k
rows by 394 columns; plain or gzip input). It passes over the transaction
table twice: once to rank ``addr2`` codes by frequency, once to write rows.
The mapping follows the project's data notes:

- ``user_id``: ``u-`` + 12 hex digits of SHA-256 of ``card1|card2|card3|card5|addr1``
  (numbers written without a trailing ``.0``, missing as empty), optionally salted;
- ``amount``: ``TransactionAmt`` rounded to cents (half up); ``currency`` USD;
- ``country``: ``addr2`` 87 is US; the other codes, most frequent first (ties by
  code), become XA..XZ then QM..QZ; missing, and codes rarer than the 40th,
  become ZZ;
- ``device``: ``DeviceInfo`` starting with Windows, MacOS, Linux, Trident or
  rv: is desktop, any other value mobile, missing unknown;
- ``timestamp``: 2017-12-01T00:00:00Z plus ``TransactionDT`` seconds;
- ``product_category``: ``ProductCD``; ``is_fraud``: ``isFraud`` (empty when
  the file has no label, as in the competition's test table).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import hashlib
import io
import sys
from collections import Counter
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import TextIO

from training.data import COLUMNS

REFERENCE_TIME = datetime(2017, 12, 1, tzinfo=UTC)
US_ADDR2 = "87"
USER_KEY_COLUMNS: tuple[str, ...] = ("card1", "card2", "card3", "card5", "addr1")
TRANSACTION_COLUMNS: tuple[str, ...] = (
    "TransactionID",
    "TransactionDT",
    "TransactionAmt",
    "ProductCD",
    "addr2",
    *USER_KEY_COLUMNS,
)
IDENTITY_COLUMNS: tuple[str, ...] = ("TransactionID", "DeviceInfo")
DESKTOP_PREFIXES: tuple[str, ...] = ("Windows", "MacOS", "Linux", "Trident", "rv:")
HIDDEN_COUNTRY_CODES: tuple[str, ...] = tuple(
    f"X{chr(c)}" for c in range(ord("A"), ord("Z") + 1)
) + tuple(f"Q{chr(c)}" for c in range(ord("M"), ord("Z") + 1))
UNKNOWN_COUNTRY = "ZZ"
_CENT = Decimal("0.01")


class ConversionError(ValueError):
    """An input file that does not look like the competition's table."""


def _open_text(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _rows(path: Path, columns: Sequence[str]) -> Iterator[tuple[int, list[str]]]:
    """(line, values of ``columns``) per data row; missing columns are an error."""
    if not path.is_file():
        raise FileNotFoundError(f"no file at {path}")
    with _open_text(path) as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None:
            raise ConversionError(f"{path}: empty file, expected a header")
        missing = [c for c in columns if c not in header]
        if missing:
            raise ConversionError(f"{path}: header lacks columns {missing}")
        at = [header.index(c) for c in columns]
        for row in reader:
            if not row:
                continue
            if len(row) != len(header):
                raise ConversionError(
                    f"{path}:{reader.line_num}: expected {len(header)} fields, "
                    f"found {len(row)}"
                )
            yield reader.line_num, [row[i].strip() for i in at]


def canonical_number(value: str) -> str:
    """``'150.0'`` -> ``'150'``; empty and NaN -> ``''``; others as they are."""
    if value == "" or value.lower() == "nan":
        return ""
    return value[:-2] if value.endswith(".0") else value


def user_id(key: Sequence[str], salt: str = "") -> str:
    joined = "|".join(canonical_number(v) for v in key)
    return "u-" + hashlib.sha256((salt + joined).encode()).hexdigest()[:12]


def country_codes(addr2_counts: Counter[str]) -> dict[str, str]:
    """addr2 code -> country: 87 is US, the others by frequency, then ZZ."""
    others = sorted(
        (c for c in addr2_counts if c not in ("", US_ADDR2)),
        key=lambda c: (-addr2_counts[c], float(c) if _is_number(c) else 0.0, c),
    )
    codes = dict(zip(others, HIDDEN_COUNTRY_CODES, strict=False))
    return {US_ADDR2: "US"} | codes


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def device(info: str | None) -> str:
    if not info or info.lower() == "nan":
        return "unknown"
    return "desktop" if info.startswith(DESKTOP_PREFIXES) else "mobile"


def amount(value: str) -> str:
    try:
        cents = Decimal(value).quantize(_CENT, rounding=ROUND_HALF_UP)
    except InvalidOperation:
        raise ValueError(f"TransactionAmt {value!r} is not a number") from None
    if not cents.is_finite() or cents < 0:
        raise ValueError(f"TransactionAmt {value!r} is not a non-negative amount")
    return str(cents)


def timestamp(transaction_dt: str) -> str:
    moment = REFERENCE_TIME + timedelta(seconds=float(transaction_dt))
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def read_devices(identity: Path) -> dict[str, str]:
    return {tid: info for _, (tid, info) in _rows(identity, IDENTITY_COLUMNS)}


def convert(transactions: Path, identity: Path, out: Path, *, salt: str = "") -> int:
    """Write ``out`` (gzip if it ends in .gz); returns the number of rows."""
    devices = read_devices(identity)
    addr2 = Counter(
        canonical_number(values[0]) for _, values in _rows(transactions, ("addr2",))
    )
    countries = country_codes(addr2)
    labelled = _has_column(transactions, "isFraud")
    columns = (*TRANSACTION_COLUMNS, "isFraud") if labelled else TRANSACTION_COLUMNS

    out.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if out.suffix == ".gz" else open
    written = 0
    with opener(out, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(COLUMNS)
        for line, values in _rows(transactions, columns):
            row = dict(zip(columns, values, strict=True))
            try:
                record = (
                    f"ieee-{row['TransactionID']}",
                    user_id([row[c] for c in USER_KEY_COLUMNS], salt),
                    amount(row["TransactionAmt"]),
                    "USD",
                    countries.get(canonical_number(row["addr2"]), UNKNOWN_COUNTRY),
                    device(devices.get(row["TransactionID"])),
                    timestamp(row["TransactionDT"]),
                    row["ProductCD"],
                    _label(row.get("isFraud", "")),
                )
            except ValueError as exc:
                raise ConversionError(f"{transactions}:{line}: {exc}") from None
            writer.writerow(record)
            written += 1
    return written


def _has_column(path: Path, column: str) -> bool:
    with _open_text(path) as handle:
        return column in next(csv.reader(handle), [])


def _label(value: str) -> str:
    if value in ("", "0", "1"):
        return value
    if value in ("0.0", "1.0"):
        return value[0]
    raise ValueError(f"isFraud {value!r} is not 0 or 1")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.ieee_cis",
        description=(
            "Convert the IEEE-CIS fraud detection competition's train_transaction "
            "and train_identity tables into the project's transaction CSV."
        ),
    )
    parser.add_argument("--transactions", type=Path, required=True)
    parser.add_argument("--identity", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="CSV or CSV.gz")
    parser.add_argument(
        "--salt", default="", help="secret prefix for the user_id hash (optional)"
    )
    args = parser.parse_args(argv)
    try:
        rows = convert(args.transactions, args.identity, args.out, salt=args.salt)
    except (FileNotFoundError, ConversionError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"wrote {rows} transactions to {args.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
