"""The per-customer history block: definitions, label timing, state round trip."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import numpy as np
import pytest

from features import history
from features.history import HISTORY_FEATURE_NAMES as NAMES
from features.schemas import (
    BASIC_SCHEMA_ID,
    HISTORY_SCHEMA_ID,
    UnknownSchemaError,
    columns_for,
    width,
)
from training import synthetic
from training.data import read_transactions
from training.history import encode, history_blocks

COL = {name: i for i, name in enumerate(NAMES)}
T0 = 1_700_000_000.0  # 2023-11-14T22:13:20Z


def event(
    t: float,
    amount: float = 10.0,
    user: str = "u1",
    device: str = "mobile",
    country: str = "US",
    category: str | None = "W",
    tid: str | None = None,
) -> history.HistoryEvent:
    return history.HistoryEvent.of(
        user_id=user,
        transaction_id=tid or f"t{t}",
        amount=amount,
        epoch=t,
        country=country,
        device=device,
        product_category=category,
    )


def test_first_transaction_block() -> None:
    row = history.fold([event(T0)])[0]
    assert row[COL["hist_is_first"]] == 1.0
    assert row[COL["hist_new_device"]] == row[COL["hist_new_country"]] == 1.0
    assert row[COL["hist_log_count_7d"]] == 0.0
    assert row[COL["hist_log_seconds_since_prev"]] == pytest.approx(
        math.log1p(history.NO_PREVIOUS_S)
    )


def test_windows_counts_sums_and_novelty() -> None:
    events = [
        event(T0, 10.0),
        event(T0 + 1800, 20.0, device="desktop"),  # 30 min later
        event(T0 + 5 * 3600, 30.0),  # 5 h later
        event(T0 + 3 * 86_400, 10.0, country="GB", category="c"),
        event(T0 + 9 * 86_400, 99.0),  # the first three are out of the 7 d window
    ]
    rows = history.fold(events)
    second, third, fourth, fifth = rows[1], rows[2], rows[3], rows[4]
    assert second[COL["hist_log_count_1h"]] == pytest.approx(math.log1p(1))
    assert second[COL["hist_new_device"]] == 1.0
    assert second[COL["hist_log_seconds_since_prev"]] == pytest.approx(math.log1p(1800))
    assert third[COL["hist_log_count_1h"]] == 0.0
    assert third[COL["hist_log_count_24h"]] == pytest.approx(math.log1p(2))
    assert third[COL["hist_log_sum_24h"]] == pytest.approx(math.log1p(30.0))
    assert third[COL["hist_new_device"]] == 0.0
    assert fourth[COL["hist_log_count_24h"]] == 0.0
    assert fourth[COL["hist_log_count_7d"]] == pytest.approx(math.log1p(3))
    assert fourth[COL["hist_new_country"]] == 1.0
    assert fourth[COL["hist_new_category"]] == 1.0  # "c" is "C", not "W"
    assert fourth[COL["hist_same_amount_before"]] == 1.0  # 10.00 again
    assert fourth[COL["hist_log_seconds_since_first"]] == pytest.approx(
        math.log1p(3 * 86_400)
    )
    assert fifth[COL["hist_log_count_7d"]] == pytest.approx(math.log1p(1))
    assert fifth[COL["hist_same_amount_before"]] == 0.0
    assert fifth[COL["hist_amount_vs_usual"]] > 1.0


def test_amount_frequency_is_global_and_seven_days() -> None:
    events = [
        event(T0, 42.0, user="a"),
        event(T0 + 60, 42.0, user="b"),
        event(T0 + 120, 42.0, user="c"),
        event(T0 + 8 * 86_400, 42.0, user="d"),
    ]
    rows = history.fold(events)
    column = rows[:, COL["hist_log_amount_count_7d_all"]]
    assert column.tolist() == pytest.approx([0.0, math.log1p(1), math.log1p(2), 0.0])


def test_outcomes_count_only_once_known() -> None:
    events = [event(T0, tid="a"), event(T0 + 100, tid="b"), event(T0 + 200, tid="c")]
    fraud_a = history.Outcome(T0 + 100, "u1", "a", True)  # known at b's time
    rows = history.fold(events, [fraud_a])
    assert rows[1][COL["hist_log_known_fraud"]] == 0.0  # not strictly before b
    assert rows[2][COL["hist_log_known_fraud"]] == pytest.approx(math.log1p(1))
    assert rows[2][COL["hist_known_fraud_share"]] == 1.0


def test_outcome_reversal_and_repeat() -> None:
    state = history.apply_outcome(None, "a", True, T0)
    assert history.apply_outcome(state, "a", True, T0) == state
    reversed_ = history.apply_outcome(state, "a", False, T0 + 60)
    assert (reversed_.known_fraud, reversed_.known_legit) == (0, 1)
    assert (state.known_fraud, state.known_legit) == (1, 0)  # not mutated


def test_an_earlier_verdict_applied_late_does_not_replace_a_later_one() -> None:
    later = history.apply_outcome(None, "a", True, T0 + 60)
    state = history.apply_outcome(later, "a", False, T0)
    assert state == later and (state.known_fraud, state.known_legit) == (1, 0)
    # Same report time: the larger tiebreak (the row recorded last) stands.
    tied = history.apply_outcome(later, "a", False, T0 + 60, tiebreak=1)
    assert (tied.known_fraud, tied.known_legit) == (0, 1)
    assert history.apply_outcome(tied, "a", True, T0 + 60, tiebreak=0) == tied


def test_any_order_of_the_same_outcomes_gives_the_same_state() -> None:
    base = history.apply_transaction(None, event(T0, tid="a"))
    calls = [
        (tid, i % 2 == 0, T0 + 100 * (i % 4), i)
        for i in range(12)
        for tid in ("a", "b", "c")
    ]
    expected = None
    for seed in range(30):
        order = list(calls)
        random.Random(seed).shuffle(order)
        state = base
        for tid, is_fraud, reported, tiebreak in order:
            state = history.apply_outcome(state, tid, is_fraud, reported, tiebreak)
        if expected is None:
            expected = state
        assert state == expected
        assert state.to_json() == expected.to_json()
    assert expected is not None
    # The standing verdict of each: the latest (reported, tiebreak) -> i = 11, fraud
    # is i % 2 == 0, so legitimate for all three.
    assert (expected.known_fraud, expected.known_legit) == (0, 3)
    assert {tid: v[0] for tid, v in expected.outcomes.items()} == dict.fromkeys(
        "abc", 0
    )


def test_a_format_1_state_is_read_its_verdicts_oldest() -> None:
    state = history.apply_transaction(None, event(T0, tid="a"))
    text = state.to_json().replace('"format":2', '"format":1')
    old = json.loads(text)
    old.update(outcomes={"a": 1}, known_fraud=1)
    read = history.CustomerState.from_json(json.dumps(old))
    assert read.outcomes == {"a": (1, 0.0, -1)}
    overturned = history.apply_outcome(read, "a", False, T0 + 60)
    assert (overturned.known_fraud, overturned.known_legit) == (0, 1)
    again = history.CustomerState.from_json(read.to_json())
    assert again == read


def test_state_json_round_trip_is_exact() -> None:
    state = None
    for i, amount in enumerate([12.34, 0.1, 1e6 + 0.01, 7.0]):
        state = history.apply_transaction(state, event(T0 + 977.7 * i, amount))
    state = history.apply_outcome(state, "x", True, T0 + 1234.567, 7)
    state = history.apply_outcome(state, "y", False, T0 + 0.1)
    again = history.CustomerState.from_json(state.to_json())
    assert again == state
    assert again.to_json() == state.to_json()
    probe = event(T0 + 5000, 3.33)
    assert np.array_equal(
        history.history_features(state, probe, 2),
        history.history_features(again, probe, 2),
    )
    with pytest.raises(ValueError, match="format"):
        history.CustomerState.from_json('{"format": 99}')


def test_state_stays_bounded() -> None:
    state = None
    for i in range(2000):
        state = history.apply_transaction(
            state, event(T0 + 61.0 * i, float(i), device=f"d{i}")
        )
    assert state is not None and state.count == 2000
    assert len(state.minutes) <= history.MINUTE_BUCKETS
    assert len(state.hours) <= history.HOUR_BUCKETS_7D
    assert len(state.devices) == history.MAX_SEEN_VALUES
    assert len(state.amounts) == history.MAX_SEEN_AMOUNTS


def test_schemas_are_prefixes() -> None:
    assert width(BASIC_SCHEMA_ID) == 26
    assert width(HISTORY_SCHEMA_ID) == 26 + len(NAMES)
    wide = np.arange(2 * width(HISTORY_SCHEMA_ID), dtype=np.float32).reshape(2, -1)
    assert np.array_equal(columns_for(wide, BASIC_SCHEMA_ID), wide[:, :26])
    with pytest.raises(UnknownSchemaError):
        width("txn-history-v9")


def test_training_fold_never_sees_a_label_from_its_future(tmp_path: Path) -> None:
    path = synthetic.write_csv(synthetic.generate(1500, seed=3), tmp_path / "s.csv")
    txns = read_transactions(path)
    (block,) = history_blocks(txns, delay_days=7.0)
    assert block.shape == (len(txns), len(NAMES))
    # With an infinite delay no label is ever known: the outcome columns are 0.
    (blind,) = history_blocks(txns, delay_days=1e9)
    outcome_cols = [COL["hist_log_known_fraud"], COL["hist_log_known_legit"]]
    assert block[:, outcome_cols].any()
    assert not blind[:, outcome_cols].any()
    assert np.array_equal(
        np.delete(blind, outcome_cols + [COL["hist_known_fraud_share"]], axis=1),
        np.delete(block, outcome_cols + [COL["hist_known_fraud_share"]], axis=1),
    )
    # Split in two, the fold carries state across: the same block.
    half = len(txns) // 2
    first, second = txns.take(np.arange(half)), txns.take(np.arange(half, len(txns)))
    a, b = history_blocks(first, second, delay_days=7.0)
    assert np.array_equal(np.concatenate([a, b]), block)
    with pytest.raises(ValueError, match="overlap"):
        history_blocks(second, first)
    wide = encode(txns, HISTORY_SCHEMA_ID, block)
    assert np.array_equal(wide[:, :26], txns.features())
