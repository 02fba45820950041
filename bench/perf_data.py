"""Input data for perf_analyzer and request bodies for the HTTP load, from real rows.

The rows are the committed MIT-0 sample (data/samples/afd_coldstart_sample.csv),
encoded by the project's feature contract. ``python -m bench.perf_data``
rewrites ``bench/perf_data/``; perf_analyzer users pass
``--input-data bench/perf_data/features.json`` (``txn-history-v1``, 43 floats a
row) to any model whose config speaks that schema, or
``features_txn-basic-v1.json`` to one that speaks ``txn-basic-v1``.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

import numpy as np

import features
from features import history, schemas

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


def encode_rows(transactions: list[dict[str, Any]], schema: str) -> np.ndarray:
    """The rows in ``schema``; a history block is folded over these rows in
    time order, as the gateway would have built it for them."""
    basic = features.encode(transactions)
    if schema == schemas.BASIC_SCHEMA_ID:
        return basic
    order = sorted(
        range(len(transactions)),
        key=lambda i: features.epoch_seconds(transactions[i]["timestamp"]),
    )
    events = [
        history.HistoryEvent.from_transaction(
            {**transactions[i], "transaction_id": f"perf-{i}"}
        )
        for i in order
    ]
    block = np.zeros((len(transactions), history.NUM_HISTORY_FEATURES), np.float32)
    block[order] = history.fold(events)
    return np.concatenate([basic, block], axis=1)


def perf_analyzer_data(
    transactions: list[dict[str, Any]], schema: str = schemas.WIDEST_SCHEMA_ID
) -> dict[str, Any]:
    """perf_analyzer's --input-data format: one row of the schema per request."""
    matrix = encode_rows(transactions, schema)
    return {"data": [{"features": [float(v) for v in row]} for row in matrix]}


def data_file(schema: str, out: Path = OUT) -> Path:
    """``features.json`` is in the widest schema; others are named after theirs."""
    if schema == schemas.WIDEST_SCHEMA_ID:
        return out / "features.json"
    return out / f"features_{schema}.json"


def write(out: Path = OUT) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    transactions = sample_transactions()
    paths = []
    for schema in schemas.SCHEMAS:
        path = data_file(schema, out)
        path.write_text(json.dumps(perf_analyzer_data(transactions, schema)) + "\n")
        paths.append(path)
    # One body per line; the load script puts a fresh transaction_id in front.
    bodies_path = out / "transactions.jsonl"
    bodies_path.write_text(
        "".join(json.dumps(t, separators=(",", ":")) + "\n" for t in transactions)
    )
    return [*paths, bodies_path]


if __name__ == "__main__":
    for path in write():
        print(path.relative_to(ROOT))
