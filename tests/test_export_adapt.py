"""export.adapt: a version published again, reading a wider feature schema."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from triton_fixtures import write_linear_onnx

from export import adapt
from export.errors import SchemaMismatchError
from export.repository import schema_text, versions
from features import schemas
from features.schemas import BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID

CONFIG = """name: "anomaly_autoencoder"
platform: "onnxruntime_onnx"
max_batch_size: 1024
input [ { name: "features" data_type: TYPE_FP32 dims: [ 26 ] } ]
output [ { name: "anomaly_score" data_type: TYPE_FP32 dims: [ 1 ] } ]
version_policy: { specific: { versions: [ 1 ] } }
parameters { key: "feature_schema" value: { string_value: "txn-basic-v1" } }
"""


def _run(path: Path, x: np.ndarray) -> np.ndarray:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return np.asarray(session.run(None, {"features": x})[0])


@pytest.fixture
def repository(tmp_path: Path) -> Path:
    model_dir = tmp_path / "repo" / "anomaly_autoencoder"
    write_linear_onnx(model_dir / "1" / "model.onnx", "anomaly_score", seed=5)
    (model_dir / "1" / "model_card.json").write_text(
        json.dumps(
            {
                "model": "anomaly_autoencoder",
                "version": 1,
                "feature_schema": BASIC_SCHEMA_ID,
                "training": {"run": "r1"},
            }
        )
    )
    (model_dir / "config.pbtxt").write_text(schema_text(CONFIG, BASIC_SCHEMA_ID))
    return tmp_path / "repo"


def test_adapted_version_scores_exactly_like_its_source(repository: Path) -> None:
    target, summary = adapt.adapt(
        repository, "anomaly_autoencoder", 1, HISTORY_SCHEMA_ID
    )
    model_dir = repository / "anomaly_autoencoder"
    assert target == model_dir / "2" and versions(model_dir) == [1, 2]
    assert summary["parity_max_abs_diff"] == 0.0 and summary["parity_rows"] > 100
    graph = onnx.load(str(target / "model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[1].dim_value == 43
    rows = adapt.parity_rows(HISTORY_SCHEMA_ID)
    # Random history columns change nothing: the graph reads the first 26.
    noisy = rows.copy()
    noisy[:, 26:] = np.random.default_rng(0).normal(size=noisy[:, 26:].shape)
    expected = _run(model_dir / "1" / "model.onnx", np.ascontiguousarray(rows[:, :26]))
    assert np.array_equal(_run(target / "model.onnx", noisy), expected)
    card = json.loads((target / "model_card.json").read_text())
    assert card["version"] == 2 and card["feature_schema"] == HISTORY_SCHEMA_ID
    assert card["feature_names"] == list(schemas.feature_names(HISTORY_SCHEMA_ID))
    assert card["adapted_from"]["version"] == 1
    assert card["adapted_from"]["feature_schema"] == BASIC_SCHEMA_ID
    assert card["training"] == {"run": "r1"}
    # The config, and so what Triton serves, is untouched until go-live.
    assert "txn-basic-v1" in (model_dir / "config.pbtxt").read_text()


def test_a_version_already_on_the_schema_is_refused(repository: Path) -> None:
    adapt.adapt(repository, "anomaly_autoencoder", 1, HISTORY_SCHEMA_ID)
    with pytest.raises(SchemaMismatchError, match="already speaks"):
        adapt.adapt(repository, "anomaly_autoencoder", 2, HISTORY_SCHEMA_ID)


def test_a_schema_that_does_not_extend_the_source_is_refused(
    repository: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = tuple(reversed(schemas.feature_names(HISTORY_SCHEMA_ID)))
    monkeypatch.setitem(schemas.SCHEMAS, "txn-reordered-v1", other)
    with pytest.raises(SchemaMismatchError, match="does not start with"):
        adapt.adapt(repository, "anomaly_autoencoder", 1, "txn-reordered-v1")
    assert versions(repository / "anomaly_autoencoder") == [1]


def test_cli_reports_errors_without_publishing(repository: Path, capsys) -> None:
    code = adapt.main(
        [
            "--model",
            "anomaly_autoencoder",
            "--version",
            "7",
            "--to-schema",
            HISTORY_SCHEMA_ID,
            "--repository",
            str(repository),
        ]
    )
    assert code == 1 and "does not exist" in capsys.readouterr().err
    assert versions(repository / "anomaly_autoencoder") == [1]
