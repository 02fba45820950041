from pathlib import Path

import pytest

from gateway.config import PROJECT_ROOT
from gateway.policy import Decision, PolicyError, load_policy, parse_policy

DEFAULT = load_policy(PROJECT_ROOT / "config" / "policy.toml")


@pytest.mark.parametrize(
    ("anomaly", "risk", "expected"),
    [
        (0.0, 0.0, Decision.APPROVE),
        (0.5, 0.5, Decision.APPROVE),  # thresholds are strict
        (0.51, 0.1, Decision.FLAG),
        (0.1, 0.51, Decision.FLAG),
        (0.8, 0.75, Decision.FLAG),
        (0.81, 0.0, Decision.REVIEW),
        (0.0, 0.76, Decision.REVIEW),
        (1.0, 1.0, Decision.REVIEW),
    ],
)
def test_default_policy_decisions(
    anomaly: float, risk: float, expected: Decision
) -> None:
    assert DEFAULT.decide(anomaly, risk) is expected


def test_combined_score_is_the_measured_weighting() -> None:
    # Weights measured by make evaluate (docs/evaluation): the fraud
    # probability alone; the anomaly score decides through its thresholds.
    assert DEFAULT.combined(1.0, 0.0) == pytest.approx(0.0)
    assert DEFAULT.combined(0.0, 1.0) == pytest.approx(1.0)
    assert DEFAULT.combined(0.9, 0.25) == pytest.approx(0.25)
    assert DEFAULT.decide(0.9, 0.25) is Decision.REVIEW


def test_default_failsafe_is_review() -> None:
    assert DEFAULT.failsafe is Decision.REVIEW
    assert DEFAULT.version


def _doc(**failsafe: str) -> dict[str, object]:
    return {
        "version": "t1",
        "weights": {"anomaly": 0.4, "risk": 0.6},
        "review": {"anomaly_above": 0.8, "risk_above": 0.75},
        "flag": {"anomaly_above": 0.5, "risk_above": 0.5},
        "failsafe": failsafe or {"decision": "FLAG"},
    }


def test_failsafe_approve_is_refused() -> None:
    with pytest.raises(PolicyError, match="APPROVE"):
        parse_policy(_doc(decision="APPROVE"))


def test_flag_above_review_is_refused() -> None:
    doc = _doc()
    doc["flag"] = {"anomaly_above": 0.9, "risk_above": 0.5}
    with pytest.raises(PolicyError, match="flag thresholds"):
        parse_policy(doc)


def test_threshold_outside_unit_interval_names_the_key() -> None:
    doc = _doc()
    doc["review"] = {"anomaly_above": 1.5, "risk_above": 0.75}
    with pytest.raises(PolicyError, match=r"review\.anomaly_above"):
        parse_policy(doc)


def test_unreadable_policy_file_is_a_clear_error(tmp_path: Path) -> None:
    bad = tmp_path / "policy.toml"
    bad.write_text("version = ")
    with pytest.raises(PolicyError, match="not valid TOML"):
        load_policy(bad)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(tmp_path / "missing.toml")
