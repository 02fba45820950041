"""Export to ONNX, the contract and parity checks, and versioned publishing."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

import features
from export import live, repository
from export.__main__ import main as export_main
from export.contract import AUTOENCODER, CLASSIFIER, ModelContract
from export.errors import (
    ContractError,
    ParityError,
    PublishError,
    RepublishError,
    SchemaMismatchError,
)
from export.release import export_classifier, release, verify
from features.schemas import SCHEMAS, width
from training import run as layout
from training import synthetic
from training.__main__ import main as train_main
from training.run import RunDir

pytestmark = [
    pytest.mark.export,
    pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning"),
]

COMMITTED_REPOSITORY = Path(__file__).resolve().parents[1] / "model_repository"
MODELS = (AUTOENCODER.name, CLASSIFIER.name)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("export")
    data = synthetic.write_csv(synthetic.generate(2500, seed=9), root / "syn.csv.gz")
    out = root / "run"
    args = ["--data", str(data), "--out", str(out), "--seed", "1", "--epochs", "2"]
    assert train_main(args) == 0
    return out


@pytest.fixture
def model_repository(tmp_path: Path) -> Path:
    repo = tmp_path / "model_repository"
    for name in MODELS:
        (repo / name).mkdir(parents=True)
        shutil.copy(COMMITTED_REPOSITORY / name / "config.pbtxt", repo / name)
    return repo


@pytest.fixture(scope="module")
def sample(run_dir: Path) -> np.ndarray:
    return np.load(run_dir / layout.PARITY_FEATURES)


@pytest.fixture(scope="module")
def schema(run_dir: Path) -> str:
    """The feature schema the run was trained on (training's current one)."""
    return str(RunDir(run_dir).manifest()["feature_schema"])


def other_schema(schema: str) -> str:
    return next(s for s in SCHEMAS if s != schema)


def with_manifest(run_dir: Path, target: Path, **changes: object) -> Path:
    """A copy of the run whose manifest says something else."""
    shutil.copytree(run_dir, target)
    manifest = RunDir(target).manifest() | changes
    RunDir(target).write_manifest(manifest)
    return target


def _session(path: Path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def test_publish_writes_version_n_plus_1_and_never_overwrites(
    run_dir: Path, model_repository: Path, sample: np.ndarray, schema: str
) -> None:
    for name in MODELS:
        config = model_repository / name / "config.pbtxt"
        config.write_text(repository.schema_text(config.read_text(), schema))
    first = release(run_dir, model_repository, publish_models=True)
    v1 = {name: (model_repository / name / "1" / "model.onnx") for name in MODELS}
    before = {name: path.read_bytes() for name, path in v1.items()}
    second = release(
        run_dir, model_repository, publish_models=True, allow_republish=True
    )

    for name, contract in (
        (AUTOENCODER.name, AUTOENCODER),
        (CLASSIFIER.name, CLASSIFIER),
    ):
        model_dir = model_repository / name
        assert first[name]["published"] == str(model_dir / "1")
        assert second[name]["published"] == str(model_dir / "2")
        assert repository.versions(model_dir) == [1, 2]
        assert v1[name].read_bytes() == before[name]
        assert not [p for p in model_dir.iterdir() if p.name.startswith(".")]

        card = json.loads((model_dir / "2" / "model_card.json").read_text())
        assert card["version"] == 2
        assert card["feature_schema"] == schema
        assert card["feature_names"] == list(SCHEMAS[schema])
        assert f"[batch, {width(schema)}]" in card["interface"]["input"]
        assert "going_live_switches_schema" not in first[name]
        assert card["training"]["rows"] == 2500
        assert card["training"]["seed"] == 1
        assert "pr_auc" in card["validation"]["metrics"]
        assert (
            (model_dir / "2" / "model_card.md")
            .read_text()
            .startswith(f"# {name} version 2")
        )

        session = _session(model_dir / "2" / "model.onnx")
        assert [i.name for i in session.get_inputs()] == [contract.input_name]
        assert session.get_inputs()[0].shape[1] == width(schema)
        assert [o.name for o in session.get_outputs()] == [contract.output_name]
        for size in (1, 7, 256):
            rows = np.resize(sample, (size, width(schema)))
            (out,) = session.run(None, {contract.input_name: rows})
            assert out.shape == (size, 1) and out.dtype == np.float32
            assert out.min() >= 0.0 and out.max() <= 1.0
        assert max(first[name]["parity_max_abs_diff"].values()) <= 1e-5


def test_version_on_another_schema_than_the_config_is_published_and_noted(
    run_dir: Path,
    model_repository: Path,
    schema: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Publishing writes only the version directory: the config, and so what
    Triton serves, switches schema when the version goes live."""
    live_schema = other_schema(schema)
    configs = {}
    for name in MODELS:
        config = model_repository / name / "config.pbtxt"
        config.write_text(repository.schema_text(config.read_text(), live_schema))
        configs[name] = config.read_text()

    summary = release(run_dir, model_repository, publish_models=True)

    err = capsys.readouterr().err
    for name in MODELS:
        model_dir = model_repository / name
        assert (model_dir / "config.pbtxt").read_text() == configs[name]
        assert repository.versions(model_dir) == [1]
        assert repository.version_feature_schema(model_dir, 1) == schema
        assert live.check_version(model_dir, 1) == schema
        assert summary[name]["going_live_switches_schema"] == (
            f"{live_schema} -> {schema}"
        )
        assert f"python -m export.live live --model {name} --version 1" in err
    assert "switches the model's input schema" in err


def test_run_on_an_unknown_schema_is_refused_before_anything_is_written(
    run_dir: Path, model_repository: Path, tmp_path: Path
) -> None:
    odd = with_manifest(run_dir, tmp_path / "odd", feature_schema="txn-basic-v9")
    with pytest.raises(SchemaMismatchError, match="'txn-basic-v9', which is not a"):
        release(odd, model_repository, publish_models=True)
    for name in MODELS:
        assert repository.versions(model_repository / name) == []


def test_run_whose_feature_names_differ_from_its_schema_is_refused(
    run_dir: Path, model_repository: Path, tmp_path: Path, schema: str
) -> None:
    names = list(SCHEMAS[schema])
    names[3] = "renamed"
    odd = with_manifest(run_dir, tmp_path / "odd", feature_names=names)
    with pytest.raises(SchemaMismatchError, match="first difference at column 3"):
        release(odd, model_repository, publish_models=True)


def test_missing_config_is_written_from_the_template(
    run_dir: Path, tmp_path: Path, schema: str
) -> None:
    repo = tmp_path / "fresh"
    release(run_dir, repo, publish_models=True)
    for name in MODELS:
        written = (repo / name / "config.pbtxt").read_text()
        committed = (COMMITTED_REPOSITORY / name / "config.pbtxt").read_text()
        # The same config, on the run's schema, with its first version live.
        assert written == repository.schema_text(live.policy_text(committed, 1), schema)
        assert repository.versions(repo / name) == [1]


def test_failed_publish_leaves_no_version_and_no_staging(tmp_path: Path) -> None:
    model_dir = tmp_path / AUTOENCODER.name
    repository.ensure_config(model_dir, AUTOENCODER, features.SCHEMA_ID)
    (model_dir / "3").mkdir()

    def no_model(version: int) -> dict[str, bytes]:
        return {"model_card.md": b"card"}

    with pytest.raises(PublishError, match="needs model.onnx"):
        repository.publish_version(model_dir, no_model)

    def bad_name(version: int) -> dict[str, bytes]:
        return {"model.onnx": b"x", "../escape": b"x"}

    with pytest.raises(PublishError, match="bad file name"):
        repository.publish_version(model_dir, bad_name)
    assert sorted(p.name for p in model_dir.iterdir()) == ["3", "config.pbtxt"]

    target = repository.publish_version(model_dir, lambda v: {"model.onnx": b"x"})
    assert target == model_dir / "4"


def test_publish_needs_a_config(tmp_path: Path) -> None:
    (tmp_path / "m").mkdir()
    with pytest.raises(PublishError, match="no config.pbtxt"):
        repository.publish_version(tmp_path / "m", lambda v: {"model.onnx": b"x"})


def test_fixed_batch_export_is_refused(
    run_dir: Path, sample: np.ndarray, schema: str
) -> None:
    import torch

    from export.torch_onnx import export_torch
    from training.autoencoder import load_scorer

    scorer = load_scorer(run_dir / layout.AUTOENCODER)
    contract = AUTOENCODER.for_schema(schema)
    fixed = export_torch(scorer, sample, contract, dynamic_batch=False)
    assert fixed.graph.input[0].type.tensor_type.shape.dim[0].dim_value == 2

    def reference(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scorer(torch.from_numpy(rows)).numpy()

    with pytest.raises(ContractError, match="fixed batch dimension"):
        verify(fixed, contract, reference, sample)


def _reshapes_to_a_fixed_batch(contract: ModelContract) -> onnx.ModelProto:
    """Declares a symbolic batch but reshapes to a batch of four inside."""
    from onnx import TensorProto, helper

    columns = contract.num_features
    graph = helper.make_graph(
        [
            helper.make_node("ReduceMean", ["features", "axes"], ["mean"], keepdims=1),
            helper.make_node("Reshape", ["mean", "shape"], ["anomaly_score"]),
        ],
        "fixed_inside",
        [
            helper.make_tensor_value_info(
                "features", TensorProto.FLOAT, ["batch", columns]
            )
        ],
        [
            helper.make_tensor_value_info(
                "anomaly_score", TensorProto.FLOAT, ["batch", 1]
            )
        ],
        [
            helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
            helper.make_tensor("shape", TensorProto.INT64, [2], [4, 1]),
        ],
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])


def test_fixed_batch_inside_the_graph_is_caught_by_running_batches(
    sample: np.ndarray, schema: str
) -> None:
    from export.parity import check_parity

    contract = AUTOENCODER.for_schema(schema)
    with pytest.raises(ParityError, match="batch 1 failed to run"):
        check_parity(
            _reshapes_to_a_fixed_batch(contract), contract, lambda r: r[:, :1], sample
        )


@pytest.mark.filterwarnings(
    "ignore:Exporting a model while it is in training mode:UserWarning"
)
def test_torch_exporter_writes_inference_behaviour_even_in_training_mode(
    sample: np.ndarray, schema: str
) -> None:
    """torch 2.13's dynamo exporter folds batch norm with its running stats and
    ONNX Runtime's inference Dropout is the identity, so a module left in
    training mode still exports its eval behaviour; parity is what proves it.
    If a torch upgrade changes this, this test and the parity check say so."""
    import torch

    from export.torch_onnx import export_torch

    torch.manual_seed(0)
    contract = AUTOENCODER.for_schema(schema)
    module = torch.nn.Sequential(
        torch.nn.Linear(contract.num_features, 8),
        torch.nn.BatchNorm1d(8),
        torch.nn.Dropout(0.5),
        torch.nn.Linear(8, 1),
        torch.nn.Sigmoid(),
    )
    module.train()
    with torch.no_grad():
        module(torch.from_numpy(sample) * 3.0)  # running stats != batch stats
    model = export_torch(module, sample, contract)

    def train_mode(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module.train()(torch.from_numpy(rows)).numpy()

    def eval_mode(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module.eval()(torch.from_numpy(rows)).numpy()

    from export.parity import check_parity

    assert max(verify(model, contract, eval_mode, sample).parity.values()) <= 1e-5
    # Batch norm cannot run one row in training mode, hence no batch of 1.
    with pytest.raises(ParityError, match="differ"):
        check_parity(model, contract, train_mode, sample, batch_sizes=(7, 256))


def test_keras_batch_norm_in_training_mode_fails_parity(
    run_dir: Path, sample: np.ndarray, tmp_path: Path, schema: str
) -> None:
    """The trained graph, whatever its shape, with each batch norm called with
    training=True (batch statistics instead of the learned ones), exported
    the normal way."""
    import keras

    from export.keras_onnx import export_savedmodel
    from training.classifier import load_classifier

    class BatchStatistics(keras.layers.Layer):
        def __init__(self, inner: keras.layers.Layer) -> None:
            super().__init__(name=f"{inner.name}_batch_statistics")
            self.inner = inner

        def call(self, x, mask=None):  # type: ignore[no-untyped-def]
            return self.inner(x, training=True)

    trained = load_classifier(run_dir / layout.CLASSIFIER_KERAS)
    contract = CLASSIFIER.for_schema(schema)
    rewired = keras.models.clone_model(
        trained,
        clone_function=lambda layer: (
            BatchStatistics(layer)
            if isinstance(layer, keras.layers.BatchNormalization)
            else layer
        ),
    )
    assert any(isinstance(layer, BatchStatistics) for layer in rewired.layers)
    rewired.export(tmp_path / "savedmodel", verbose=False)
    model = export_savedmodel(tmp_path / "savedmodel", contract)

    def reference(rows: np.ndarray) -> np.ndarray:
        return np.asarray(trained(rows, training=False))

    with pytest.raises(ParityError, match="differ"):
        verify(model, contract, reference, sample)


def test_export_path_needs_no_keras_sequential(
    run_dir: Path, sample: np.ndarray, monkeypatch: pytest.MonkeyPatch
) -> None:
    import keras

    from training.classifier import load_classifier

    assert not isinstance(
        load_classifier(run_dir / layout.CLASSIFIER_KERAS), keras.Sequential
    )

    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("the export path built a keras.Sequential")

    monkeypatch.setattr(keras.Sequential, "__init__", refuse)
    exported = export_classifier(RunDir(run_dir), sample)
    assert max(exported.parity.values()) <= 1e-5


def test_command_line_exports_without_publishing(
    run_dir: Path, model_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = export_main(["--run", str(run_dir), "--repository", str(model_repository)])
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert set(summary) == set(MODELS)
    assert all("published" not in s for s in summary.values())
    assert (run_dir / "onnx" / f"{AUTOENCODER.name}.onnx").is_file()
    for name in MODELS:
        assert repository.versions(model_repository / name) == []


def test_command_line_reports_a_refusal(
    run_dir: Path,
    model_repository: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    odd = with_manifest(run_dir, tmp_path / "odd", feature_schema="other-v9")
    code = export_main(
        ["--run", str(odd), "--repository", str(model_repository), "--publish"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert "refused:" in err and "'other-v9'" in err


def test_command_line_refuses_a_directory_that_is_not_a_run(
    model_repository: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "runs" / "20300101T000000Z"
    empty.mkdir(parents=True)
    code = export_main(
        ["--run", str(empty), "--repository", str(model_repository), "--publish"]
    )
    assert code == 1
    err = capsys.readouterr().err
    assert f"refused: {empty} is not a training run: no run.json" in err
    assert "Traceback" not in err


def test_republishing_a_run_is_refused_naming_the_version(
    run_dir: Path, model_repository: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release(run_dir, model_repository, publish_models=True)
    capsys.readouterr()
    args = ["--run", str(run_dir), "--repository", str(model_repository), "--publish"]

    with pytest.raises(RepublishError, match="already published as .* version 1"):
        release(run_dir, model_repository, publish_models=True)
    assert export_main(args) == 1
    assert "version 1; --allow-republish" in capsys.readouterr().err
    for name in MODELS:
        assert repository.versions(model_repository / name) == [1]

    assert export_main([*args, "--allow-republish"]) == 0
    for name in MODELS:
        assert repository.versions(model_repository / name) == [1, 2]


def test_another_run_on_the_same_data_is_not_a_republish(
    run_dir: Path, model_repository: Path, tmp_path: Path
) -> None:
    release(run_dir, model_repository, publish_models=True)
    manifest = RunDir(run_dir).manifest()
    later = with_manifest(
        run_dir, tmp_path / "later", created_at="2031-01-01T00:00:00Z"
    )
    assert RunDir(later).manifest()["data"] == manifest["data"]
    release(later, model_repository, publish_models=True)
    for name in MODELS:
        assert repository.versions(model_repository / name) == [1, 2]
