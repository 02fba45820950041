"""Label timing: a label is used only from the moment it would have been known."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from features.schemas import HISTORY_SCHEMA_ID
from training import synthetic
from training.data import UNLABELLED, MalformedDataError, read_transactions
from training.evaluate_release import baseline_as_of
from training.history import encode
from training.labels import known_rows, label_known_at, labels_as_of

DAY = 86_400.0


def _with_reported_at(src: Path, dst: Path, every: int = 3) -> Path:
    """Add reported_at to every ``every``-th row: 20 days after the transaction."""
    with open(src, newline="") as handle:
        rows = list(csv.DictReader(handle))
    stamps = read_transactions(src)
    by_id = dict(zip(stamps.transaction_id, stamps.epoch, strict=True))
    with open(dst, "w", newline="") as handle:
        writer = csv.DictWriter(handle, [*rows[0], "reported_at"])
        writer.writeheader()
        for i, row in enumerate(rows):
            reported = ""
            if i % every == 0:
                at = np.datetime64(int(by_id[row["transaction_id"]] + 20 * DAY), "s")
                reported = f"{at}Z"
            writer.writerow({**row, "reported_at": reported})
    return dst


@pytest.fixture(scope="module")
def history(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("labels")
    plain = synthetic.write_csv(synthetic.generate(3000, seed=21), root / "h.csv")
    return _with_reported_at(plain, root / "h_reported.csv")


def test_report_time_wins_else_the_delay_applies(history: Path) -> None:
    txns = read_transactions(history)
    assert txns.reported_epoch is not None
    known = label_known_at(txns, delay_days=7)
    reported = ~np.isnan(txns.reported_epoch)
    assert reported.any() and (~reported).any()
    assert np.allclose(known[reported], txns.epoch[reported] + 20 * DAY)
    assert np.allclose(known[~reported], txns.epoch[~reported] + 7 * DAY)
    assert np.allclose(
        label_known_at(txns, delay_days=2)[~reported], txns.epoch[~reported] + 2 * DAY
    )


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.8, 1.0])
def test_no_label_from_the_future_is_visible_at_t(
    history: Path, quantile: float
) -> None:
    txns = read_transactions(history)
    t = float(np.quantile(txns.epoch, quantile))
    known = label_known_at(txns)
    visible = labels_as_of(txns, t)
    assert np.all(visible[known > t] == UNLABELLED)
    assert np.array_equal(visible[known <= t], txns.is_fraud[known <= t])
    rows = known_rows(txns, t)
    assert np.all(txns.epoch[rows] < t)
    assert np.all(known[rows] <= t)


def test_baseline_at_t_ignores_labels_not_yet_known(history: Path) -> None:
    txns = read_transactions(history)
    t = float(np.quantile(txns.epoch, 0.9))
    future = label_known_at(txns) > t
    assert future.sum() > 100
    # Every label not yet known at t flipped: a model fitted at t cannot tell.
    flipped = np.where(future, 1 - txns.is_fraud, txns.is_fraud).astype(np.int8)
    tampered = txns.take(np.arange(len(txns)))
    object.__setattr__(tampered, "is_fraud", flipped)
    # History features too: a flipped label enters a customer's history only
    # once known, after t, so nothing the baseline is fitted on changes.
    x = encode(txns, HISTORY_SCHEMA_ID)
    x_tampered = encode(tampered, HISTORY_SCHEMA_ID)
    before = txns.epoch < t
    assert np.array_equal(x[before], x_tampered[before])
    assert not np.array_equal(x, x_tampered)
    probe = x[:500]
    model, rows = baseline_as_of(txns, x, t)
    model_tampered, rows_tampered = baseline_as_of(tampered, x_tampered, t)
    assert rows == rows_tampered
    assert np.array_equal(model(probe), model_tampered(probe))


def test_reported_before_the_transaction_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(
        "transaction_id,user_id,amount,currency,country,device,timestamp,"
        "product_category,is_fraud,reported_at\n"
        "t1,u1,10.00,USD,US,mobile,2024-01-02T00:00:00Z,W,1,2024-01-01T00:00:00Z\n"
    )
    with pytest.raises(MalformedDataError, match="reported_at"):
        read_transactions(path)


def test_negative_delay_is_refused(history: Path) -> None:
    with pytest.raises(ValueError, match="negative"):
        label_known_at(read_transactions(history), delay_days=-1)
