"""Input data for perf_analyzer and request bodies for the HTTP load, from real rows.

The rows are the committed MIT-0 sample (data/samples/afd_coldstart_sample.csv),
encoded by the project's feature contract. ``python -m bench.perf_data``
rewrites ``bench/perf_data/``; perf_analyzer users pass
``--input-data bench/perf_data/features.json`` to any of the three models.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import features

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "data" / "samples" / "afd_coldstart_sample.csv"
OUT = Path(__file__).resolve().parent / "perf_data"
ROWS = 256
# Everything but the id: each row is encoded, not sent.
FIELDS = tuple(
    f
    for f in (*features.REQUIRED_FIELDS, *features.OPTIONAL_FIELDS)
    if f != "transaction_id"
)


def sample_transactions(limit: int = ROWS, path: Path = SAMPLE) -> list[dict[str, Any]]:
    """The first ``limit`` rows of the sample, as request bodies (label dropped)."""
    with path.open(newline="") as handle:
        rows = list(csv.DictReader(handle))[:limit]
    out = []
    for row in rows:
        body: dict[str, Any] = {name: row[name] for name in FIELDS if row[name]}
        body["amount"] = float(row["amount"])
        out.append(body)
    return out


def perf_analyzer_data(transactions: list[dict[str, Any]]) -> dict[str, Any]:
    """perf_analyzer's --input-data format: one 26-float row per request."""
    matrix = features.encode(transactions)
    return {"data": [{"features": [float(v) for v in row]} for row in matrix]}


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    transactions = sample_transactions()
    data_path = out / "features.json"
    data_path.write_text(json.dumps(perf_analyzer_data(transactions)) + "\n")
    # One body per line; the load script puts a fresh transaction_id in front.
    bodies_path = out / "transactions.jsonl"
    bodies_path.write_text(
        "".join(json.dumps(t, separators=(",", ":")) + "\n" for t in transactions)
    )
    return [data_path, bodies_path]


if __name__ == "__main__":
    for path in write():
        print(path.relative_to(ROOT))
