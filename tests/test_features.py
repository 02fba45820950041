from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal

import numpy as np
import pytest

import features


def txn(**overrides: object) -> dict[str, object]:
    base: dict[str, object] = {
        "amount": Decimal("48.29"),
        "timestamp": "2026-01-28T14:30:00Z",
        "country": "US",
        "device": "mobile",
        "currency": "USD",
        "product_category": "W",
    }
    base.update(overrides)
    return base


def column(name: str) -> int:
    return features.FEATURE_NAMES.index(name)


def test_layout_is_named_and_sized() -> None:
    assert features.SCHEMA_ID == "txn-basic-v1"
    assert len(features.FEATURE_NAMES) == features.NUM_FEATURES
    assert len(set(features.FEATURE_NAMES)) == features.NUM_FEATURES
    row = features.encode([txn()])
    assert row.shape == (1, features.NUM_FEATURES)
    assert row.dtype == np.float32


def test_amount_is_log_and_exact_cents() -> None:
    row = features.encode([txn(amount=Decimal("0.29"))])[0]
    assert row[column("log_amount")] == pytest.approx(np.log1p(0.29), rel=1e-6)
    assert row[column("amount_cents")] == pytest.approx(0.29, abs=1e-7)
    whole = features.encode([txn(amount="100")])[0]
    assert whole[column("amount_cents")] == 0.0


def test_hour_and_weekday_are_cyclical_in_utc() -> None:
    midnight = features.encode([txn(timestamp="2026-01-25T00:00:00Z")])[0]
    assert midnight[column("hour_sin")] == pytest.approx(0.0, abs=1e-6)
    assert midnight[column("hour_cos")] == pytest.approx(1.0)
    # 2026-01-25 is a Sunday: the week's phase starts at zero.
    assert midnight[column("weekday_sin")] == pytest.approx(0.0, abs=1e-6)
    assert midnight[column("weekday_cos")] == pytest.approx(1.0)


def test_offset_timestamps_encode_as_their_utc_instant() -> None:
    utc = datetime(2026, 1, 28, 14, 30, tzinfo=UTC)
    paris = utc.astimezone(timezone(timedelta(hours=1)))
    a = features.encode([txn(timestamp=utc)])
    b = features.encode([txn(timestamp=paris)])
    c = features.encode([txn(timestamp="2026-01-28T09:30:00-05:00")])
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, c)


def test_naive_timestamp_is_refused() -> None:
    with pytest.raises(ValueError, match="offset"):
        features.encode([txn(timestamp=datetime(2026, 1, 28, 14, 30))])


def test_unseen_values_fall_into_the_other_bucket() -> None:
    row = features.encode(
        [txn(country="GB", device="tablet", currency="EUR", product_category="x")]
    )[0]
    for field in ("country", "device", "currency", "product_category"):
        assert row[column(f"{field}={features.OTHER}")] == 1.0


def test_missing_category_has_its_own_bucket() -> None:
    row = features.encode([txn(product_category=None)])[0]
    assert row[column(f"product_category={features.MISSING}")] == 1.0
    absent = dict(txn())
    del absent["product_category"]
    np.testing.assert_array_equal(features.encode([absent])[0], row)


def test_each_categorical_block_is_one_hot() -> None:
    rows = features.encode([txn(), txn(country="ZZ", device="desktop")])
    categorical = rows[:, len(features.NUMERIC_FEATURES) :]
    assert categorical.sum(axis=1).tolist() == [4.0, 4.0]


def test_case_does_not_change_the_vector() -> None:
    a = features.encode([txn(country="us", currency="usd", device="MOBILE")])
    b = features.encode([txn()])
    np.testing.assert_array_equal(a, b)


def test_rows_are_encoded_independently_of_their_batch() -> None:
    one = features.encode([txn(amount="12.50")])
    many = features.encode([txn(amount="3.10"), txn(amount="12.50"), txn()])
    np.testing.assert_array_equal(one[0], many[1])


def test_category_case_does_not_change_the_vector() -> None:
    a = features.encode([txn(product_category="w")])
    b = features.encode([txn(product_category=" W ")])
    np.testing.assert_array_equal(a, features.encode([txn()]))
    np.testing.assert_array_equal(b, features.encode([txn()]))
