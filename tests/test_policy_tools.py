"""Proposing policy thresholds and backtesting a candidate before the switch."""

from __future__ import annotations

import asyncio
import json
import tomllib
from pathlib import Path

import asyncpg
import numpy as np
import pytest
from conftest import TEST_DATABASE_URL

from gateway.policy import load_policy, parse_policy
from training import policy_tools, synthetic
from training.policy_tools import PolicyToolError, Scored

ROOT = Path(__file__).resolve().parents[1]
CURRENT = ROOT / "config" / "policy.toml"


@pytest.fixture(scope="module")
def labelled(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("policy") / "labelled.csv"
    return synthetic.write_csv(synthetic.generate(3000, seed=5), path)


def uniform(n: int = 10_000, seed: int = 0) -> Scored:
    rng = np.random.default_rng(seed)
    return Scored(rng.random(n), rng.random(n), rng.integers(0, 2, n), source="t")


def test_proposal_reaches_the_target_review_rate_with_a_new_version() -> None:
    current = load_policy(CURRENT)
    candidate, figures = policy_tools.propose(uniform(), current, 0.01, None)
    assert candidate.version != current.version
    assert figures["review_rate"] == pytest.approx(0.01, abs=0.001)
    decisions = policy_tools.decide(candidate, uniform().anomaly, uniform().risk)
    assert np.mean(decisions == "REVIEW") == pytest.approx(0.01, abs=0.001)
    # The printed TOML is a policy the gateway loads.
    parsed = parse_policy(tomllib.loads(policy_tools.render_toml(candidate)))
    assert parsed == candidate


def test_proposal_with_the_current_version_is_refused() -> None:
    current = load_policy(CURRENT)
    with pytest.raises(PolicyToolError, match="new version"):
        policy_tools.propose(uniform(), current, 0.01, current.version)


def test_backtest_counts_each_transition() -> None:
    current = load_policy(CURRENT)
    scored = Scored(
        anomaly=np.array([0.1, 0.6, 0.9, 0.6, 0.1]),
        risk=np.array([0.1, 0.1, 0.1, 0.1, 0.7]),
        labels=None,
        source="t",
    )
    stricter = parse_policy(
        tomllib.loads(CURRENT.read_text().replace(current.version, "stricter"))
        | {"review": {"anomaly_above": 0.55, "risk_above": 0.65}}
    )
    report = policy_tools.backtest(scored, current, stricter)
    # APPROVE, FLAG, REVIEW, FLAG, FLAG before; the three FLAGs become REVIEW.
    assert report["changed"] == 3
    assert report["changes"] == {"FLAG->REVIEW": 3}
    assert report["matrix"]["APPROVE"]["APPROVE"] == 1
    assert report["matrix"]["REVIEW"]["REVIEW"] == 1


def test_backtest_refuses_the_current_version() -> None:
    current = load_policy(CURRENT)
    with pytest.raises(PolicyToolError, match="new version"):
        policy_tools.backtest(uniform(), current, current)


def test_propose_then_backtest_on_a_labelled_file(
    labelled: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "candidate.toml"
    args = ["propose", "--data", str(labelled), "--target-review-rate", "0.02"]
    assert policy_tools.main([*args, "--out", str(out)]) == 0
    candidate = load_policy(out)
    assert candidate.version.startswith("proposed-")

    capsys.readouterr()
    code = policy_tools.main(
        ["backtest", "--candidate", str(out), "--data", str(labelled), "--json"]
    )
    assert code == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 3000
    assert report["shares"]["candidate"]["REVIEW"] == pytest.approx(0.02, abs=0.002)
    assert sum(sum(row.values()) for row in report["matrix"].values()) == 3000


async def test_backtest_replays_the_stored_scores(
    db: asyncpg.Pool, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = [
        ("a", 0.1, 0.1, "APPROVE", False),
        ("b", 0.6, 0.1, "FLAG", False),
        ("c", 0.9, 0.1, "REVIEW", False),
        ("d", None, None, "REVIEW", True),
    ]
    for tid, anomaly, risk, decision, degraded in rows:
        await db.execute(
            "INSERT INTO transactions (transaction_id, user_id, payload, "
            "payload_sha256, amount, currency, anomaly_score, risk_probability, "
            "decision, model_versions, policy_version, degraded, response) "
            "VALUES ($1, 'u', '{}', $2, 1, 'USD', $3, $4, $5, '{}', 'p', $6, '{}')",
            tid,
            "0" * 64,
            anomaly,
            risk,
            decision,
            degraded,
        )
    candidate = tmp_path / "c.toml"
    text = CURRENT.read_text()
    current = load_policy(CURRENT)
    candidate.write_text(
        text.replace(current.version, "lower-flag").replace(
            "[flag]\n# Otherwise FLAG when either score is above its threshold; "
            "else APPROVE.\nanomaly_above = 0.5",
            "[flag]\nanomaly_above = 0.05",
        )
    )
    assert load_policy(candidate).flag.anomaly_above == 0.05
    args = ["backtest", "--candidate", str(candidate), "--database", TEST_DATABASE_URL]
    # The command runs its own event loop, as it does from a shell.
    assert await asyncio.to_thread(policy_tools.main, [*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["rows"] == 3  # the degraded decision has no scores
    assert report["changes"] == {"APPROVE->FLAG": 1}
    assert report["stored_differs_from_current"] == 0
