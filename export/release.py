"""From a training run to checked ONNX models and, optionally, new versions."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import onnx

from export import model_card
from export.contract import AUTOENCODER, CLASSIFIER, ModelContract
from export.errors import ExportError, RepublishError, SchemaMismatchError
from export.parity import Reference, check_contract, check_parity
from export.repository import (
    CONFIG,
    MODEL_FILE,
    config_feature_schema,
    ensure_config,
    publish_version,
    versions,
)
from features import schemas
from training import run as layout
from training.run import RunDir


@dataclass(frozen=True)
class Exported:
    contract: ModelContract
    model: onnx.ModelProto
    parity: dict[str, float]

    @property
    def opset(self) -> int:
        return next(o.version for o in self.model.opset_import if o.domain == "")


def verify(
    model: onnx.ModelProto,
    contract: ModelContract,
    reference: Reference,
    sample: np.ndarray,
) -> Exported:
    """Contract and parity checks; raises ExportError on any failure."""
    check_contract(model, contract)
    parity = check_parity(model, contract, reference, sample, atol=contract.parity_atol)
    return Exported(contract, model, parity)


def run_schema(manifest: dict[str, Any]) -> str:
    """The feature schema a run was trained on, checked against the registry."""
    schema = manifest.get("feature_schema")
    if schema not in schemas.SCHEMAS:
        raise SchemaMismatchError(
            f"run trained on feature schema {schema!r}, which is not a known "
            f"schema ({', '.join(schemas.SCHEMAS)})"
        )
    names = manifest.get("feature_names")
    expected = schemas.SCHEMAS[schema]
    if names is not None and tuple(names) != expected:
        pairs = enumerate(zip(names, expected, strict=False))
        where = next(
            (i for i, (got, want) in pairs if got != want),
            min(len(names), len(expected)),
        )
        raise SchemaMismatchError(
            f"run's feature_names ({len(names)}) are not those of {schema!r} "
            f"({len(expected)}); first difference at column {where}"
        )
    return str(schema)


def _contract(run: RunDir, base: ModelContract) -> ModelContract:
    return base.for_schema(run_schema(run.manifest()))


def export_autoencoder(
    run: RunDir, sample: np.ndarray, contract: ModelContract | None = None
) -> Exported:
    import torch

    from export.torch_onnx import export_torch
    from training.autoencoder import load_scorer

    contract = contract or _contract(run, AUTOENCODER)
    scorer = load_scorer(run / layout.AUTOENCODER).eval()

    def reference(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scorer(torch.from_numpy(rows)).numpy()

    model = export_torch(scorer, sample, contract)
    return verify(model, contract, reference, sample)


def export_classifier(
    run: RunDir, sample: np.ndarray, contract: ModelContract | None = None
) -> Exported:
    from export.keras_onnx import export_savedmodel
    from training.classifier import load_classifier

    contract = contract or _contract(run, CLASSIFIER)
    keras_model = load_classifier(run / layout.CLASSIFIER_KERAS)

    def reference(rows: np.ndarray) -> np.ndarray:
        return np.asarray(keras_model(rows, training=False))

    model = export_savedmodel(run / layout.CLASSIFIER_SAVEDMODEL, contract)
    return verify(model, contract, reference, sample)


EXPORTERS = {
    AUTOENCODER.name: export_autoencoder,
    CLASSIFIER.name: export_classifier,
}
BASE_CONTRACTS = {AUTOENCODER.name: AUTOENCODER, CLASSIFIER.name: CLASSIFIER}


def publish(exported: Exported, repository: Path, manifest: dict) -> Path:
    """Version N+1 of the model with its card.

    The version may speak another feature schema than the model's config (and
    so than the live version): only the version directory is written, and the
    config follows the version when it goes live (``python -m export.live``).
    """
    schema = run_schema(manifest)
    if exported.contract.feature_schema != schema:
        raise SchemaMismatchError(
            f"{exported.contract.name} was exported for "
            f"{exported.contract.feature_schema!r}, the run trained on {schema!r}"
        )
    model_dir = repository / exported.contract.name
    ensure_config(model_dir, exported.contract, schema)
    # The version number is only known under publish_version's lock; the card
    # names the version it was written for, so it is filled in there.
    payload = exported.model.SerializeToString()

    def files_for(version: int) -> dict[str, bytes]:
        content = model_card.card(
            exported.contract, version, manifest, exported.opset, exported.parity
        )
        return {
            MODEL_FILE: payload,
            "model_card.json": (json.dumps(content, indent=2) + "\n").encode(),
            "model_card.md": model_card.render(content).encode(),
        }

    return publish_version(model_dir, files_for)


def _published_from(manifest: dict[str, Any], model_dir: Path) -> int | None:
    """The version of the model published from this run, if any: its card
    names the run, when it was trained and the data's sha256."""
    run = (manifest["run"], manifest["created_at"], manifest["data"]["sha256"])
    for version in versions(model_dir) if model_dir.is_dir() else []:
        path = model_dir / str(version) / "model_card.json"
        try:
            training = json.loads(path.read_text()).get("training", {})
        except (OSError, json.JSONDecodeError, AttributeError):
            continue
        card = (
            training.get("run"),
            training.get("trained_at"),
            training.get("data_sha256"),
        )
        if card == run:
            return version
    return None


def check_not_published(
    manifest: dict[str, Any], repository: Path, models: tuple[str, ...]
) -> None:
    """Refuses a run already published as a version of one of ``models``."""
    for name in models:
        version = _published_from(manifest, repository / name)
        if version is not None:
            raise RepublishError(
                f"run {manifest['run']!r} (trained {manifest['created_at']}) is "
                f"already published as {name} version {version}; "
                "--allow-republish publishes it again"
            )


def release(
    run_path: Path,
    repository: Path,
    *,
    publish_models: bool,
    models: tuple[str, ...] = tuple(EXPORTERS),
    allow_republish: bool = False,
) -> dict[str, dict]:
    run = RunDir(run_path)
    try:
        manifest = run.manifest()
    except FileNotFoundError as exc:  # no run.json: not a run, or a failed one
        raise ExportError(str(exc)) from exc
    except json.JSONDecodeError as exc:
        raise ExportError(f"{run_path / layout.MANIFEST} is not JSON: {exc}") from exc
    schema = run_schema(manifest)
    if publish_models and not allow_republish:
        check_not_published(manifest, repository, models)
    sample = np.load(run / layout.PARITY_FEATURES)
    if sample.ndim != 2 or sample.shape[1] != schemas.width(schema):
        raise SchemaMismatchError(
            f"{run / layout.PARITY_FEATURES} has shape {sample.shape}; the run's "
            f"schema {schema!r} has {schemas.width(schema)} columns"
        )
    onnx_dir = run_path / "onnx"
    onnx_dir.mkdir(exist_ok=True)

    summary: dict[str, dict] = {}
    exported_models = []
    for name in models:
        contract = BASE_CONTRACTS[name].for_schema(schema)
        exported = EXPORTERS[name](run, sample, contract)
        onnx.save(exported.model, onnx_dir / f"{name}.onnx")
        print(f"{name}: contract and parity ok {exported.parity}", file=sys.stderr)
        exported_models.append(exported)
        summary[name] = {
            "feature_schema": schema,
            "parity_max_abs_diff": exported.parity,
            "opset": exported.opset,
        }

    # Publish only once every requested model passed its checks.
    if publish_models:
        for exported in exported_models:
            version_dir = publish(exported, repository, manifest)
            name = exported.contract.name
            summary[name]["published"] = str(version_dir)
            print(f"published {version_dir} ({schema})", file=sys.stderr)
            live_schema = config_feature_schema(version_dir.parent / CONFIG)
            if live_schema != schema:
                switch = f"{live_schema} -> {schema}"
                summary[name]["going_live_switches_schema"] = switch
                print(
                    f"NOTE: {name} version {version_dir.name} speaks {schema} "
                    f"({schemas.width(schema)} features); its config, and so "
                    f"what Triton serves, still speaks {live_schema}. Going live "
                    f"(python -m export.live live --model {name} --version "
                    f"{version_dir.name}) switches the model's input schema "
                    f"{switch}.",
                    file=sys.stderr,
                )
    return summary
