"""Stored decisions and their confirmed outcomes, as a training file.

``python -m training.stored --database URL --out labelled.csv.gz``

Writes every stored transaction (the request as it was sent) in the training
schema, labelled with its standing confirmed outcome (the latest report;
empty when none) and that report's ``reported_at``, so that training and
``make evaluate`` use each label only from the time it was known. Degraded
decisions are transactions like the others and are included.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import gzip
import io
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

import features
from training.data import REPORTED_AT

COLUMNS = (
    *features.REQUIRED_FIELDS,
    *features.OPTIONAL_FIELDS,
    features.LABEL_FIELD,
    REPORTED_AT,
)

# The standing verdict of each transaction: its latest report (ties: the one
# recorded last, by row id, the order the gateway's history keeps too).
_QUERY = """
SELECT t.payload, o.outcome, o.reported_at
FROM transactions t
LEFT JOIN LATERAL (
    SELECT outcome, reported_at FROM transaction_outcomes
    WHERE transaction_id = t.transaction_id
    ORDER BY reported_at DESC, id DESC
    LIMIT 1
) o ON TRUE
ORDER BY t.id
"""


def _iso(value: Any) -> str:
    return value.isoformat().replace("+00:00", "Z") if value is not None else ""


def _row(payload: dict[str, Any], outcome: str | None, reported: Any) -> list[str]:
    label = {"fraud": "1", "legitimate": "0"}.get(outcome or "", "")
    return [
        *(str(payload[f]) for f in features.REQUIRED_FIELDS),
        str(payload.get("product_category") or ""),
        label,
        _iso(reported) if label else "",
    ]


def _open(path: Path) -> TextIO:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path, "wb"), encoding="utf-8", newline="")
    return open(path, "w", encoding="utf-8", newline="")


async def export(database_url: str, out: Path) -> dict[str, int]:
    import asyncpg

    connection = await asyncpg.connect(database_url)
    try:
        records = await connection.fetch(_QUERY)
    finally:
        await connection.close()
    counts = {"rows": 0, "fraud": 0, "legitimate": 0, "unlabelled": 0}
    out.parent.mkdir(parents=True, exist_ok=True)
    with _open(out) as handle:
        writer = csv.writer(handle)
        writer.writerow(COLUMNS)
        for record in records:
            payload = record["payload"]
            if isinstance(payload, str):
                payload = json.loads(payload)
            writer.writerow(_row(payload, record["outcome"], record["reported_at"]))
            counts["rows"] += 1
            counts[record["outcome"] or "unlabelled"] += 1
    return counts


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.stored",
        description="Stored transactions with their confirmed outcomes, as a CSV.",
    )
    parser.add_argument("--database", required=True, help="PostgreSQL URL")
    parser.add_argument("--out", type=Path, required=True, help="CSV or CSV.gz")
    args = parser.parse_args(argv)
    try:
        counts = asyncio.run(export(args.database, args.out))
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps({"out": str(args.out), **counts}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
