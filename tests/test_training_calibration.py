"""Calibration maps, metrics and the default decision policy."""

from __future__ import annotations

import numpy as np
import pytest

from gateway.policy import load_policy
from training.calibration import (
    PiecewiseLinear,
    expected_calibration_error,
    fit_platt,
    fit_quantile_knots,
    standardisation,
)
from training.metrics import ranking_metrics, recall_at_fpr
from training.policy import DEFAULT_POLICY, POLICY_PATH, decision_shares


def test_quantile_knots_put_legit_p95_at_flag_and_p99_at_review() -> None:
    errors = np.random.default_rng(0).gamma(2.0, 0.1, size=50_000)
    curve = fit_quantile_knots(errors)
    scores = curve(errors)
    assert np.mean(scores > 0.5) == pytest.approx(0.05, abs=0.002)
    assert np.mean(scores > 0.8) == pytest.approx(0.01, abs=0.001)
    assert curve(np.array([0.0]))[0] == 0.0
    assert curve(np.array([1e9]))[0] == 1.0
    grid = np.linspace(0, errors.max() * 5, 1000)
    assert np.all(np.diff(curve(grid)) >= 0)


def test_quantile_knots_survive_ties() -> None:
    curve = fit_quantile_knots(np.zeros(100))
    assert np.all(np.diff(curve.x) > 0)


def test_piecewise_linear_refuses_non_monotone_knots() -> None:
    with pytest.raises(ValueError, match="must not decrease"):
        PiecewiseLinear(np.array([0.0, 1.0]), np.array([1.0, 0.0]))


def test_platt_scaling_undoes_class_weight_inflation() -> None:
    rng = np.random.default_rng(1)
    true_logit = rng.normal(-3.0, 1.5, size=40_000)
    labels = (rng.random(40_000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    inflated = 0.8 * true_logit + 2.5
    platt = fit_platt(inflated, labels)
    calibrated = platt(inflated)
    raw = 1 / (1 + np.exp(-inflated))
    assert expected_calibration_error(calibrated, labels) < 0.01
    assert expected_calibration_error(raw, labels) > 0.2
    assert platt.a == pytest.approx(1 / 0.8, rel=0.05)


def test_standardisation_floors_constant_and_rare_columns() -> None:
    x = np.zeros((1000, 3), dtype=np.float32)
    x[:, 0] = np.arange(1000)
    x[0, 2] = 1.0
    mean, std = standardisation(x)
    assert std[1] == 1.0
    assert std[2] == pytest.approx(0.05)
    assert std[0] == pytest.approx(np.arange(1000).std(), rel=1e-5)


def test_recall_at_one_percent_fpr() -> None:
    labels = np.array([0] * 100 + [1] * 10)
    scores = np.concatenate([np.linspace(0, 0.5, 100), np.full(10, 0.9)])
    assert recall_at_fpr(labels, scores) == 1.0
    metrics = ranking_metrics(labels, scores)
    assert metrics["roc_auc"] == 1.0 and metrics["pr_auc"] == 1.0


def test_default_policy_review_flag_approve() -> None:
    anomaly = np.array([0.85, 0.1, 0.6, 0.1, 0.5])
    risk = np.array([0.0, 0.8, 0.1, 0.55, 0.5])
    decisions = DEFAULT_POLICY.decide(anomaly, risk)
    assert decisions.tolist() == ["REVIEW", "REVIEW", "FLAG", "FLAG", "APPROVE"]
    # Reports use the policy the gateway loads.
    served = load_policy(POLICY_PATH)
    assert DEFAULT_POLICY.version == served.version
    np.testing.assert_allclose(
        DEFAULT_POLICY.combined(anomaly, risk),
        [served.combined(a, r) for a, r in zip(anomaly, risk, strict=True)],
    )
    assert decision_shares(decisions) == {"APPROVE": 0.2, "FLAG": 0.4, "REVIEW": 0.4}
