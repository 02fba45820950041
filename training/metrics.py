"""Ranking metrics on held-out scores."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve


def recall_at_fpr(labels: np.ndarray, scores: np.ndarray, fpr: float = 0.01) -> float:
    """Best recall among thresholds whose false-positive rate is at most ``fpr``."""
    false_pos, true_pos, _ = roc_curve(labels, scores)
    allowed = false_pos <= fpr
    return float(true_pos[allowed].max()) if allowed.any() else 0.0


def ranking_metrics(labels: np.ndarray, scores: np.ndarray) -> dict[str, float]:
    labels = np.asarray(labels).ravel()
    scores = np.asarray(scores, dtype=np.float64).ravel()
    if labels.min() == labels.max():
        raise ValueError("ranking metrics need both fraud and legitimate rows")
    return {
        "pr_auc": float(average_precision_score(labels, scores)),
        "roc_auc": float(roc_auc_score(labels, scores)),
        "recall_at_1pct_fpr": recall_at_fpr(labels, scores, 0.01),
    }
