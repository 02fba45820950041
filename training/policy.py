"""The default decision policy, for reports (the gateway has its own)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

DECISIONS: tuple[str, ...] = ("APPROVE", "FLAG", "REVIEW")


@dataclass(frozen=True)
class Policy:
    anomaly_weight: float = 0.4
    risk_weight: float = 0.6
    flag_threshold: float = 0.5
    review_anomaly: float = 0.8
    review_risk: float = 0.75

    def combined(self, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
        return self.anomaly_weight * anomaly + self.risk_weight * risk

    def decide(self, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
        """REVIEW, else FLAG, else APPROVE, per transaction."""
        anomaly = np.asarray(anomaly).ravel()
        risk = np.asarray(risk).ravel()
        review = (anomaly > self.review_anomaly) | (risk > self.review_risk)
        flag = (anomaly > self.flag_threshold) | (risk > self.flag_threshold)
        return np.where(review, "REVIEW", np.where(flag, "FLAG", "APPROVE"))


DEFAULT_POLICY = Policy()


def decision_shares(decisions: np.ndarray) -> dict[str, float]:
    n = max(len(decisions), 1)
    return {d: float(np.sum(decisions == d)) / n for d in DECISIONS}
