"""Decision policy changes: propose thresholds, then backtest them.

``python -m training.policy_tools propose --data FILE --target-review-rate 0.01``
scores a labelled file with the live published models (the ONNX graphs that
Triton serves) and prints a candidate policy with a new version whose REVIEW
thresholds send that share of transactions to review.

``python -m training.policy_tools backtest --candidate new.toml --database URL``
(or ``--data file.csv``) replays stored scores (or a file scored with the
live models) under the current and the candidate policy and reports how many
decisions would change, in which direction.

A policy change is a new policy version: a candidate with the current
version is refused.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from gateway.policy import Decision, Policy, PolicyError, Thresholds, load_policy

ROOT = Path(__file__).resolve().parents[1]
DECISIONS = tuple(d.value for d in Decision)


class PolicyToolError(ValueError):
    """The inputs cannot give a candidate or a backtest."""


@dataclass(frozen=True)
class Scored:
    anomaly: np.ndarray
    risk: np.ndarray
    labels: np.ndarray | None  # 1 fraud, 0 legitimate, -1 unknown
    stored: np.ndarray | None = None  # decisions as made, from the database
    source: str = ""


def decide(policy: Policy, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
    review = (anomaly > policy.review.anomaly_above) | (risk > policy.review.risk_above)
    flag = (anomaly > policy.flag.anomaly_above) | (risk > policy.flag.risk_above)
    return np.where(review, "REVIEW", np.where(flag, "FLAG", "APPROVE"))


def score_file(path: Path, repository: Path) -> Scored:
    """A transactions file scored by the live version of each published model;
    history features, for models that use them, are folded over the file
    alone, labels fed back 7 days after each transaction (or at reported_at)."""
    from features.schemas import WIDEST_SCHEMA_ID
    from training.data import read_transactions
    from training.evaluate_release import (
        AUTOENCODER,
        CLASSIFIER,
        onnx_scorer,
        published,
    )
    from training.history import encode

    data = read_transactions(path)
    x = encode(data, WIDEST_SCHEMA_ID)
    risk = onnx_scorer(published(repository, CLASSIFIER))(x)
    anomaly = onnx_scorer(published(repository, AUTOENCODER))(x)
    return Scored(anomaly, risk, np.asarray(data.is_fraud), source=str(path))


async def _fetch_stored(database_url: str) -> list[Any]:
    import asyncpg

    connection = await asyncpg.connect(database_url, timeout=10)
    try:
        return list(
            await connection.fetch(
                "SELECT anomaly_score, risk_probability, decision FROM transactions "
                "WHERE NOT degraded AND anomaly_score IS NOT NULL "
                "AND risk_probability IS NOT NULL ORDER BY id"
            )
        )
    finally:
        await connection.close()


def stored_scores(database_url: str) -> Scored:
    """The scores stored with each non-degraded decision (degraded ones have none)."""
    rows = asyncio.run(_fetch_stored(database_url))
    anomaly = np.array([r["anomaly_score"] for r in rows], dtype=np.float64)
    risk = np.array([r["risk_probability"] for r in rows], dtype=np.float64)
    stored = np.array([r["decision"] for r in rows], dtype=object)
    return Scored(anomaly, risk, None, stored, source="transactions table")


def _threshold_at(values: np.ndarray, share: float) -> float:
    """The smallest threshold with at most ``share`` of values strictly above it."""
    if share <= 0:
        return 1.0
    ordered = np.sort(values)[::-1]
    k = int(np.floor(share * len(values)))
    if k >= len(ordered):
        return 0.0
    return float(ordered[k])


def review_thresholds(
    anomaly: np.ndarray, risk: np.ndarray, rate: float
) -> tuple[Thresholds, float]:
    """Thresholds with the same tail share for each score, their union at ``rate``.

    Each score sends the same share ``q`` of transactions over its threshold;
    ``q`` is searched so that the share over either one is at most ``rate``.
    """
    low, high = 0.0, rate
    best = Thresholds(1.0, 1.0)
    achieved = 0.0
    for _ in range(40):
        q = (low + high) / 2
        candidate = Thresholds(_threshold_at(anomaly, q), _threshold_at(risk, q))
        share = float(np.mean(candidate_mask(candidate, anomaly, risk)))
        if share <= rate:
            best, achieved, low = candidate, share, q
        else:
            high = q
    return best, achieved


def candidate_mask(
    thresholds: Thresholds, anomaly: np.ndarray, risk: np.ndarray
) -> np.ndarray:
    return (anomaly > thresholds.anomaly_above) | (risk > thresholds.risk_above)


def new_version() -> str:
    return f"proposed-{datetime.now(UTC).strftime('%Y-%m-%dT%H%M%SZ')}"


def propose(
    scored: Scored, current: Policy, target_review_rate: float, version: str | None
) -> tuple[Policy, dict[str, Any]]:
    if not 0 < target_review_rate < 1:
        raise PolicyToolError(
            f"--target-review-rate must be within (0, 1), got {target_review_rate}"
        )
    if len(scored.anomaly) == 0:
        raise PolicyToolError(f"no scored transactions in {scored.source}")
    version = version or new_version()
    if version == current.version:
        raise PolicyToolError(
            f"the candidate needs a new version; {version!r} is the current one"
        )
    review, achieved = review_thresholds(
        scored.anomaly, scored.risk, target_review_rate
    )
    # FLAG thresholds stay as they are, but never above REVIEW's.
    flag = Thresholds(
        min(current.flag.anomaly_above, review.anomaly_above),
        min(current.flag.risk_above, review.risk_above),
    )
    candidate = Policy(
        version=version,
        anomaly_weight=current.anomaly_weight,
        risk_weight=current.risk_weight,
        review=review,
        flag=flag,
        failsafe=current.failsafe,
    )
    decisions = decide(candidate, scored.anomaly, scored.risk)
    figures: dict[str, Any] = {
        "rows": len(decisions),
        "target_review_rate": target_review_rate,
        "review_rate": achieved,
        "shares": {d: float(np.mean(decisions == d)) for d in DECISIONS},
    }
    if scored.labels is not None and np.any(scored.labels == 1):
        fraud = scored.labels == 1
        reviewed = decisions == "REVIEW"
        figures["fraud_in_review"] = float(np.mean(reviewed[fraud]))
        figures["review_precision"] = (
            float(np.mean(fraud[reviewed])) if reviewed.any() else None
        )
    return candidate, figures


def render_toml(policy: Policy, comment: Sequence[str] = ()) -> str:
    lines = [f"# {line}" for line in comment]
    lines += [
        "# Proposed by python -m training.policy_tools; backtest it before the switch.",
        f'version = "{policy.version}"',
        "",
        "[weights]",
        f"anomaly = {policy.anomaly_weight!r}",
        f"risk = {policy.risk_weight!r}",
        "",
        "[review]",
        f"anomaly_above = {policy.review.anomaly_above!r}",
        f"risk_above = {policy.review.risk_above!r}",
        "",
        "[flag]",
        f"anomaly_above = {policy.flag.anomaly_above!r}",
        f"risk_above = {policy.flag.risk_above!r}",
        "",
        "[failsafe]",
        f'decision = "{policy.failsafe.value}"',
    ]
    return "\n".join(lines) + "\n"


def backtest(scored: Scored, current: Policy, candidate: Policy) -> dict[str, Any]:
    """Current -> candidate decision counts over the same scores."""
    if candidate.version == current.version:
        raise PolicyToolError(
            f"candidate version {candidate.version!r} is the current version; "
            "a policy change needs a new version"
        )
    before = decide(current, scored.anomaly, scored.risk)
    after = decide(candidate, scored.anomaly, scored.risk)
    matrix = {
        a: {b: int(np.sum((before == a) & (after == b))) for b in DECISIONS}
        for a in DECISIONS
    }
    changes = {
        f"{a}->{b}": matrix[a][b]
        for a in DECISIONS
        for b in DECISIONS
        if a != b and matrix[a][b]
    }
    report: dict[str, Any] = {
        "source": scored.source,
        "rows": len(before),
        "current_version": current.version,
        "candidate_version": candidate.version,
        "changed": int(np.sum(before != after)),
        "changes": changes,
        "matrix": matrix,
        "shares": {
            "current": {d: float(np.mean(before == d)) for d in DECISIONS},
            "candidate": {d: float(np.mean(after == d)) for d in DECISIONS},
        },
    }
    if scored.stored is not None:
        # Rows decided under another policy version than the current one.
        report["stored_differs_from_current"] = int(np.sum(scored.stored != before))
    if scored.labels is not None and np.any(scored.labels >= 0):
        fraud = scored.labels == 1
        report["fraud_reviewed"] = {
            "current": int(np.sum((before == "REVIEW") & fraud)),
            "candidate": int(np.sum((after == "REVIEW") & fraud)),
            "fraud_rows": int(np.sum(fraud)),
        }
    return report


def render_backtest(report: dict[str, Any]) -> str:
    width = max(len(d) for d in DECISIONS) + 2
    out = [
        f"{report['rows']} decisions from {report['source']}: "
        f"{report['changed']} would change "
        f"({report['current_version']} -> {report['candidate_version']})",
        "",
        "current \\ candidate".ljust(22) + "".join(d.rjust(width) for d in DECISIONS),
    ]
    for a in DECISIONS:
        cells = "".join(str(report["matrix"][a][b]).rjust(width) for b in DECISIONS)
        out.append(a.ljust(22) + cells)
    for change, count in report["changes"].items():
        out.append(f"  {change}: {count}")
    return "\n".join(out) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.policy_tools",
        description="Propose decision policy thresholds and backtest a candidate.",
    )
    parser.add_argument(
        "--current",
        type=Path,
        default=ROOT / "config" / "policy.toml",
        help="the policy in force (default config/policy.toml)",
    )
    parser.add_argument(
        "--repository",
        type=Path,
        default=ROOT / "model_repository",
        help="published models, scored at their live version",
    )
    commands = parser.add_subparsers(dest="command", required=True)
    prop = commands.add_parser("propose", help="thresholds for a target review rate")
    prop.add_argument("--data", type=Path, required=True, help="labelled CSV")
    prop.add_argument("--target-review-rate", type=float, required=True)
    prop.add_argument("--version", help="the candidate's version (default: dated)")
    prop.add_argument("--out", type=Path, help="write the TOML here, not stdout")
    back = commands.add_parser("backtest", help="replay decisions under a candidate")
    back.add_argument("--candidate", type=Path, required=True)
    source = back.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", type=Path, help="a transactions CSV to score")
    source.add_argument("--database", help="replay the transactions table's scores")
    back.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)

    try:
        current = load_policy(args.current)
        if args.command == "propose":
            scored = score_file(args.data, args.repository)
            candidate, figures = propose(
                scored, current, args.target_review_rate, args.version
            )
            comment = [
                f"Candidate for {args.data.name}: {json.dumps(figures)}",
                f"Replaces policy {current.version!r}.",
            ]
            text = render_toml(candidate, comment)
            if args.out:
                args.out.write_text(text)
                print(f"wrote {args.out}", file=sys.stderr)
            else:
                print(text, end="")
            print(json.dumps(figures), file=sys.stderr)
            return 0
        candidate = load_policy(args.candidate)
        scored = (
            stored_scores(args.database)
            if args.database
            else score_file(args.data, args.repository)
        )
        report = backtest(scored, current, candidate)
    except (PolicyError, PolicyToolError, FileNotFoundError, ValueError) as exc:
        print(f"refused: {exc}", file=sys.stderr)
        return 1
    print(
        json.dumps(report, indent=2) if args.json else render_backtest(report), end=""
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
