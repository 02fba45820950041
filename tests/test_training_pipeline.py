"""A whole (tiny) training run on synthetic data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import features
from features import schemas
from training import run as layout
from training import synthetic
from training.__main__ import main as train_main

pytestmark = [
    pytest.mark.export,
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("training")
    data = synthetic.write_csv(synthetic.generate(3000, seed=5), root / "syn.csv")
    extra = synthetic.write_csv(synthetic.generate(400, seed=9), root / "extra.csv")
    out = root / "run"
    code = train_main(
        [
            *("--data", str(data), "--out", str(out), "--seed", "3", "--epochs", "1"),
            *("--extra-eval", str(extra)),
        ]
    )
    assert code == 0
    return out


def test_run_keeps_models_report_and_parity_features(run_dir: Path) -> None:
    for name in (
        layout.AUTOENCODER,
        layout.CLASSIFIER_KERAS,
        layout.CLASSIFIER_SAVEDMODEL + "/saved_model.pb",
        layout.REPORT_JSON,
        layout.REPORT_MD,
        layout.PR_CURVE_PNG,
        layout.MANIFEST,
    ):
        assert (run_dir / name).exists(), name
    sample = np.load(run_dir / layout.PARITY_FEATURES)
    assert sample.dtype == np.float32
    assert sample.shape[1] == schemas.width(schemas.CURRENT_SCHEMA_ID)
    assert 0 < len(sample) <= 512


def test_report_covers_every_model_and_the_policy(run_dir: Path) -> None:
    report = json.loads((run_dir / layout.REPORT_JSON).read_text())
    assert report["feature_schema"] == schemas.CURRENT_SCHEMA_ID
    assert report["feature_names"] == list(
        schemas.feature_names(schemas.CURRENT_SCHEMA_ID)
    )
    assert report["data"]["rows"] == 3000
    # Validation: the latest 5 %, every label. Train and calibration: the
    # earlier rows whose label was known when the file ends (7-day delay).
    split, labels = report["data"]["split"], report["labels"]
    assert split["validation"] == 150
    unknown = labels["train_and_calibration_rows_not_yet_known"]
    assert unknown > 0 and labels["delay_days"] == 7.0
    assert split["train"] + split["calibration"] + unknown == 2850
    assert [e["epoch"] for e in report["classifier"]["epochs"]] == [1]
    validation = report["validation"]
    for model in ("anomaly_autoencoder", "risk_classifier", "combined"):
        assert set(validation["metrics"][model]) == {
            "pr_auc",
            "roc_auc",
            "recall_at_1pct_fpr",
        }
    assert 0.0 <= validation["risk_classifier_ece"]["calibrated"] <= 1.0
    for who in ("fraud", "legitimate"):
        assert sum(validation["policy"][who].values()) == pytest.approx(1.0)
    markdown = (run_dir / layout.REPORT_MD).read_text()
    verdict = validation["policy"]["legit_review_check"].upper()
    assert f"**{verdict}**: legitimate transactions sent to REVIEW" in markdown
    assert "PR-AUC" in markdown and layout.PR_CURVE_PNG in markdown


def test_anomaly_knots_are_monotone_from_zero_to_one(run_dir: Path) -> None:
    knots = json.loads((run_dir / layout.MANIFEST).read_text())["calibration"][
        "anomaly_knots"
    ]
    assert knots["y"][0] == 0.0 and knots["y"][-1] == 1.0
    assert all(b > a for a, b in zip(knots["x"], knots["x"][1:], strict=False))
    assert knots["y"][knots["quantiles"].index(0.95)] == pytest.approx(0.5)
    assert knots["y"][knots["quantiles"].index(0.99)] == pytest.approx(0.8)


def test_run_directory_is_never_reused(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = sorted(p.name for p in run_dir.iterdir())
    assert train_main(["--data", "unused.csv", "--out", str(run_dir)]) == 1
    assert "already exists" in capsys.readouterr().err
    assert sorted(p.name for p in run_dir.iterdir()) == before


def test_missing_data_is_a_clean_error_and_leaves_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "runs" / "20300101T000000Z"
    code = train_main(["--data", str(tmp_path / "missing.csv.gz"), "--out", str(out)])
    assert code == 1
    err = capsys.readouterr().err
    assert "error: no transaction file at" in err and "Traceback" not in err
    assert not out.exists()


def test_malformed_rows_are_a_clean_error_and_leave_no_run_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = synthetic.write_csv(synthetic.generate(50, seed=1), tmp_path / "syn.csv")
    lines = data.read_text().splitlines()
    lines[5] = lines[5] + ",extra"
    data.write_text("\n".join(lines) + "\n")
    out = tmp_path / "runs" / "20300101T000000Z"

    assert train_main(["--data", str(data), "--out", str(out)]) == 1
    assert f"error: {data}:6: expected" in capsys.readouterr().err
    assert not out.exists()


def test_report_has_unseen_value_probes_and_the_extra_file(run_dir: Path) -> None:
    report = json.loads((run_dir / layout.REPORT_JSON).read_text())
    assert report["robustness_method"] == {
        "unseen_value_rate": 0.1,
        "swap_rate": 0.05,
        "autoencoder_error": "blockwise",
    }
    probes = report["unseen_value_probes"]
    assert {"as is", "currency=OTHER", "every field OTHER"} <= set(probes)
    assert all(0.0 <= p["legit_review"] <= 1.0 for p in probes.values())
    (extra,) = report["extra_evaluations"]
    assert extra["source"] == "extra.csv" and extra["rows"] == 400
    assert sum(extra["counts"].values()) == 400
    for shares in extra["policy"].values():
        assert sum(shares.values()) == pytest.approx(1.0)
    assert set(extra["other_share"]) == {v.field for v in features.VOCABULARIES}
    markdown = (run_dir / layout.REPORT_MD).read_text()
    assert "## Extra evaluation: `extra.csv`" in markdown
    assert "| every field OTHER |" in markdown


def test_evaluate_command_scores_a_file_with_a_run(
    run_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from training.evaluate import main as evaluate_main

    extra = run_dir.parent / "extra.csv"
    assert evaluate_main(["--run", str(run_dir), "--data", str(extra)]) == 0
    (result,) = json.loads(capsys.readouterr().out)
    report = json.loads((run_dir / layout.REPORT_JSON).read_text())
    assert result["policy"] == report["extra_evaluations"][0]["policy"]
    assert evaluate_main(["--run", str(run_dir), "--data", "missing.csv"]) == 1
