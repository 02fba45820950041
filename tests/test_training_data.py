"""Reading transaction files, the synthetic generator and the time split."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest

import features
from training import synthetic
from training.data import UNLABELLED, MalformedDataError, read_transactions
from training.split import time_split

HEADER = (
    "transaction_id,user_id,amount,currency,country,device,timestamp,"
    "product_category,is_fraud\n"
)
GOOD = "t1,u1,12.50,USD,US,mobile,2024-01-02T10:00:00Z,W,0\n"


def _write(tmp_path: Path, body: str, name: str = "txns.csv") -> Path:
    path = tmp_path / name
    path.write_text(HEADER + body)
    return path


def test_reads_plain_and_gzip_alike(tmp_path: Path) -> None:
    rows = synthetic.generate(200, seed=3)
    plain = read_transactions(synthetic.write_csv(rows, tmp_path / "a.csv"))
    packed = read_transactions(synthetic.write_csv(rows, tmp_path / "a.csv.gz"))
    assert len(plain) == len(packed) == 200
    np.testing.assert_array_equal(plain.features(), packed.features())
    with gzip.open(tmp_path / "a.csv.gz", "rt") as handle:
        assert handle.readline() == HEADER


def test_columns_feed_the_feature_contract(tmp_path: Path) -> None:
    path = _write(tmp_path, GOOD)
    txns = read_transactions(path)
    expected = features.encode(
        [
            {
                "amount": "12.50",
                "currency": "USD",
                "country": "US",
                "device": "mobile",
                "timestamp": "2024-01-02T10:00:00Z",
                "product_category": "W",
            }
        ]
    )
    np.testing.assert_array_equal(txns.features(), expected)
    np.testing.assert_array_equal(
        features.encode_columns(**txns.encode_kwargs()), expected
    )


def test_empty_label_is_unlabelled_and_rows_are_time_ordered(tmp_path: Path) -> None:
    body = (
        "late,u1,1.00,USD,US,mobile,2024-01-03T00:00:00Z,W,\n"
        "early,u2,2.00,EUR,FR,desktop,2024-01-01T00:00:00+01:00,,1\n"
    )
    txns = read_transactions(_write(tmp_path, body))
    assert txns.transaction_id == ["early", "late"]
    assert txns.is_fraud.tolist() == [1, UNLABELLED]
    assert txns.product_category == [None, "W"]


@pytest.mark.parametrize(
    ("row", "column", "fragment"),
    [
        ("t,u,abc,USD,US,mobile,2024-01-02T10:00:00Z,W,0", "amount", "'abc'"),
        ("t,u,-3,USD,US,mobile,2024-01-02T10:00:00Z,W,0", "amount", "'-3'"),
        ("t,u,nan,USD,US,mobile,2024-01-02T10:00:00Z,W,0", "amount", "'nan'"),
        ("t,u,1.00,USD,US,mobile,2024-01-02T10:00:00,W,0", "timestamp", "offset"),
        ("t,u,1.00,USD,US,mobile,yesterday,W,0", "timestamp", "'yesterday'"),
        ("t,u,1.00,USD,US,mobile,2024-01-02T10:00:00Z,W,yes", "is_fraud", "'yes'"),
        ("t,u,1.00,USD,,mobile,2024-01-02T10:00:00Z,W,0", "country", "empty"),
        ("t,u,0,USD,US,mobile,2024-01-02T10:00:00Z,W,0", "amount", "greater than 0"),
        ("t,u,0.00,USD,US,mobile,2024-01-02T10:00:00Z,W,0", "amount", "than 0"),
        (
            "t1,u2,99.00,USD,US,web,2024-01-03T10:00:00Z,W,1",
            "transaction_id",
            "'t1' repeats line 2",
        ),
        ("t1" + GOOD.strip()[2:], "transaction_id", "repeats line 2"),
    ],
)
def test_malformed_row_names_file_line_and_column(
    tmp_path: Path, row: str, column: str, fragment: str
) -> None:
    path = _write(tmp_path, GOOD + row + "\n")
    with pytest.raises(MalformedDataError) as caught:
        read_transactions(path)
    message = str(caught.value)
    assert f"{path}:3" in message
    assert f"column {column!r}" in message
    assert fragment in message
    assert caught.value.line == 3 and caught.value.column == column


def test_wrong_field_count_and_missing_columns_are_refused(tmp_path: Path) -> None:
    with pytest.raises(MalformedDataError, match=r"txns.csv:2: expected 9 fields"):
        read_transactions(_write(tmp_path, "t1,u1,12.50\n"))
    bad_header = tmp_path / "bad.csv"
    bad_header.write_text("transaction_id,amount\nt1,3.00\n")
    with pytest.raises(MalformedDataError, match=r"bad.csv:1: header lacks"):
        read_transactions(bad_header)


def test_max_rows_reads_only_the_first_rows(tmp_path: Path) -> None:
    path = synthetic.write_csv(synthetic.generate(300, seed=1), tmp_path / "s.csv")
    assert len(read_transactions(path, max_rows=50)) == 50


def test_synthetic_is_seeded_and_has_fraud(tmp_path: Path) -> None:
    first = synthetic.generate(3000, seed=11)
    assert first == synthetic.generate(3000, seed=11)
    assert first != synthetic.generate(3000, seed=12)
    fraud_rate = np.mean([r["is_fraud"] == "1" for r in first])
    assert 0.03 < fraud_rate < 0.08
    fraud = [r for r in first if r["is_fraud"] == "1"]
    night = [r for r in fraud if int(r["timestamp"][11:13]) < 5]
    rare = [r for r in fraud if r["product_category"] in ("S", "giftcard", "crypto")]
    assert night and rare
    assert [r["timestamp"] for r in first] == sorted(r["timestamp"] for r in first)


def test_synthetic_command_line_writes_a_readable_file(tmp_path: Path) -> None:
    out = tmp_path / "syn.csv.gz"
    synthetic.main(["--rows", "500", "--seed", "7", "--out", str(out)])
    txns = read_transactions(out)
    assert len(txns) == 500
    assert set(np.unique(txns.is_fraud)) == {0, 1}


def test_time_split_keeps_the_future_out_of_training() -> None:
    epoch = np.random.default_rng(0).permutation(1000).astype(float)
    split = time_split(epoch)
    assert (len(split.train), len(split.calibration), len(split.validation)) == (
        700,
        150,
        150,
    )
    assert epoch[split.train].max() < epoch[split.calibration].min()
    assert epoch[split.calibration].max() < epoch[split.validation].min()
    with pytest.raises(ValueError, match="too few"):
        time_split(np.arange(3.0))


def test_committed_sample_and_synthetic_data_still_load(tmp_path: Path) -> None:
    root = Path(__file__).resolve().parents[1]
    sample = read_transactions(root / "data" / "samples" / "afd_coldstart_sample.csv")
    assert len(sample) == len(set(sample.transaction_id)) and sample.amount.min() > 0
    rows = synthetic.generate(2000, seed=11)
    generated = read_transactions(synthetic.write_csv(rows, tmp_path / "s.csv"))
    assert len(generated) == 2000 and generated.amount.min() > 0
