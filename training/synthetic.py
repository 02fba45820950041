"""Synthetic transactions in the training CSV schema, for tests and load tests.

Legitimate customers have a home country, a usual device, a typical amount
(log-normal around a per-customer mean, often on round cents) and shop in the
daytime. About ``fraud_rate`` of the rows are fraud, drawn from three
documented patterns:

- ``night_burst``: two to five high amounts within minutes, between 00:00 and
  05:00 UTC, from a device the customer does not usually use;
- ``foreign_odd_cents``: an amount with arbitrary cents, billed in a country
  other than the customer's (often a rare or unknown code);
- ``rare_category``: a rare or unseen product category, with a high amount.

Usage: ``python -m training.synthetic --rows 5000 --seed 7 --out file.csv``
(a ``.gz`` suffix writes gzip).
"""

from __future__ import annotations

import argparse
import csv
import gzip
import io
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np

from training.data import COLUMNS

START = datetime(2024, 1, 1, tzinfo=UTC)
FRAUD_PATTERNS: tuple[str, ...] = ("night_burst", "foreign_odd_cents", "rare_category")

_HOME_COUNTRIES = ("US", "US", "US", "US", "US", "US", "ZZ", "XA")
_FOREIGN_COUNTRIES = ("XB", "XC", "XD", "QM", "XK", "ZZ")
_DEVICES = ("mobile", "desktop", "unknown")
_COMMON_CATEGORIES = ("W", "W", "W", "C", "R", "H")
_RARE_CATEGORIES = ("S", "giftcard", "crypto")
_ROUND_CENTS = (0, 0, 0, 0, 50, 95, 99)
# A night burst writes 2-5 rows, the other patterns one: 11/6 rows per event.
_ROWS_PER_FRAUD_EVENT = 11 / 6


@dataclass(frozen=True)
class _Customer:
    user_id: str
    country: str
    device: str
    log_mean: float


def _customers(rng: np.random.Generator, count: int) -> list[_Customer]:
    return [
        _Customer(
            user_id=f"u-{rng.integers(16**12):012x}",
            country=str(rng.choice(_HOME_COUNTRIES)),
            device=str(rng.choice(_DEVICES, p=(0.3, 0.3, 0.4))),
            log_mean=float(rng.normal(3.6, 0.6)),
        )
        for _ in range(count)
    ]


def _amount(rng: np.random.Generator, log_mean: float, round_cents: bool) -> float:
    dollars = max(1.0, float(np.floor(np.exp(rng.normal(log_mean, 0.5)))))
    cents = int(rng.choice(_ROUND_CENTS)) if round_cents else int(rng.integers(100))
    return dollars + cents / 100.0


def _daytime_offset(rng: np.random.Generator, day: int) -> float:
    hour = float(np.clip(rng.normal(14.0, 3.5), 6.0, 23.9))
    return day * 86_400.0 + hour * 3_600.0


def _row(
    tid: int,
    customer: _Customer,
    amount: float,
    offset_seconds: float,
    *,
    country: str | None = None,
    device: str | None = None,
    category: str | None = None,
    currency: str = "USD",
    fraud: int,
) -> dict[str, str]:
    stamp = START + timedelta(seconds=round(offset_seconds))
    return {
        "transaction_id": f"syn-{tid:08d}",
        "user_id": customer.user_id,
        "amount": f"{amount:.2f}",
        "currency": currency,
        "country": country or customer.country,
        "device": device or customer.device,
        "timestamp": stamp.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "product_category": category or "",
        "is_fraud": str(fraud),
    }


def generate(
    rows: int, seed: int, days: int = 60, fraud_rate: float = 0.05
) -> list[dict[str, str]]:
    """``rows`` transactions over ``days`` days, ordered by timestamp."""
    if rows < 1:
        raise ValueError(f"rows must be positive, got {rows}")
    if not 0.0 <= fraud_rate < 1.0:
        raise ValueError(f"fraud_rate must be in [0, 1), got {fraud_rate}")
    rng = np.random.default_rng(seed)
    customers = _customers(rng, max(10, rows // 20))
    out: list[dict[str, str]] = []
    tid = 0
    m = _ROWS_PER_FRAUD_EVENT
    event_rate = fraud_rate / (m * (1.0 - fraud_rate) + fraud_rate)

    while len(out) < rows:
        customer = customers[int(rng.integers(len(customers)))]
        day = int(rng.integers(days))
        if rng.random() >= event_rate:
            out.append(
                _row(
                    tid,
                    customer,
                    _amount(rng, customer.log_mean, round_cents=rng.random() < 0.8),
                    _daytime_offset(rng, day),
                    category=str(rng.choice(_COMMON_CATEGORIES)),
                    currency="USD" if rng.random() < 0.98 else "EUR",
                    fraud=0,
                )
            )
            tid += 1
            continue

        pattern = FRAUD_PATTERNS[int(rng.integers(len(FRAUD_PATTERNS)))]
        if pattern == "night_burst":
            start = day * 86_400.0 + rng.uniform(0.0, 5.0) * 3_600.0
            other_devices = [d for d in _DEVICES if d != customer.device]
            device = str(rng.choice(other_devices))
            for k in range(int(rng.integers(2, 6))):
                out.append(
                    _row(
                        tid,
                        customer,
                        _amount(rng, customer.log_mean + 1.8, round_cents=False),
                        start + k * rng.uniform(20.0, 240.0),
                        device=device,
                        category=str(rng.choice(_COMMON_CATEGORIES)),
                        fraud=1,
                    )
                )
                tid += 1
        elif pattern == "foreign_odd_cents":
            out.append(
                _row(
                    tid,
                    customer,
                    _amount(rng, customer.log_mean + 0.8, round_cents=False),
                    day * 86_400.0 + rng.uniform(0.0, 24.0) * 3_600.0,
                    country=str(rng.choice(_FOREIGN_COUNTRIES)),
                    category=str(rng.choice(_COMMON_CATEGORIES)),
                    fraud=1,
                )
            )
            tid += 1
        else:
            out.append(
                _row(
                    tid,
                    customer,
                    _amount(
                        rng, customer.log_mean + 1.2, round_cents=rng.random() < 0.5
                    ),
                    _daytime_offset(rng, day),
                    category=str(rng.choice(_RARE_CATEGORIES)),
                    fraud=1,
                )
            )
            tid += 1

    out = out[:rows]
    out.sort(key=lambda r: r["timestamp"])
    return out


def write_csv(rows: Sequence[dict[str, str]], path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    opener = gzip.open if path.suffix == ".gz" else open
    with (
        opener(path, "wb") as raw,
        io.TextIOWrapper(raw, encoding="utf-8", newline="") as handle,
    ):
        writer = csv.DictWriter(handle, fieldnames=COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
    return path


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m training.synthetic",
        description="Write synthetic labelled transactions as CSV.",
    )
    parser.add_argument("--rows", type=int, default=5000)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--days", type=int, default=60)
    parser.add_argument("--fraud-rate", type=float, default=0.05)
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args(argv)
    rows = generate(args.rows, args.seed, days=args.days, fraud_rate=args.fraud_rate)
    path = write_csv(rows, args.out)
    frauds = sum(r["is_fraud"] == "1" for r in rows)
    print(f"wrote {len(rows)} transactions ({frauds} fraud) to {path}")


if __name__ == "__main__":
    main()
