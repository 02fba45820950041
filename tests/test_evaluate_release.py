"""make evaluate: the published models on later data against a fresh baseline."""

from __future__ import annotations

import gzip
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from export.repository import versions
from features.schemas import WIDEST_SCHEMA_ID
from training import evaluate_release, synthetic
from training.data import read_transactions
from training.history import encode
from training.split_file import main as split_main

ROOT = Path(__file__).resolve().parents[1]
KEYS = (
    "pr_auc",
    "roc_auc",
    "recall_at_1pct_fpr",
    "recall_at_5pct_fpr",
    "ece",
    "policy",
)


@pytest.fixture(scope="module")
def split(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("release")
    data = synthetic.write_csv(synthetic.generate(3000, seed=17), root / "all.csv")
    earlier, later = root / "earlier.csv.gz", root / "later.csv"
    assert (
        split_main(
            [
                *("--data", str(data), "--fraction", "0.7"),
                *("--earlier", str(earlier), "--later", str(later)),
            ]
        )
        == 0
    )
    return earlier, later


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    """A copy of the published models, with a newest version that is version 1
    again, under the ``latest`` version policy."""
    repo = tmp_path / "repo"
    for name in ("risk_classifier", "anomaly_autoencoder"):
        shutil.copytree(ROOT / "model_repository" / name, repo / name)
        newest = max(int(p.name) for p in (repo / name).iterdir() if p.name.isdigit())
        shutil.copytree(repo / name / "1", repo / name / str(newest + 1))
        config = repo / name / "config.pbtxt"
        text = re.sub(r"version_policy:.*", "", config.read_text())
        config.write_text(text + "version_policy: { latest: { num_versions: 1 } }\n")
    return repo


def test_split_file_by_fraction_and_by_time(
    split: tuple[Path, Path], tmp_path: Path
) -> None:
    earlier, later = split
    assert earlier.read_bytes()[:2] == b"\x1f\x8b"  # gzip
    first, second = read_transactions(earlier), read_transactions(later)
    assert len(first) == 2100 and len(second) == 900
    assert first.epoch[-1] <= second.epoch[0]
    with gzip.open(earlier, "rt") as handle:
        header = handle.readline()
    assert header.startswith("transaction_id,")

    cut = "2024-02-01T00:00:00Z"
    e, lt = tmp_path / "e.csv", tmp_path / "l.csv"
    all_rows = synthetic.write_csv(synthetic.generate(500, seed=4), tmp_path / "s.csv")
    assert (
        split_main(
            [
                "--data",
                str(all_rows),
                "--before",
                cut,
                "--earlier",
                str(e),
                "--later",
                str(lt),
            ]
        )
        == 0
    )
    limit = np.datetime64("2024-02-01T00:00:00").astype("datetime64[s]").astype(float)
    assert np.all(read_transactions(e).epoch < limit)
    assert np.all(read_transactions(lt).epoch >= limit)


def test_evaluate_writes_metrics_for_every_model(
    split: tuple[Path, Path],
    repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    earlier, later = split
    out = tmp_path / "eval"
    code = evaluate_release.main(
        [
            *("--data", str(later), "--history", str(earlier), "--out", str(out)),
            *("--repository", str(repository)),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed[-1] == str(out / "metrics.json")
    # The comparison is printed before it: a row a model, then the goals.
    assert printed[0].split()[:2] == ["PR-AUC", "ROC-AUC"]
    assert any(line.startswith("baseline (gradient-boosted trees)") for line in printed)
    goals = [line for line in printed if "classifier PR-AUC" in line]
    assert len(goals) == 1 and goals[0].split()[0] in ("met", "NOT")

    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["models"]) == {
        "risk_classifier",
        "anomaly_autoencoder",
        "combined",
        "baseline",
    }
    for name, values in metrics["models"].items():
        for key in KEYS:
            assert key in values, (name, key)
        for who in ("fraud", "legitimate"):
            assert sum(values["policy"][who].values()) == pytest.approx(1.0)
        assert 0 <= values["pr_auc"] <= 1 and 0 <= values["ece"] <= 1
    # Live = the highest version in the repository.
    newest = max(versions(repository / "risk_classifier"))
    assert metrics["published"]["risk_classifier"]["version"] == newest
    assert metrics["baseline"]["label_delay_days"] == 7
    for name in ("report.md", "precision_recall.png", "score_histograms.png"):
        assert (out / name).stat().st_size > 0
    assert "| baseline |" in (out / "report.md").read_text()


def test_evaluate_scores_match_the_onnx_graph(
    split: tuple[Path, Path], repository: Path
) -> None:
    _, later = split
    model = evaluate_release.published(repository, "risk_classifier")
    x = encode(read_transactions(later), WIDEST_SCHEMA_ID)[:64]
    scores = evaluate_release.onnx_scorer(model)(x)
    assert scores.shape == (64,)
    assert np.all((scores >= 0) & (scores <= 1))


def test_history_overlapping_data_is_refused(
    split: tuple[Path, Path], repository: Path, tmp_path: Path
) -> None:
    earlier, later = split
    with pytest.raises(ValueError, match="HISTORY must end before DATA"):
        evaluate_release.evaluate_release(
            earlier, later, tmp_path / "x", repository=repository
        )


def test_a_model_speaking_another_feature_schema_is_refused(repository: Path) -> None:
    # The live version's model card names its schema; old versions without
    # one fall back to the config's.
    model = evaluate_release.published(repository, "risk_classifier")
    card = model.path.parent / "model_card.json"
    content = json.loads(card.read_text())
    content["feature_schema"] = "txn-basic-v9"
    card.write_text(json.dumps(content))
    with pytest.raises(ValueError, match="txn-basic-v9"):
        evaluate_release.published(repository, "risk_classifier")
    card.unlink()
    config = repository / "risk_classifier" / "config.pbtxt"
    config.write_text(
        re.sub(
            r'(key: "feature_schema"\s*value: \{ string_value: ")[^"]*',
            r"\g<1>txn-basic-v8",
            config.read_text(),
        )
    )
    assert "txn-basic-v8" in config.read_text()
    with pytest.raises(ValueError, match="txn-basic-v8"):
        evaluate_release.published(repository, "risk_classifier")


def test_a_specific_version_policy_names_the_live_version(repository: Path) -> None:
    for name in ("risk_classifier", "anomaly_autoencoder"):
        config = repository / name / "config.pbtxt"
        text = re.sub(r"version_policy:.*", "", config.read_text())
        config.write_text(text + "version_policy: { specific: { versions: [ 1 ] } }\n")
        assert evaluate_release.published(repository, name).version == 1


def test_a_missing_candidate_is_not_called_the_live_version(
    repository: Path,
) -> None:
    with pytest.raises(FileNotFoundError) as caught:
        evaluate_release.published(repository, "risk_classifier", 99)
    assert ": version 99 has no model.onnx" in str(caught.value)
    assert "live version" not in str(caught.value)
    (repository / "risk_classifier" / "config.pbtxt").write_text(
        "version_policy: { specific: { versions: [ 98 ] } }\n"
    )
    with pytest.raises(FileNotFoundError, match="live version 98 has no"):
        evaluate_release.published(repository, "risk_classifier")
