"""Score calibration fitted on the calibration split (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

# Legitimate-traffic quantiles of the reconstruction error and the anomaly
# scores they map to: the legit 95th percentile lands on the default FLAG
# threshold (0.5) and the 99th on the REVIEW threshold (0.8).
DEFAULT_ANOMALY_KNOTS: tuple[tuple[float, float], ...] = (
    (0.50, 0.10),
    (0.90, 0.30),
    (0.95, 0.50),
    (0.99, 0.80),
    (0.999, 0.95),
)
# Past the last knot the score keeps rising at this multiple of the last
# error quantile, reaching 1.0 there.
TAIL_ERROR_MULTIPLE = 4.0
STD_FLOOR = 0.05


def standardisation(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Column mean and std, with a floor so rare one-hot columns stay bounded.

    A column that never varied gets std 1: a serving-time value that training
    never saw then counts as one unit of deviation, not as an explosion.
    """
    mean = x.mean(axis=0, dtype=np.float64)
    std = x.std(axis=0, dtype=np.float64)
    std = np.where(std < 1e-6, 1.0, np.maximum(std, STD_FLOOR))
    return mean.astype(np.float32), std.astype(np.float32)


@dataclass(frozen=True)
class PiecewiseLinear:
    """A monotone piecewise-linear map through (x, y) knots, clamped to [0, 1]."""

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        if self.x.shape != self.y.shape or self.x.ndim != 1 or len(self.x) < 2:
            raise ValueError(f"knots must be two equal 1-D arrays, got {self.x.shape}")
        if np.any(np.diff(self.x) <= 0):
            raise ValueError(f"knot x values must increase strictly: {self.x}")
        if np.any(np.diff(self.y) < 0):
            raise ValueError(f"knot y values must not decrease: {self.y}")

    def __call__(self, values: np.ndarray) -> np.ndarray:
        return np.interp(values, self.x, self.y).astype(np.float32)

    def as_dict(self) -> dict[str, list[float]]:
        return {"x": self.x.tolist(), "y": self.y.tolist()}


def fit_quantile_knots(
    legit_errors: np.ndarray,
    knots: Sequence[tuple[float, float]] = DEFAULT_ANOMALY_KNOTS,
) -> PiecewiseLinear:
    """Map legitimate-traffic error quantiles onto the given scores."""
    if len(legit_errors) < 20:
        raise ValueError(
            f"need at least 20 legitimate calibration rows, got {len(legit_errors)}"
        )
    quantiles = np.array([q for q, _ in knots], dtype=np.float64)
    scores = np.array([s for _, s in knots], dtype=np.float64)
    at = np.quantile(legit_errors.astype(np.float64), quantiles)
    x = np.concatenate([[0.0], at, [at[-1] * TAIL_ERROR_MULTIPLE]])
    # Ties (tiny or degenerate calibration sets) would break strict monotony.
    for i in range(1, len(x)):
        x[i] = max(x[i], x[i - 1] * (1 + 1e-4) + 1e-9)
    y = np.concatenate([[0.0], scores, [1.0]])
    return PiecewiseLinear(x.astype(np.float32), y.astype(np.float32))


@dataclass(frozen=True)
class Platt:
    """p = sigmoid(a * logit + b)."""

    a: float
    b: float

    def __call__(self, logits: np.ndarray) -> np.ndarray:
        return (1.0 / (1.0 + np.exp(-(self.a * logits + self.b)))).astype(np.float32)


def fit_platt(logits: np.ndarray, labels: np.ndarray, iterations: int = 100) -> Platt:
    """Logistic regression of the labels on the logit (Newton's method)."""
    z = logits.astype(np.float64).ravel()
    t = labels.astype(np.float64).ravel()
    if t.min() == t.max():
        raise ValueError("calibration split needs both fraud and legitimate rows")
    # Platt's smoothed targets keep the fit finite on separable data.
    positives, negatives = t.sum(), len(t) - t.sum()
    t = np.where(t > 0.5, (positives + 1) / (positives + 2), 1 / (negatives + 2))
    a, b = 1.0, 0.0
    for _ in range(iterations):
        p = 1.0 / (1.0 + np.exp(-(a * z + b)))
        w = np.maximum(p * (1 - p), 1e-12)
        grad = np.array([np.sum((p - t) * z), np.sum(p - t)])
        hess = np.array(
            [[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]
        )
        step = np.linalg.solve(hess + 1e-9 * np.eye(2), grad)
        a, b = a - step[0], b - step[1]
        if np.max(np.abs(step)) < 1e-10:
            break
    return Platt(float(a), float(b))


def expected_calibration_error(
    probabilities: np.ndarray, labels: np.ndarray, bins: int = 15
) -> float:
    """Equal-width-bin ECE: sum over bins of |accuracy - confidence| weighted."""
    p = probabilities.astype(np.float64).ravel()
    t = labels.astype(np.float64).ravel()
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.mean() * abs(t[mask].mean() - p[mask].mean())
    return float(total)
