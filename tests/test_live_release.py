"""Going live and rolling back, as recorded in the repository (no Triton)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from export import live
from export.errors import SchemaMismatchError

COMMITTED = Path(__file__).resolve().parents[1] / "model_repository"
MODEL = "risk_classifier"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The committed classifier (versions 1 and 2, 2 live) and a version 3."""
    target = tmp_path / "repo"
    shutil.copytree(COMMITTED / MODEL, target / MODEL)
    shutil.copytree(target / MODEL / "2", target / MODEL / "3")
    return target


def lines(repo: Path) -> list[dict]:
    return [json.loads(x) for x in (repo / live.RELEASES_LOG).read_text().splitlines()]


def test_committed_configs_record_the_live_version() -> None:
    for model in ("anomaly_autoencoder", "risk_classifier"):
        assert live.live_version(COMMITTED / model) == 2


def test_live_then_rollback_rewrites_the_policy_and_logs_each_step(
    repo: Path,
) -> None:
    printed: list[str] = []
    first = live.go_live(repo, MODEL, 3, triton=None, who="ana", echo=printed.append)
    config = (repo / MODEL / "config.pbtxt").read_text()
    assert "version_policy: { specific: { versions: [ 3 ] } }" in config
    assert (first.from_version, first.to_version, first.outcome) == (2, 3, "ok")

    back = live.rollback(repo, MODEL, triton=None, who="ana", echo=printed.append)
    assert (back.from_version, back.to_version, back.action) == (3, 2, "rollback")
    assert live.live_version(repo / MODEL) == 2

    logged = lines(repo)
    assert [(e["action"], e["to_version"]) for e in logged] == [
        ("live", 3),
        ("rollback", 2),
    ]
    assert all(e["who"] == "ana" and e["at"].endswith("Z") for e in logged)
    assert printed == (repo / live.RELEASES_LOG).read_text().splitlines()


def test_rollback_follows_the_history_not_the_numbers(repo: Path) -> None:
    live.go_live(repo, MODEL, 1, triton=None, echo=lambda _: None)
    live.go_live(repo, MODEL, 3, triton=None, echo=lambda _: None)
    assert live.previous_version(repo, MODEL) == 1
    live.rollback(repo, MODEL, triton=None, echo=lambda _: None)
    assert live.live_version(repo / MODEL) == 1
    assert live.previous_version(repo, MODEL) == 2


def test_version_trained_on_another_schema_is_refused_and_logged(
    repo: Path,
) -> None:
    card = repo / MODEL / "3" / "model_card.json"
    content = json.loads(card.read_text())
    content["feature_schema"] = "txn-basic-v9"
    card.write_text(json.dumps(content))
    before = (repo / MODEL / "config.pbtxt").read_text()

    with pytest.raises(SchemaMismatchError, match="txn-basic-v9"):
        live.go_live(repo, MODEL, 3, triton=None, echo=lambda _: None)

    assert (repo / MODEL / "config.pbtxt").read_text() == before
    assert lines(repo)[-1]["outcome"] == "failed"


def test_missing_version_is_refused(repo: Path) -> None:
    with pytest.raises(live.ReleaseError, match="publish it first"):
        live.go_live(repo, MODEL, 7, triton=None, echo=lambda _: None)
    assert live.live_version(repo / MODEL) == 2


def test_going_live_with_the_live_version_changes_nothing(repo: Path) -> None:
    entry = live.go_live(repo, MODEL, 2, triton=None, echo=lambda _: None)
    assert entry.outcome == "unchanged"


def test_command_line_status_and_refusal(repo: Path, capsys) -> None:
    assert live.main(["--repository", str(repo), "status"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown[MODEL] == {"live_version": 2, "on_disk": [1, 2, 3], "rollback_to": 1}
    code = live.main(
        ["--repository", str(repo), "--triton-url", "none", "live"]
        + ["--model", MODEL, "--version", "9"]
    )
    assert code == 1
    assert "refused" in capsys.readouterr().err
