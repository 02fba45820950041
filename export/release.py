"""From a training run to checked ONNX models and, optionally, new versions."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

import features
from export import model_card
from export.contract import AUTOENCODER, CLASSIFIER, ModelContract
from export.errors import SchemaMismatchError
from export.parity import Reference, check_contract, check_parity
from export.repository import MODEL_FILE, ensure_config, publish_version
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


def export_autoencoder(run: RunDir, sample: np.ndarray) -> Exported:
    import torch

    from export.torch_onnx import export_torch
    from training.autoencoder import load_scorer

    scorer = load_scorer(run / layout.AUTOENCODER).eval()

    def reference(rows: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return scorer(torch.from_numpy(rows)).numpy()

    model = export_torch(scorer, sample, AUTOENCODER)
    return verify(model, AUTOENCODER, reference, sample)


def export_classifier(run: RunDir, sample: np.ndarray) -> Exported:
    from export.keras_onnx import export_savedmodel
    from training.classifier import load_classifier

    keras_model = load_classifier(run / layout.CLASSIFIER_KERAS)

    def reference(rows: np.ndarray) -> np.ndarray:
        return np.asarray(keras_model(rows, training=False))

    model = export_savedmodel(run / layout.CLASSIFIER_SAVEDMODEL, CLASSIFIER)
    return verify(model, CLASSIFIER, reference, sample)


EXPORTERS = {
    AUTOENCODER.name: export_autoencoder,
    CLASSIFIER.name: export_classifier,
}


def publish(exported: Exported, repository: Path, manifest: dict) -> Path:
    """Version N+1 of the model with its card; refuses a schema mismatch."""
    schema = manifest["feature_schema"]
    if schema != features.SCHEMA_ID:
        raise SchemaMismatchError(
            f"run trained on feature schema {schema!r}, this code speaks "
            f"{features.SCHEMA_ID!r}"
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


def release(
    run_path: Path,
    repository: Path,
    *,
    publish_models: bool,
    models: tuple[str, ...] = tuple(EXPORTERS),
) -> dict[str, dict]:
    run = RunDir(run_path)
    manifest = run.manifest()
    sample = np.load(run / layout.PARITY_FEATURES)
    onnx_dir = run_path / "onnx"
    onnx_dir.mkdir(exist_ok=True)

    summary: dict[str, dict] = {}
    exported_models = []
    for name in models:
        exported = EXPORTERS[name](run, sample)
        onnx.save(exported.model, onnx_dir / f"{name}.onnx")
        print(f"{name}: contract and parity ok {exported.parity}", file=sys.stderr)
        exported_models.append(exported)
        summary[name] = {
            "parity_max_abs_diff": exported.parity,
            "opset": exported.opset,
        }

    # Publish only once every requested model passed its checks.
    if publish_models:
        for exported in exported_models:
            version_dir = publish(exported, repository, manifest)
            summary[exported.contract.name]["published"] = str(version_dir)
            print(f"published {version_dir}", file=sys.stderr)
    return summary
