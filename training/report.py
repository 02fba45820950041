"""The evaluation report of a run: report.json, report.md and a PR plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sklearn.metrics import precision_recall_curve  # noqa: E402

from training.calibration import expected_calibration_error  # noqa: E402
from training.metrics import ranking_metrics  # noqa: E402
from training.policy import DEFAULT_POLICY, Policy, decision_shares  # noqa: E402
from training.run import PR_CURVE_PNG, REPORT_JSON, REPORT_MD  # noqa: E402

LEGIT_REVIEW_LIMIT = 0.05
MODEL_LABELS = {
    "anomaly_autoencoder": "Autoencoder (anomaly score)",
    "risk_classifier": "Classifier (risk probability)",
    "combined": "Combined 0.4 * anomaly + 0.6 * risk",
}


def evaluate(
    labels: np.ndarray,
    anomaly: np.ndarray,
    risk: np.ndarray,
    risk_uncalibrated: np.ndarray,
    policy: Policy = DEFAULT_POLICY,
) -> dict[str, Any]:
    combined = policy.combined(anomaly, risk)
    decisions = policy.decide(anomaly, risk)
    fraud = labels == 1
    legit_review = decision_shares(decisions[~fraud])["REVIEW"]
    return {
        "rows": int(len(labels)),
        "fraud_rows": int(fraud.sum()),
        "metrics": {
            "anomaly_autoencoder": ranking_metrics(labels, anomaly),
            "risk_classifier": ranking_metrics(labels, risk),
            "combined": ranking_metrics(labels, combined),
        },
        "risk_classifier_ece": {
            "uncalibrated": expected_calibration_error(risk_uncalibrated, labels),
            "calibrated": expected_calibration_error(risk, labels),
            "bins": 15,
        },
        "mean_risk_probability": float(risk.mean()),
        "fraud_rate": float(fraud.mean()),
        "policy": {
            "rule": policy.rule,
            "version": policy.version,
            "combined": policy.combined_label,
            "fraud": decision_shares(decisions[fraud]),
            "legitimate": decision_shares(decisions[~fraud]),
            "legit_review_limit": LEGIT_REVIEW_LIMIT,
            "legit_review_check": (
                "pass" if legit_review <= LEGIT_REVIEW_LIMIT else "fail"
            ),
        },
    }


def plot_precision_recall(
    labels: np.ndarray, scores: dict[str, np.ndarray], path: Path
) -> None:
    figure, axes = plt.subplots(figsize=(6.5, 5))
    for name, values in scores.items():
        precision, recall, _ = precision_recall_curve(labels, values)
        axes.plot(recall, precision, label=MODEL_LABELS.get(name, name))
    axes.axhline(labels.mean(), color="grey", linestyle=":", label="fraud rate")
    axes.set_xlabel("recall")
    axes.set_ylabel("precision")
    axes.set_xlim(0, 1)
    axes.set_ylim(0, 1)
    axes.set_title("Precision-recall on the validation split")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def _labels(report: dict[str, Any]) -> dict[str, str]:
    """Row labels; the combined score as the run's policy weighed it."""
    combined = report.get("validation", {}).get("policy", {}).get("combined")
    return MODEL_LABELS | ({"combined": combined} if combined else {})


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def render_markdown(report: dict[str, Any]) -> str:
    data, val = report["data"], report["validation"]
    lines = [
        f"# Training report: {report['run']}",
        "",
        f"- data: `{data['source']}` ({data['rows']} rows, "
        f"{data['start']} to {data['end']}, fraud {_pct(data['fraud_rate'])})",
        f"- feature schema: `{report['feature_schema']}`; seed {report['seed']}",
        f"- split by time: train {data['split']['train']}, calibration "
        f"{data['split']['calibration']}, validation {data['split']['validation']} "
        "rows",
        f"- validation: {val['rows']} rows, {val['fraud_rows']} fraud "
        f"({_pct(val['fraud_rate'])})",
        "",
        "## Ranking on validation",
        "",
        "| model | PR-AUC | ROC-AUC | recall at 1% FPR |",
        "| --- | --- | --- | --- |",
    ]
    labels = _labels(report)
    for name, m in val["metrics"].items():
        lines.append(
            f"| {labels[name]} | {m['pr_auc']:.4f} | {m['roc_auc']:.4f} "
            f"| {_pct(m['recall_at_1pct_fpr'])} |"
        )
    ece = val["risk_classifier_ece"]
    cal = report["calibration"]
    knots = cal["anomaly_knots"]
    lines += [
        "",
        f"![precision-recall]({PR_CURVE_PNG})",
        "",
        "## Calibration",
        "",
        f"- classifier: Platt scaling on the logit, p = sigmoid({cal['platt']['a']:.4f}"
        f" * logit + {cal['platt']['b']:.4f}), fitted on the calibration split",
        f"- expected calibration error ({ece['bins']} equal-width bins) on "
        f"validation: {ece['calibrated']:.4f} calibrated, "
        f"{ece['uncalibrated']:.4f} before calibration"
        + (
            " (class-weighted training)"
            if report.get("classifier", {"balanced_class_weights": True})[
                "balanced_class_weights"
            ]
            else ""
        ),
        f"- mean risk probability {val['mean_risk_probability']:.4f} against a "
        f"fraud rate of {val['fraud_rate']:.4f}",
        f"- autoencoder: reconstruction error "
        f"(`{report.get('robustness_method', {}).get('autoencoder_error', 'mse')}`) "
        "mapped through a monotone piecewise-linear curve; knots on legitimate "
        "calibration traffic:",
        "",
        "| legit error quantile | error | anomaly score |",
        "| --- | --- | --- |",
    ]
    for q, x, y in zip(knots["quantiles"], knots["x"], knots["y"], strict=True):
        where = "zero error" if q == 0 else "tail end" if q is None else f"{q:g}"
        lines.append(f"| {where} | {x:.5f} | {y:.2f} |")
    policy = val["policy"]
    lines += [
        "",
        "## Default decision policy on validation",
        "",
        f"Rule: {policy['rule']}.",
        "",
        "| traffic | APPROVE | FLAG | REVIEW |",
        "| --- | --- | --- | --- |",
    ]
    for who in ("fraud", "legitimate"):
        shares = " | ".join(_pct(policy[who][d]) for d in ("APPROVE", "FLAG", "REVIEW"))
        lines.append(f"| {who} | {shares} |")
    verdict = policy["legit_review_check"].upper()
    lines += [
        "",
        f"**{verdict}**: legitimate transactions sent to REVIEW "
        f"{_pct(policy['legitimate']['REVIEW'])} "
        f"(limit {_pct(policy['legit_review_limit'])}).",
        "",
    ]
    lines += _robustness_lines(report)
    return "\n".join(lines)


def _robustness_lines(report: dict[str, Any]) -> list[str]:
    lines: list[str] = []
    method = report.get("robustness_method")
    if method:
        lines += [
            "## Values never seen in training",
            "",
            f"- unseen-value augmentation: each training row's value of each "
            f"categorical field moved to OTHER with probability "
            f"{method['unseen_value_rate']:g} (fresh every epoch, both models)",
            f"- autoencoder reconstruction error: `{method['autoencoder_error']}`",
            "",
        ]
    probes = report.get("unseen_value_probes")
    if probes:
        lines += [
            "Legitimate validation rows, as they are and with a field moved to "
            "its OTHER bucket (or into a combination absent from the data), "
            "under the default policy:",
            "",
            "| legitimate rows | rows | sent to REVIEW | median anomaly | mean risk |",
            "| --- | --- | --- | --- | --- |",
        ]
        for name, probe in probes.items():
            lines.append(
                f"| {name} | {probe['rows']} | {_pct(probe['legit_review'])} "
                f"| {probe['anomaly_median']:.3f} | {probe['risk_mean']:.4f} |"
            )
        lines.append("")
    for extra in report.get("extra_evaluations", []):
        counts = extra["counts"]
        other = ", ".join(f"{f} {_pct(s)}" for f, s in extra["other_share"].items())
        lines += [
            f"## Extra evaluation: `{extra['source']}`",
            "",
            f"{extra['rows']} rows: {counts['fraud']} fraud, "
            f"{counts['legitimate']} legitimate, {counts['unlabelled']} unlabelled; "
            f"values in an OTHER bucket: {other}.",
            "",
            "| traffic | APPROVE | FLAG | REVIEW | median anomaly |",
            "| --- | --- | --- | --- | --- |",
        ]
        for who, shares in extra["policy"].items():
            cells = " | ".join(_pct(shares[d]) for d in ("APPROVE", "FLAG", "REVIEW"))
            lines.append(f"| {who} | {cells} | {extra['anomaly_median'][who]:.3f} |")
        if "metrics" in extra:
            lines += ["", "| model | PR-AUC | ROC-AUC | recall at 1% FPR |"]
            lines.append("| --- | --- | --- | --- |")
            for name, m in extra["metrics"].items():
                lines.append(
                    f"| {_labels(report)[name]} | {m['pr_auc']:.4f} | "
                    f"{m['roc_auc']:.4f} | {_pct(m['recall_at_1pct_fpr'])} |"
                )
        lines.append("")
    return lines


def write_report(report: dict[str, Any], directory: Path) -> None:
    (directory / REPORT_JSON).write_text(json.dumps(report, indent=2) + "\n")
    (directory / REPORT_MD).write_text(render_markdown(report))
