"""Going live and rolling back, as recorded in the repository (a private
Triton only where the repository must start)."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import numpy_helper
from triton_fixtures import (
    STAND_INS,
    copy_basic_repository,
    free_ports,
    write_linear_onnx,
)

from export import live
from export.errors import SchemaMismatchError
from export.repository import (
    config_input_width,
    publish_version,
    version_feature_schema,
    versions,
)
from features.schemas import BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID, width
from triton_local.server import LaunchOptions, start_triton

COMMITTED = Path(__file__).resolve().parents[1] / "model_repository"
MODEL = "risk_classifier"
MODELS = tuple(STAND_INS)


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """The committed classifier (versions 1 and 2, 2 live) and a version 3."""
    basic = copy_basic_repository(tmp_path / "basic")
    target = tmp_path / "repo"
    shutil.copytree(basic / MODEL, target / MODEL)
    shutil.copytree(target / MODEL / "2", target / MODEL / "3")
    return target


def lines(repo: Path) -> list[dict]:
    return [json.loads(x) for x in (repo / live.RELEASES_LOG).read_text().splitlines()]


def test_committed_configs_make_a_published_version_live_in_its_schema() -> None:
    for model in MODELS:
        model_dir = COMMITTED / model
        config = model_dir / "config.pbtxt"
        version = live.live_version(model_dir)
        assert version in versions(model_dir)
        schema = live.check_version(model_dir, version)
        assert live.config_feature_schema(config) == schema
        assert config_input_width(config) == width(schema)


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


def test_version_trained_on_an_unknown_schema_is_refused_and_logged(
    repo: Path,
) -> None:
    card = repo / MODEL / "3" / "model_card.json"
    content = json.loads(card.read_text())
    content["feature_schema"] = "txn-basic-v9"
    card.write_text(json.dumps(content))
    before = (repo / MODEL / "config.pbtxt").read_text()

    with pytest.raises(SchemaMismatchError, match="'txn-basic-v9', which is not a"):
        live.go_live(repo, MODEL, 3, triton=None, echo=lambda _: None)

    assert (repo / MODEL / "config.pbtxt").read_text() == before
    logged = lines(repo)[-1]
    assert (logged["outcome"], logged["to_schema"]) == ("failed", "txn-basic-v9")


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
    assert shown[MODEL] == {
        "live_version": 2,
        "feature_schema": BASIC_SCHEMA_ID,
        "on_disk": [1, 2, 3],
        "version_schemas": {v: BASIC_SCHEMA_ID for v in ("1", "2", "3")},
        "rollback_to": 1,
    }
    code = live.main(
        ["--repository", str(repo), "--triton-url", "none", "live"]
        + ["--model", MODEL, "--version", "9"]
    )
    assert code == 1
    assert "refused" in capsys.readouterr().err


# -- versions on another feature schema ---------------------------------------


class FakeTriton:
    """Records what a release asks of Triton; ``fail`` makes loads fail."""

    def __init__(self, fail: set[str] | None = None) -> None:
        self.fail = fail or set()
        self.loads: list[str] = []
        self.unloads: list[str] = []

    def load(self, model: str) -> bool:
        self.loads.append(model)
        return True

    def unload(self, model: str) -> bool:
        self.unloads.append(model)
        return True

    def wait_live(self, model: str, version: int, timeout_s: float) -> None:
        if model in self.fail:
            raise live.ReleaseError(f"Triton failed to load version {version}: boom")


def publish_stand_in(repo: Path, model: str, schema: str, *, card: bool = True) -> int:
    """A linear stand-in for ``schema`` as the model's next version."""
    output, seed = STAND_INS[model]
    staged = write_linear_onnx(
        repo / f"staged-{model}.onnx", output, seed + 10, width=width(schema)
    )
    files = {"model.onnx": staged.read_bytes()}
    if card:
        files["model_card.json"] = json.dumps({"feature_schema": schema}).encode()
    return int(publish_version(repo / model, lambda _: files).name)


@pytest.fixture
def full_repo(tmp_path: Path) -> Path:
    """Both committed models (version 2 live, txn-basic-v1) and the ensemble."""
    return copy_basic_repository(tmp_path / "full")


def config(repo: Path, model: str) -> str:
    return (repo / model / "config.pbtxt").read_text()


def input_dims(text: str) -> int:
    match = re.search(r"input \[\s*\{[^}]*dims: \[ (\d+) \]", text)
    assert match is not None, text
    return int(match.group(1))


def test_history_version_is_published_next_to_basic_ones(full_repo: Path) -> None:
    before = config(full_repo, MODEL)
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)

    assert version == 3
    assert config(full_repo, MODEL) == before
    model_dir = full_repo / MODEL
    assert [version_feature_schema(model_dir, v) for v in (1, 2, 3)] == [
        BASIC_SCHEMA_ID,
        BASIC_SCHEMA_ID,
        HISTORY_SCHEMA_ID,
    ]
    shown = live.status(full_repo)[MODEL]
    assert shown["feature_schema"] == BASIC_SCHEMA_ID
    assert shown["version_schemas"]["3"] == HISTORY_SCHEMA_ID


def test_version_without_a_card_speaks_the_configs_schema(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, BASIC_SCHEMA_ID, card=False)
    assert version_feature_schema(full_repo / MODEL, version) == BASIC_SCHEMA_ID
    assert live.check_version(full_repo / MODEL, version) == BASIC_SCHEMA_ID


def test_live_switches_dims_and_schema_in_one_config_write(
    full_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)
    writes: list[tuple[Path, str]] = []
    write = live._write_atomically

    def recording(path: Path, payload: bytes) -> None:
        writes.append((path, payload.decode()))
        write(path, payload)

    monkeypatch.setattr(live, "_write_atomically", recording)
    printed: list[str] = []
    triton = FakeTriton()
    entry = live.go_live(
        full_repo, MODEL, version, triton=triton, who="ana", echo=printed.append
    )

    model_writes = [text for path, text in writes if path.parent.name == MODEL]
    assert len(model_writes) == 1
    (written,) = model_writes
    assert written == config(full_repo, MODEL)
    assert "version_policy: { specific: { versions: [ 3 ] } }" in written
    assert input_dims(written) == 43
    assert f'string_value: "{HISTORY_SCHEMA_ID}"' in written
    assert BASIC_SCHEMA_ID not in written
    assert live.config_feature_schema(full_repo / MODEL / "config.pbtxt") == (
        HISTORY_SCHEMA_ID
    )
    assert live.live_version(full_repo / MODEL) == 3

    assert (entry.outcome, entry.from_schema, entry.to_schema) == (
        "ok",
        BASIC_SCHEMA_ID,
        HISTORY_SCHEMA_ID,
    )
    assert "feature schema txn-basic-v1 -> txn-history-v1 (26 -> 43" in entry.detail
    logged = lines(full_repo)[-1]
    assert (logged["from_schema"], logged["to_schema"]) == (
        BASIC_SCHEMA_ID,
        HISTORY_SCHEMA_ID,
    )
    assert any("switched the model's input to 43 features" in p for p in printed)
    # The members now disagree: the ensemble is parked, unloaded, said down.
    assert triton.loads == [MODEL]
    assert triton.unloads == [live.ENSEMBLE]
    assert not (full_repo / live.ENSEMBLE).exists()
    assert input_dims((full_repo / live.PARKED).read_text()) == 26
    assert any("risk_ensemble is unavailable until" in p for p in printed)
    assert "risk_ensemble unavailable until its members agree" in entry.detail


def test_rollback_switches_the_schema_back(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)
    before = config(full_repo, MODEL)
    live.go_live(full_repo, MODEL, version, triton=None, echo=lambda _: None)

    back = live.rollback(full_repo, MODEL, triton=None, echo=lambda _: None)

    assert (back.to_version, back.from_schema, back.to_schema) == (
        2,
        HISTORY_SCHEMA_ID,
        BASIC_SCHEMA_ID,
    )
    assert config(full_repo, MODEL) == before
    assert live.status(full_repo)[MODEL]["rollback_to"] == 1


def test_failed_load_puts_the_old_config_and_schema_back(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)
    before = config(full_repo, MODEL)
    triton = FakeTriton(fail={MODEL})

    with pytest.raises(live.ReleaseError, match="boom"):
        live.go_live(full_repo, MODEL, version, triton=triton, echo=lambda _: None)

    assert config(full_repo, MODEL) == before
    # Asked to load the new config, then the old one again.
    assert triton.loads[:2] == [MODEL, MODEL]
    logged = lines(full_repo)[-1]
    assert logged["outcome"] == "failed"
    assert "version 2 still live (txn-basic-v1)" in logged["detail"]
    assert (logged["from_schema"], logged["to_schema"]) == (
        BASIC_SCHEMA_ID,
        HISTORY_SCHEMA_ID,
    )


def test_card_and_onnx_width_that_disagree_are_refused(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, BASIC_SCHEMA_ID)
    card = full_repo / MODEL / str(version) / "model_card.json"
    card.write_text(json.dumps({"feature_schema": HISTORY_SCHEMA_ID}))
    before = config(full_repo, MODEL)

    with pytest.raises(SchemaMismatchError, match="takes 26 columns"):
        live.go_live(full_repo, MODEL, version, triton=None, echo=lambda _: None)

    assert config(full_repo, MODEL) == before
    assert lines(full_repo)[-1]["outcome"] == "failed"


def test_unreadable_onnx_is_refused_before_triton_is_asked(full_repo: Path) -> None:
    version = int(
        publish_version(
            full_repo / MODEL, lambda _: {"model.onnx": b"not an onnx model"}
        ).name
    )
    triton = FakeTriton()
    with pytest.raises(live.ReleaseError, match="cannot be read as ONNX"):
        live.go_live(full_repo, MODEL, version, triton=triton, echo=lambda _: None)
    assert triton.loads == []
    assert live.live_version(full_repo / MODEL) == 2


def publish_onnx(repo: Path, model: str, graph: onnx.ModelProto) -> int:
    staged = repo / "staged-odd.onnx"
    onnx.save(graph, str(staged))
    files = {"model.onnx": staged.read_bytes()}
    return int(publish_version(repo / model, lambda _: files).name)


def linear(repo: Path, output: str = "risk_probability") -> onnx.ModelProto:
    path = write_linear_onnx(repo / "staged-linear.onnx", output, seed=3)
    return onnx.load(str(path))


def nan_weights(repo: Path) -> onnx.ModelProto:
    """Passes onnx.checker, scores NaN for every row."""
    graph = linear(repo)
    weights = graph.graph.initializer[0]
    nan = np.full(numpy_helper.to_array(weights).shape, np.nan, dtype=np.float32)
    weights.CopyFrom(numpy_helper.from_array(nan, weights.name))
    onnx.checker.check_model(graph)
    return graph


def no_sigmoid(repo: Path) -> onnx.ModelProto:
    """The logit, not a probability: outside [0, 1] on real rows."""
    graph = linear(repo)
    del graph.graph.node[-1]
    graph.graph.node[-1].output[0] = "risk_probability"
    graph.graph.output[0].name = "risk_probability"
    onnx.checker.check_model(graph)
    return graph


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        (nan_weights, "not finite"),
        (no_sigmoid, "outside \\[0, 1\\]"),
        (lambda repo: linear(repo, output="other_output"), "no output 'risk_prob"),
    ],
    ids=["nan", "logit", "wrong-output"],
)
def test_version_that_cannot_score_is_refused_before_triton_is_asked(
    full_repo: Path, broken, message: str
) -> None:
    version = publish_onnx(full_repo, MODEL, broken(full_repo))
    before = config(full_repo, MODEL)
    triton = FakeTriton()
    printed: list[str] = []

    with pytest.raises(live.ReleaseError, match=message):
        live.go_live(full_repo, MODEL, version, triton=triton, echo=printed.append)

    assert triton.loads == []
    assert config(full_repo, MODEL) == before
    logged = lines(full_repo)[-1]
    assert (logged["to_version"], logged["outcome"]) == (version, "failed")
    assert printed == [(full_repo / live.RELEASES_LOG).read_text().splitlines()[-1]]


def test_refused_load_prints_no_schema_or_ensemble_note(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)
    printed: list[str] = []

    with pytest.raises(live.ReleaseError, match="boom"):
        live.go_live(
            full_repo,
            MODEL,
            version,
            triton=FakeTriton(fail={MODEL}),
            echo=printed.append,
        )

    assert len(printed) == 1
    assert json.loads(printed[0])["outcome"] == "failed"


def test_refused_rollback_is_logged(full_repo: Path, capsys) -> None:
    model_dir = full_repo / MODEL
    shutil.rmtree(model_dir / "1")
    code = live.main(
        ["--repository", str(full_repo), "--triton-url", "none", "--who", "ana"]
        + ["rollback", "--model", MODEL]
    )

    assert code == 1
    assert "no earlier version to roll back to" in capsys.readouterr().err
    logged = lines(full_repo)
    assert len(logged) == 1
    assert (logged[0]["action"], logged[0]["outcome"], logged[0]["who"]) == (
        "rollback",
        "refused",
        "ana",
    )
    assert (logged[0]["from_version"], logged[0]["to_version"]) == (2, None)
    # A refused attempt is no step of the history a rollback replays.
    assert live.previous_version(full_repo, MODEL) is None


def test_ensemble_follows_its_members_once_they_agree(full_repo: Path) -> None:
    new = {m: publish_stand_in(full_repo, m, HISTORY_SCHEMA_ID) for m in MODELS}
    triton = FakeTriton()
    printed: list[str] = []
    ensemble_before = config(full_repo, live.ENSEMBLE)

    live.go_live(
        full_repo, MODELS[0], new[MODELS[0]], triton=triton, echo=printed.append
    )
    assert (full_repo / live.PARKED).read_text() == ensemble_before
    assert live.ENSEMBLE not in triton.loads

    entry = live.go_live(
        full_repo, MODELS[1], new[MODELS[1]], triton=triton, echo=printed.append
    )
    ensemble = config(full_repo, live.ENSEMBLE)
    assert input_dims(ensemble) == 43
    assert f'string_value: "{HISTORY_SCHEMA_ID}"' in ensemble
    assert triton.loads[-1] == live.ENSEMBLE
    assert "risk_ensemble speaks txn-history-v1" in entry.detail
    assert not (full_repo / live.PARKED).exists()
    assert live.status(full_repo)[live.ENSEMBLE] == {
        "feature_schema": HISTORY_SCHEMA_ID,
        "members": {m: HISTORY_SCHEMA_ID for m in MODELS},
        "members_agree": True,
        "parked": False,
    }

    # One rolled back: parked, in the schema it had, until they agree again.
    live.rollback(full_repo, MODELS[0], triton=triton, echo=printed.append)
    assert input_dims((full_repo / live.PARKED).read_text()) == 43
    shown = live.status(full_repo)[live.ENSEMBLE]
    assert (shown["members_agree"], shown["parked"]) == (False, True)
    live.rollback(full_repo, MODELS[1], triton=triton, echo=printed.append)
    assert config(full_repo, live.ENSEMBLE) == ensemble_before
    assert triton.loads[-1] == live.ENSEMBLE
    note = Path(live.ENSEMBLE, "1", "README.md")
    assert (full_repo / note).read_bytes() == (COMMITTED / note).read_bytes()


def test_interrupted_park_is_finished_by_the_next_release(full_repo: Path) -> None:
    version = publish_stand_in(full_repo, MODEL, HISTORY_SCHEMA_ID)
    ensemble = full_repo / live.ENSEMBLE
    # As after a crash between moving the config aside and removing the rest.
    (ensemble / "config.pbtxt").rename(full_repo / live.PARKED)
    assert live.status(full_repo)[live.ENSEMBLE]["parked"] is True

    live.go_live(full_repo, MODEL, version, triton=None, echo=lambda _: None)

    assert not ensemble.exists()
    assert live.status(full_repo)[live.ENSEMBLE]["members_agree"] is False


@pytest.mark.integration
def test_rollback_to_another_schema_keeps_the_repository_startable(
    full_repo: Path, tmp_path: Path
) -> None:
    history = {m: publish_stand_in(full_repo, m, HISTORY_SCHEMA_ID) for m in MODELS}
    for model in MODELS:
        live.go_live(full_repo, model, history[model], triton=None, echo=print)
    printed: list[str] = []

    live.rollback(full_repo, MODEL, triton=None, echo=printed.append)

    assert not (full_repo / live.ENSEMBLE).exists()
    assert live.status(full_repo)[live.ENSEMBLE] == {
        "feature_schema": HISTORY_SCHEMA_ID,
        "members": {MODELS[0]: HISTORY_SCHEMA_ID, MODEL: BASIC_SCHEMA_ID},
        "members_agree": False,
        "parked": True,
    }
    assert any(f"parked as {live.PARKED}" in p for p in printed)
    assert "(parked)" in lines(full_repo)[-1]["detail"]

    # A Triton started afresh on it (explicit mode loads every model at start).
    options = LaunchOptions(
        repository=full_repo,
        run_dir=tmp_path / "run",
        ports=free_ports(),
        control_mode="explicit",
        ready_timeout=60.0,
    )
    with start_triton(options) as handle:
        control = live.Triton(handle.http_url, timeout_s=30.0)
        assert all(handle.model_ready(m) for m in MODELS)
        assert control.states(live.ENSEMBLE) == {}

        entry = live.go_live(
            full_repo, MODEL, history[MODEL], triton=control, timeout_s=30.0
        )
        assert f"speaks {HISTORY_SCHEMA_ID} (back from {live.PARKED})" in entry.detail
        assert not (full_repo / live.PARKED).exists()
        assert handle.model_ready(live.ENSEMBLE)

        back = live.rollback(full_repo, MODEL, triton=control, timeout_s=30.0)
        assert "(parked)" in back.detail
        assert not handle.model_ready(live.ENSEMBLE)
        assert all(handle.model_ready(m) for m in MODELS)

    # And in poll mode, as `make up` and docker compose start it.
    poll = LaunchOptions(
        repository=full_repo,
        run_dir=tmp_path / "run-poll",
        ports=free_ports(),
        control_mode="poll",
        ready_timeout=60.0,
    )
    with start_triton(poll) as handle:
        assert all(handle.model_ready(m) for m in MODELS)


def test_evaluate_release_helpers_read_the_live_version_and_schema() -> None:
    for model in MODELS:
        model_dir = COMMITTED / model
        version = live.live_version(model_dir)
        assert version is not None
        schema = live.config_feature_schema(model_dir / "config.pbtxt")
        assert live.version_feature_schema(model_dir, version) == schema
        assert live.version_feature_schema(model_dir, 1) == BASIC_SCHEMA_ID
