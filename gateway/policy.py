"""The decision policy: two scores in, APPROVE / FLAG / REVIEW out."""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any


class Decision(StrEnum):
    APPROVE = "APPROVE"
    FLAG = "FLAG"
    REVIEW = "REVIEW"


class PolicyError(ValueError):
    """A policy file that cannot be used, with the key at fault."""


@dataclass(frozen=True)
class Thresholds:
    anomaly_above: float
    risk_above: float

    def exceeded(self, anomaly: float, risk: float) -> bool:
        return anomaly > self.anomaly_above or risk > self.risk_above


@dataclass(frozen=True)
class Policy:
    version: str
    anomaly_weight: float
    risk_weight: float
    review: Thresholds
    flag: Thresholds
    failsafe: Decision

    def combined(self, anomaly: float, risk: float) -> float:
        return self.anomaly_weight * anomaly + self.risk_weight * risk

    def decide(self, anomaly: float, risk: float) -> Decision:
        if self.review.exceeded(anomaly, risk):
            return Decision.REVIEW
        if self.flag.exceeded(anomaly, risk):
            return Decision.FLAG
        return Decision.APPROVE


def _number(table: dict[str, Any], key: str, where: str) -> float:
    value = table.get(key)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise PolicyError(f"{where}.{key} must be a number, got {value!r}")
    if not 0.0 <= float(value) <= 1.0:
        raise PolicyError(f"{where}.{key} must be within [0, 1], got {value!r}")
    return float(value)


def _thresholds(doc: dict[str, Any], section: str) -> Thresholds:
    table = doc.get(section)
    if not isinstance(table, dict):
        raise PolicyError(f"missing section [{section}]")
    return Thresholds(
        anomaly_above=_number(table, "anomaly_above", section),
        risk_above=_number(table, "risk_above", section),
    )


def parse_policy(doc: dict[str, Any]) -> Policy:
    version = doc.get("version")
    if not isinstance(version, str) or not version.strip():
        raise PolicyError(f"version must be a non-empty string, got {version!r}")
    weights = doc.get("weights")
    if not isinstance(weights, dict):
        raise PolicyError("missing section [weights]")
    review = _thresholds(doc, "review")
    flag = _thresholds(doc, "flag")
    if flag.anomaly_above > review.anomaly_above or flag.risk_above > review.risk_above:
        raise PolicyError("flag thresholds must not exceed review thresholds")
    failsafe_table = doc.get("failsafe", {})
    raw_failsafe = failsafe_table.get("decision", Decision.REVIEW.value)
    try:
        failsafe = Decision(raw_failsafe)
    except ValueError:
        raise PolicyError(
            f"failsafe.decision is not a decision: {raw_failsafe!r}"
        ) from None
    if failsafe is Decision.APPROVE:
        raise PolicyError("failsafe.decision must not be APPROVE")
    return Policy(
        version=version.strip(),
        anomaly_weight=_number(weights, "anomaly", "weights"),
        risk_weight=_number(weights, "risk", "weights"),
        review=review,
        flag=flag,
        failsafe=failsafe,
    )


def load_policy(path: Path) -> Policy:
    try:
        with path.open("rb") as fh:
            doc = tomllib.load(fh)
    except OSError as exc:
        raise PolicyError(f"cannot read policy file {path}: {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {path} is not valid TOML: {exc}") from exc
    return parse_policy(doc)
