"""The model card written next to each published model.onnx."""

from __future__ import annotations

import json
from typing import Any

from export.contract import ModelContract
from features import schemas

ROBUST_DESCRIPTIONS = {
    "anomaly_autoencoder": (
        "PyTorch autoencoder ({width}-64-32-16-32-64-{width}) trained on legitimate "
        "transactions only, with unseen-value augmentation (each categorical "
        "field moved to its OTHER bucket with a small probability, afresh every "
        "epoch). Score: blockwise reconstruction error, the mean of one term per "
        "numeric feature (squared standardised error, capped at a 4-sigma miss) "
        "and one per categorical field (half the squared error of the one-hot "
        "block, at most 1), mapped into [0, 1] by a monotone piecewise-linear "
        "curve through quantiles of legitimate calibration traffic."
    ),
    "risk_classifier": (
        "Keras classifier (standardise, batch norm, 64-ReLU, dropout 0.3, "
        "32-ReLU, 16-ReLU, 1) trained with balanced class weights and "
        "unseen-value augmentation (each categorical field moved to its OTHER "
        "bucket with a small probability, label kept, afresh every epoch); "
        "Platt scaling on the logit, fitted on the calibration split, turns it "
        "into a calibrated fraud probability."
    ),
}
DESCRIPTIONS = {
    "anomaly_autoencoder": (
        "PyTorch autoencoder ({width}-64-32-16-32-64-{width}) trained on legitimate "
        "transactions only. Score: mean squared reconstruction error in "
        "standardised space, mapped into [0, 1] by a monotone piecewise-linear "
        "curve through quantiles of legitimate calibration traffic."
    ),
    "risk_classifier": (
        "Keras classifier (standardise, batch norm, 64-ReLU, dropout 0.3, "
        "32-ReLU, 16-ReLU, 1) trained with balanced class weights; Platt "
        "scaling on the logit, fitted on the calibration split, turns it into a "
        "calibrated fraud probability."
    ),
}


ENSEMBLE_DESCRIPTION = (
    "Keras classifier: standardise and batch norm, then {members} networks "
    "(64-ReLU, dropout 0.2, 32-ReLU, 16-ReLU, 1) trained together whose logits "
    "are averaged, with {weights}{augmentation}; the weights kept are those of "
    "the epoch with the {selection}. Platt scaling on the averaged logit, "
    "fitted on the calibration split, turns it into a calibrated fraud "
    "probability."
)


def card(
    contract: ModelContract,
    version: int,
    manifest: dict[str, Any],
    opset: int,
    parity: dict[str, float],
) -> dict[str, Any]:
    validation = manifest["validation"]
    calibration: dict[str, Any]
    if contract.name == "anomaly_autoencoder":
        calibration = {"anomaly_knots": manifest["calibration"]["anomaly_knots"]}
    else:
        calibration = {
            "platt": manifest["calibration"]["platt"],
            "ece": validation["risk_classifier_ece"],
        }
    data = manifest["data"]
    method: dict[str, Any] = manifest.get("robustness_method") or {}
    robust = bool(method) and (
        method["unseen_value_rate"] > 0
        or (
            contract.name == "anomaly_autoencoder"
            and method["autoencoder_error"] == "blockwise"
        )
    )
    descriptions = ROBUST_DESCRIPTIONS if robust else DESCRIPTIONS
    description = descriptions[contract.name].format(width=contract.num_features)
    ensemble = manifest.get("classifier")
    if contract.name == "risk_classifier" and ensemble:
        description = ENSEMBLE_DESCRIPTION.format(
            members=ensemble["members"],
            weights="balanced class weights"
            if ensemble["balanced_class_weights"]
            else "no class weights",
            selection=ensemble["epoch_selection"],
            augmentation=" and unseen-value augmentation (each categorical field "
            "moved to its OTHER bucket with a small probability, label kept, "
            "afresh every epoch)"
            if robust
            else "",
        )
    schema = contract.feature_schema
    return {
        "model": contract.name,
        "version": version,
        "description": description,
        "feature_schema": schema,
        "feature_names": list(schemas.feature_names(schema)),
        "interface": {
            "input": f"{contract.input_name} float32 [batch, {contract.num_features}]"
            f" (raw {schema} vector)",
            "output": f"{contract.output_name} float32 [batch, "
            f"{contract.output_width}] in [0, 1]",
            "onnx_opset": opset,
        },
        "training": {
            "run": manifest["run"],
            "trained_at": manifest["created_at"],
            "data_source": data["source"],
            "data_sha256": data["sha256"],
            "rows": data["rows"],
            "date_range": [data["start"], data["end"]],
            "fraud_rate": data["fraud_rate"],
            "split": data["split"],
            "seed": manifest["seed"],
            "epochs": manifest["epochs"][
                "autoencoder"
                if contract.name == "anomaly_autoencoder"
                else "classifier"
            ],
        },
        "calibration": calibration,
        "validation": {
            "rows": validation["rows"],
            "fraud_rows": validation["fraud_rows"],
            "metrics": validation["metrics"][contract.name],
            "combined_metrics": validation["metrics"]["combined"],
            "default_policy": validation["policy"],
        },
        "unseen_values": {
            "method": method or None,
            "legitimate_validation_probes": {
                name: probe["legit_review"]
                for name, probe in manifest.get("unseen_value_probes", {}).items()
            },
            "extra_evaluations": [
                {"source": e["source"], "counts": e["counts"], "policy": e["policy"]}
                for e in manifest.get("extra_evaluations", [])
            ],
        },
        "parity_max_abs_diff": parity,
    }


def render(content: dict[str, Any]) -> str:
    t, v = content["training"], content["validation"]
    m = v["metrics"]
    lines = [
        f"# {content['model']} version {content['version']}",
        "",
        content["description"],
        "",
        f"- feature schema: `{content['feature_schema']}`",
        *_feature_lines(content.get("feature_names")),
        f"- input: {content['interface']['input']}",
        f"- output: {content['interface']['output']}",
        f"- ONNX opset {content['interface']['onnx_opset']}",
        "",
        "## Training",
        "",
        f"- data: `{t['data_source']}` (sha256 `{t['data_sha256'][:16]}...`), "
        f"{t['rows']} rows from {t['date_range'][0]} to {t['date_range'][1]}, "
        f"fraud {100 * t['fraud_rate']:.2f}%",
        f"- split by time: train {t['split']['train']}, calibration "
        f"{t['split']['calibration']}, validation {t['split']['validation']}",
        f"- seed {t['seed']}, {t['epochs']} epochs, run `{t['run']}` "
        f"({t['trained_at']})",
        "",
        "## Calibration",
        "",
        "```json",
        json.dumps(content["calibration"], indent=2),
        "```",
        "",
        f"## Validation ({v['rows']} rows, {v['fraud_rows']} fraud)",
        "",
        f"- PR-AUC {m['pr_auc']:.4f}, ROC-AUC {m['roc_auc']:.4f}, recall at 1% "
        f"FPR {100 * m['recall_at_1pct_fpr']:.2f}%",
        f"- default policy: {v['default_policy']['rule']}",
        f"- legitimate: {_shares(v['default_policy']['legitimate'])}",
        f"- fraud: {_shares(v['default_policy']['fraud'])}",
        "",
        *_unseen_lines(content["unseen_values"]),
        "## ONNX parity (max |ONNX Runtime - framework| per batch size)",
        "",
        ", ".join(
            f"batch {b}: {d:.2e}" for b, d in content["parity_max_abs_diff"].items()
        ),
        "",
    ]
    return "\n".join(lines)


def _feature_lines(names: list[str] | None) -> list[str]:
    if not names:
        return []
    return [f"- {len(names)} features: " + ", ".join(f"`{n}`" for n in names)]


def _shares(shares: dict[str, float]) -> str:
    return ", ".join(f"{d} {100 * s:.2f}%" for d, s in shares.items())


def _unseen_lines(unseen: dict[str, Any]) -> list[str]:
    if not unseen["legitimate_validation_probes"] and not unseen["extra_evaluations"]:
        return []
    lines = ["## Values never seen in training", ""]
    if unseen["method"]:
        lines.append(f"- method: `{json.dumps(unseen['method'])}`")
    for name, share in unseen["legitimate_validation_probes"].items():
        lines.append(f"- legitimate validation rows, {name}: REVIEW {100 * share:.2f}%")
    for extra in unseen["extra_evaluations"]:
        for who, shares in extra["policy"].items():
            lines.append(f"- `{extra['source']}`, {who}: {_shares(shares)}")
    return [*lines, ""]
