"""The decision policy for reports: the one in ``config/policy.toml``.

The gateway loads the same file (``gateway.policy``); this is a vectorised
view of it for scoring whole validation sets.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

DECISIONS: tuple[str, ...] = ("APPROVE", "FLAG", "REVIEW")
POLICY_PATH = Path(__file__).resolve().parents[1] / "config" / "policy.toml"


@dataclass(frozen=True)
class Policy:
    anomaly_weight: float = 0.4
    risk_weight: float = 0.6
    flag_anomaly: float = 0.5
    flag_risk: float = 0.5
    review_anomaly: float = 0.8
    review_risk: float = 0.75
    version: str = "built-in"

    def combined(self, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
        return self.anomaly_weight * anomaly + self.risk_weight * risk

    def decide(self, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
        """REVIEW, else FLAG, else APPROVE, per transaction."""
        anomaly = np.asarray(anomaly).ravel()
        risk = np.asarray(risk).ravel()
        review = (anomaly > self.review_anomaly) | (risk > self.review_risk)
        flag = (anomaly > self.flag_anomaly) | (risk > self.flag_risk)
        return np.where(review, "REVIEW", np.where(flag, "FLAG", "APPROVE"))

    @property
    def rule(self) -> str:
        return (
            f"REVIEW if anomaly > {self.review_anomaly:g} or risk > "
            f"{self.review_risk:g}, else FLAG if anomaly > {self.flag_anomaly:g} or "
            f"risk > {self.flag_risk:g}, else APPROVE"
        )

    @property
    def combined_label(self) -> str:
        return (
            f"Combined {self.anomaly_weight:g} * anomaly + {self.risk_weight:g} * risk"
        )


def load(path: Path = POLICY_PATH) -> Policy:
    from gateway.policy import load_policy

    policy = load_policy(path)
    return Policy(
        anomaly_weight=policy.anomaly_weight,
        risk_weight=policy.risk_weight,
        flag_anomaly=policy.flag.anomaly_above,
        flag_risk=policy.flag.risk_above,
        review_anomaly=policy.review.anomaly_above,
        review_risk=policy.review.risk_above,
        version=policy.version,
    )


DEFAULT_POLICY = load()


def decision_shares(decisions: np.ndarray) -> dict[str, float]:
    n = max(len(decisions), 1)
    return {d: float(np.sum(decisions == d)) / n for d in DECISIONS}
