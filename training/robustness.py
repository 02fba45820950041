"""How the models treat values and combinations that training never saw.

Two checks, each reporting what the default policy does to legitimate
traffic: held-out legitimate rows with a field moved to its OTHER bucket (or
to a combination absent from the data), and an extra labelled file from
another source scored as it is.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

import features
from features.schemas import BASIC_SCHEMA_ID
from training.data import read_transactions
from training.history import encode
from training.labels import DEFAULT_LABEL_DELAY_DAYS
from training.metrics import ranking_metrics
from training.policy import DEFAULT_POLICY, Policy, decision_shares
from training.unseen import has_value, with_other, with_value

Scores = Callable[[np.ndarray], tuple[np.ndarray, np.ndarray]]
"""Features -> (anomaly score, risk probability)."""

# A combination absent from IEEE-CIS: every category W row has device unknown.
COMBINATION_PROBES: tuple[tuple[str, str, str, str], ...] = (
    ("product_category", "W", "device", "mobile"),
    ("product_category", "W", "device", "desktop"),
)


def _legit_summary(
    anomaly: np.ndarray, risk: np.ndarray, policy: Policy
) -> dict[str, Any]:
    return {
        "rows": int(len(anomaly)),
        "legit_review": decision_shares(policy.decide(anomaly, risk))["REVIEW"],
        "anomaly_median": float(np.median(anomaly)),
        "anomaly_mean": float(np.mean(anomaly)),
        "risk_mean": float(np.mean(risk)),
    }


def unseen_value_probes(
    legit: np.ndarray, scores: Scores, policy: Policy = DEFAULT_POLICY
) -> dict[str, dict[str, Any]]:
    """Default-policy outcome on legitimate rows, as they are and altered."""
    probes: dict[str, np.ndarray] = {"as is": legit}
    everything = legit
    for vocab in features.VOCABULARIES:
        probes[f"{vocab.field}=OTHER"] = with_other(legit, vocab.field)
        everything = with_other(everything, vocab.field)
    probes["every field OTHER"] = everything
    for field, value, other_field, other_value in COMBINATION_PROBES:
        rows = has_value(legit, field, value)
        if rows.any():
            probes[f"{field}={value} with {other_field}={other_value}"] = with_value(
                legit[rows], other_field, other_value
            )
    return {
        name: _legit_summary(*scores(x), policy) for name, x in probes.items() if len(x)
    }


def evaluate_file(
    path: Path,
    scores: Scores,
    schema: str = BASIC_SCHEMA_ID,
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    policy: Policy = DEFAULT_POLICY,
) -> dict[str, Any]:
    """Default-policy shares (and ranking, for what it is worth) on a CSV; the
    history block, if the schema has one, is folded over the file alone."""
    txns = read_transactions(path)
    x = encode(txns, schema, delay_days=label_delay_days)
    anomaly, risk = scores(x)
    decisions = policy.decide(anomaly, risk)
    labels = txns.is_fraud
    groups = {"fraud": labels == 1, "legitimate": labels == 0, "unlabelled": labels < 0}
    offset = len(features.NUMERIC_FEATURES)
    other_share = {}
    for vocab in features.VOCABULARIES:
        offset += len(vocab.columns)
        other_share[vocab.field] = float(x[:, offset - 1].mean())
    result: dict[str, Any] = {
        "source": path.name,
        "rows": len(txns),
        "counts": {name: int(mask.sum()) for name, mask in groups.items()},
        "other_share": other_share,
        "policy": {
            name: decision_shares(decisions[mask])
            for name, mask in groups.items()
            if mask.any()
        },
        "anomaly_median": {
            name: float(np.median(anomaly[mask]))
            for name, mask in groups.items()
            if mask.any()
        },
    }
    labelled = labels >= 0
    if groups["fraud"].any() and groups["legitimate"].any():
        y = labels[labelled]
        result["metrics"] = {
            "anomaly_autoencoder": ranking_metrics(y, anomaly[labelled]),
            "risk_classifier": ranking_metrics(y, risk[labelled]),
            "combined": ranking_metrics(y, policy.combined(anomaly, risk)[labelled]),
        }
    return result
