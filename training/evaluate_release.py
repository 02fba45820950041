"""Evaluate the published model versions on later data, against a fresh baseline.

``python -m training.evaluate_release --data LATER.csv --history EARLIER.csv``

1. reads HISTORY and DATA (HISTORY must end before DATA starts);
2. scores DATA with the live (highest) version of each published model, through
   the same ONNX graphs that Triton serves (onnxruntime on
   ``model_repository/<model>/<N>/model.onnx``);
3. fits a gradient-boosted tree baseline (scikit-learn, fixed seed) on HISTORY
   with the same features, using only labels known when DATA starts
   (``training.labels``);
4. reports, for the classifier, the autoencoder, their combined score (weights
   from the policy file) and the baseline: PR-AUC, ROC-AUC, recall at 1 % and
   5 % false-positive rate, expected calibration error and decision shares;
   writes ``metrics.json``, ``report.md`` and PNG plots, and prints the path of
   ``metrics.json`` last.

Decision shares: the combined row applies the whole policy (both scores); a
model's own row applies that model's thresholds alone; the baseline is held to
the classifier's thresholds.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from export.live import live_version
from export.repository import CONFIG, MODEL_FILE, config_feature_schema
from features.schemas import SCHEMAS, WIDEST_SCHEMA_ID, columns_for
from gateway.policy import Policy, load_policy
from training.calibration import expected_calibration_error
from training.data import Transactions, read_transactions
from training.history import encode, history_blocks
from training.labels import DEFAULT_LABEL_DELAY_DAYS, known_rows, labels_as_of
from training.metrics import ranking_metrics, recall_at_fpr

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER = "risk_classifier"
AUTOENCODER = "anomaly_autoencoder"
OUTPUTS = {CLASSIFIER: "risk_probability", AUTOENCODER: "anomaly_score"}
MODELS = (CLASSIFIER, AUTOENCODER, "combined", "baseline")
METRICS_JSON = "metrics.json"
REPORT_MD = "report.md"
PR_PNG = "precision_recall.png"
HIST_PNG = "score_histograms.png"
BASELINE_SEED = 0
WEIGHT_GRID = np.round(np.arange(0.0, 1.0001, 0.05), 2)
_CHUNK = 65_536


@dataclass(frozen=True)
class Published:
    name: str
    version: int
    path: Path
    card: dict[str, Any]
    feature_schema: str


def published(repository: Path, name: str, version: int | None = None) -> Published:
    """A published version of a model: by default the live one, the one Triton
    serves (as the release commands record it in ``config.pbtxt``); a given
    ``version`` evaluates a candidate before it goes live."""
    directory = repository / name
    config = directory / CONFIG
    if not config.is_file():
        raise FileNotFoundError(f"no published version of {name} in {repository}")
    which = "version"
    if version is None:
        which = "live version"
        version = live_version(directory)
    model = directory / str(version) / MODEL_FILE
    if version is None or not model.is_file():
        raise FileNotFoundError(f"{config}: {which} {version} has no {MODEL_FILE}")
    card_path = model.parent / "model_card.json"
    card = json.loads(card_path.read_text()) if card_path.is_file() else {}
    # The version's own schema (its model card); the config's for versions
    # published before cards recorded one.
    schema = card.get("feature_schema") or config_feature_schema(config)
    if schema not in SCHEMAS:
        raise ValueError(
            f"{model}: feature schema {schema!r} is not one this code encodes "
            f"({', '.join(SCHEMAS)})"
        )
    return Published(name, version, model, card, schema)


def onnx_scorer(model: Published) -> Callable[[np.ndarray], np.ndarray]:
    """Scores of rows in the widest schema; the model sees its own columns."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(
        str(model.path), options, providers=["CPUExecutionProvider"]
    )
    output = OUTPUTS[model.name]

    def score(widest: np.ndarray) -> np.ndarray:
        x = columns_for(widest, model.feature_schema)
        parts = [
            session.run([output], {"features": x[i : i + _CHUNK]})[0].ravel()
            for i in range(0, len(x), _CHUNK)
        ]
        return np.concatenate(parts).astype(np.float64)

    return score


def fit_baseline(
    x: np.ndarray, labels: np.ndarray, seed: int = BASELINE_SEED
) -> Callable[[np.ndarray], np.ndarray]:
    """Gradient-boosted trees on the raw feature vector; returns P(fraud)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    model = HistGradientBoostingClassifier(
        learning_rate=0.05,
        max_iter=300,
        max_leaf_nodes=31,
        min_samples_leaf=100,
        l2_regularization=1.0,
        early_stopping=True,
        validation_fraction=0.1,
        n_iter_no_change=20,
        random_state=seed,
    )
    model.fit(x, labels)
    return lambda rows: model.predict_proba(rows)[:, 1].astype(np.float64)


def baseline_as_of(
    history: Transactions,
    x_history: np.ndarray,
    as_of: float,
    delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    seed: int = BASELINE_SEED,
) -> tuple[Callable[[np.ndarray], np.ndarray], int]:
    """The baseline a fraud team could have fitted at ``as_of`` on the rows of
    ``history`` (features ``x_history``), and its row count."""
    rows = known_rows(history, as_of, delay_days)
    labels = labels_as_of(history, as_of, delay_days)[rows]
    if len(rows) == 0 or labels.min() == labels.max():
        raise ValueError("HISTORY has no fraud and legitimate labels known in time")
    return fit_baseline(x_history[rows], labels, seed), len(rows)


def decide(policy: Policy, anomaly: np.ndarray, risk: np.ndarray) -> np.ndarray:
    """The policy's decision for each pair of scores (vectorised)."""
    review = (anomaly > policy.review.anomaly_above) | (risk > policy.review.risk_above)
    flag = (anomaly > policy.flag.anomaly_above) | (risk > policy.flag.risk_above)
    return np.where(review, "REVIEW", np.where(flag, "FLAG", "APPROVE"))


def shares(decisions: np.ndarray, labels: np.ndarray) -> dict[str, dict[str, float]]:
    out = {}
    for who, mask in (("fraud", labels == 1), ("legitimate", labels == 0)):
        n = max(int(mask.sum()), 1)
        out[who] = {
            d: float(np.sum(decisions[mask] == d)) / n
            for d in ("APPROVE", "FLAG", "REVIEW")
        }
    return out


def model_metrics(
    labels: np.ndarray, scores: np.ndarray, decisions: np.ndarray
) -> dict[str, Any]:
    ranking = ranking_metrics(labels, scores)
    return {
        "pr_auc": ranking["pr_auc"],
        "roc_auc": ranking["roc_auc"],
        "recall_at_1pct_fpr": ranking["recall_at_1pct_fpr"],
        "recall_at_5pct_fpr": recall_at_fpr(labels, scores, 0.05),
        "ece": expected_calibration_error(scores, labels),
        "mean_score": float(scores.mean()),
        "policy": shares(decisions, labels),
    }


def best_weights(
    labels: np.ndarray, anomaly: np.ndarray, risk: np.ndarray
) -> dict[str, Any]:
    """The anomaly weight (risk = 1 - it) with the highest PR-AUC, on a grid."""
    from sklearn.metrics import average_precision_score

    grid = {
        float(w): float(average_precision_score(labels, w * anomaly + (1 - w) * risk))
        for w in WEIGHT_GRID
    }
    best = max(grid, key=lambda w: (grid[w], -w))
    return {
        "anomaly": best,
        "risk": round(1 - best, 2),
        "pr_auc_by_anomaly_weight": grid,
    }


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def _weights_window(history: Transactions, card: dict[str, Any]) -> tuple[float, str]:
    """Where in HISTORY to measure weights: rows the classifier was not fitted on."""
    starts = card.get("training", {}).get("split", {}).get("calibration_starts")
    if starts:
        at = datetime.fromisoformat(starts).timestamp()
        if history.epoch[0] < at < history.epoch[-1]:
            return at, (
                f"HISTORY from {starts}: the published classifier's calibration "
                "period (its weights never saw it; calibration is monotone)"
            )
    at = float(history.epoch[int(len(history) * 0.8)])
    return at, f"the latest 20 % of HISTORY (from {_iso(at)})"


def evaluate_release(
    data_path: Path,
    history_path: Path,
    out: Path,
    *,
    repository: Path = ROOT / "model_repository",
    policy_path: Path = ROOT / "config" / "policy.toml",
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
    seed: int = BASELINE_SEED,
    max_rows: int | None = None,
    versions: dict[str, int] | None = None,
) -> Path:
    """``versions``: model name -> version to score instead of the live one."""
    started = time.monotonic()
    history = read_transactions(history_path, max_rows)
    data = read_transactions(data_path, max_rows)
    if history.epoch[-1] > data.epoch[0]:
        raise ValueError(
            "HISTORY must end before DATA starts: HISTORY ends "
            f"{_iso(history.epoch[-1])}, DATA starts {_iso(data.epoch[0])}"
        )
    labelled = data.is_fraud >= 0
    labels = data.is_fraud[labelled].astype(np.int64)
    if len(labels) == 0 or labels.min() == labels.max():
        raise ValueError(f"{data_path} needs both fraud and legitimate labels")
    policy = load_policy(policy_path)
    chosen = versions or {}
    unknown = set(chosen) - {CLASSIFIER, AUTOENCODER}
    if unknown:
        raise ValueError(f"no model {sorted(unknown)}; use {CLASSIFIER}, {AUTOENCODER}")
    models = {
        name: published(repository, name, chosen.get(name))
        for name in (CLASSIFIER, AUTOENCODER)
    }

    # History runs through HISTORY and then DATA, with every label fed back
    # from the moment it was known, as the gateway's online history would.
    history_block, data_block = history_blocks(
        history, data, delay_days=label_delay_days
    )
    x_history = encode(history, WIDEST_SCHEMA_ID, history_block)
    x = encode(data, WIDEST_SCHEMA_ID, data_block)[labelled]
    risk = onnx_scorer(models[CLASSIFIER])(x)
    anomaly = onnx_scorer(models[AUTOENCODER])(x)
    combined = policy.anomaly_weight * anomaly + policy.risk_weight * risk

    # The baseline is fitted when DATA starts, on the labels known by then.
    as_of = float(data.epoch[0])
    baseline_schema = models[CLASSIFIER].feature_schema
    baseline, baseline_rows = baseline_as_of(
        history,
        columns_for(x_history, baseline_schema),
        as_of,
        label_delay_days,
        seed,
    )
    base = baseline(columns_for(x, baseline_schema))

    zeros = np.zeros_like(risk)
    scores = {CLASSIFIER: risk, AUTOENCODER: anomaly, "combined": combined}
    scores["baseline"] = base
    decisions = {
        CLASSIFIER: decide(policy, zeros, risk),
        AUTOENCODER: decide(policy, anomaly, zeros),
        "combined": decide(policy, anomaly, risk),
        "baseline": decide(policy, zeros, base),
    }
    results = {
        name: model_metrics(labels, scores[name], decisions[name]) for name in MODELS
    }

    proposal = None
    if results["combined"]["pr_auc"] < results[CLASSIFIER]["pr_auc"]:
        proposal = _propose_weights(
            history, x_history, as_of, label_delay_days, models, labels, anomaly, risk
        )

    out.mkdir(parents=True, exist_ok=True)
    metrics = {
        "created_at": _iso(time.time()),
        "data": _describe(data_path, data, labels),
        "history": _describe(
            history_path, history, history.is_fraud[history.is_fraud >= 0]
        ),
        "published": {
            name: {
                "version": m.version,
                "path": str(m.path.relative_to(repository)),
                "feature_schema": m.feature_schema,
            }
            for name, m in models.items()
        },
        "policy": {
            "path": _shown(policy_path),
            "version": policy.version,
            "weights": {"anomaly": policy.anomaly_weight, "risk": policy.risk_weight},
        },
        "baseline": {
            "model": "sklearn HistGradientBoostingClassifier",
            "seed": seed,
            "features": baseline_schema,
            "fitted_as_of": _iso(as_of),
            "label_delay_days": label_delay_days,
            "training_rows": baseline_rows,
        },
        "models": results,
        "weight_proposal": proposal,
        "seconds": round(time.monotonic() - started, 1),
    }
    metrics_path = out / METRICS_JSON
    metrics_path.write_text(json.dumps(metrics, indent=2) + "\n")
    _plots(labels, scores, out)
    (out / REPORT_MD).write_text(render_markdown(metrics))
    return metrics_path


def _shown(path: Path) -> str:
    """A path relative to the project where it lies inside it."""
    try:
        return str(path.resolve().relative_to(ROOT))
    except ValueError:
        return path.name


def _describe(path: Path, txns: Transactions, labels: np.ndarray) -> dict[str, Any]:
    return {
        "source": path.name,
        "rows": len(txns),
        "labelled_rows": int(len(labels)),
        "fraud_rate": float(np.mean(labels == 1)) if len(labels) else None,
        "start": _iso(txns.epoch[0]),
        "end": _iso(txns.epoch[-1]),
    }


def _propose_weights(
    history: Transactions,
    x_history: np.ndarray,
    as_of: float,
    delay_days: float,
    models: dict[str, Published],
    labels: np.ndarray,
    anomaly: np.ndarray,
    risk: np.ndarray,
) -> dict[str, Any]:
    """Weights measured on HISTORY (labels known at ``as_of``), then shown on DATA."""
    start, where = _weights_window(history, models[CLASSIFIER].card)
    rows = known_rows(history, as_of, delay_days)
    rows = rows[history.epoch[rows] >= start]
    known = labels_as_of(history, as_of, delay_days)[rows]
    if len(rows) == 0 or known.min() == known.max():
        return {"measured_on": where, "problem": "no labelled rows of both classes"}
    x = x_history[rows]
    measured = best_weights(
        known, onnx_scorer(models[AUTOENCODER])(x), onnx_scorer(models[CLASSIFIER])(x)
    )
    w = measured["anomaly"]
    on_data = ranking_metrics(labels, w * anomaly + (1 - w) * risk)
    return {
        "measured_on": where,
        "rows": int(len(rows)),
        "weights": {"anomaly": w, "risk": measured["risk"]},
        "history_pr_auc_by_anomaly_weight": measured["pr_auc_by_anomaly_weight"],
        "on_data": {
            **on_data,
            "recall_at_5pct_fpr": recall_at_fpr(
                labels, w * anomaly + (1 - w) * risk, 0.05
            ),
        },
    }


def _plots(labels: np.ndarray, scores: dict[str, np.ndarray], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from sklearn.metrics import precision_recall_curve

    figure, axes = plt.subplots(figsize=(6.5, 5))
    for name, values in scores.items():
        precision, recall, _ = precision_recall_curve(labels, values)
        axes.plot(recall, precision, label=name)
    axes.axhline(labels.mean(), color="grey", linestyle=":", label="fraud rate")
    axes.set(xlabel="recall", ylabel="precision", xlim=(0, 1), ylim=(0, 1))
    axes.set_title("Precision-recall on DATA")
    axes.legend(loc="upper right", fontsize="small")
    figure.tight_layout()
    figure.savefig(out / PR_PNG, dpi=110)
    plt.close(figure)

    figure, grid = plt.subplots(2, 2, figsize=(9, 6.5))
    bins = np.linspace(0, 1, 51)
    for axes, (name, values) in zip(grid.ravel(), scores.items(), strict=True):
        for who, mask in (("legitimate", labels == 0), ("fraud", labels == 1)):
            axes.hist(
                np.clip(values[mask], 0, 1),
                bins=bins,
                density=True,
                alpha=0.55,
                label=who,
            )
        axes.set_title(name, fontsize="medium")
        axes.set_yscale("log")
        axes.legend(fontsize="small")
    figure.suptitle("Score distributions on DATA (density, log scale)")
    figure.tight_layout()
    figure.savefig(out / HIST_PNG, dpi=110)
    plt.close(figure)


def _pct(value: float) -> str:
    return f"{100 * value:.2f}%"


def render_markdown(metrics: dict[str, Any]) -> str:
    data, history, base = metrics["data"], metrics["history"], metrics["baseline"]
    pub = metrics["published"]
    m = metrics["models"]
    weights = metrics["policy"]["weights"]
    lines = [
        "# Release evaluation",
        "",
        f"- DATA: `{data['source']}`, {data['rows']} rows, {data['start']} to "
        f"{data['end']}, fraud {_pct(data['fraud_rate'])} of "
        f"{data['labelled_rows']} labelled",
        f"- HISTORY: `{history['source']}`, {history['rows']} rows, "
        f"{history['start']} to {history['end']}",
        f"- published models: {CLASSIFIER} "
        f"v{pub[CLASSIFIER]['version']} (`{pub[CLASSIFIER]['feature_schema']}`), "
        f"{AUTOENCODER} v{pub[AUTOENCODER]['version']} "
        f"(`{pub[AUTOENCODER]['feature_schema']}`), scored with onnxruntime on the "
        "ONNX graphs Triton serves",
        "- history features: folded over HISTORY then DATA in time order, each "
        "label fed back from when it was known (report time, else "
        f"{base['label_delay_days']:g} days after the transaction)",
        f"- combined = {weights['anomaly']} * anomaly + {weights['risk']} * risk "
        f"(policy `{metrics['policy']['version']}`)",
        f"- baseline: {base['model']} (seed {base['seed']}) on the same "
        f"`{base['features']}` features, fitted on {base['training_rows']} HISTORY "
        f"rows whose label was known at {base['fitted_as_of']} (report time, else "
        f"{base['label_delay_days']:g} days after the transaction)",
        "",
        "| model | PR-AUC | ROC-AUC | recall @ 1% FPR | recall @ 5% FPR | ECE "
        "| mean score |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in MODELS:
        r = m[name]
        lines.append(
            f"| {name} | {r['pr_auc']:.4f} | {r['roc_auc']:.4f} | "
            f"{_pct(r['recall_at_1pct_fpr'])} | {_pct(r['recall_at_5pct_fpr'])} | "
            f"{r['ece']:.4f} | {r['mean_score']:.4f} |"
        )
    lines += [
        "",
        "ECE (15 equal-width bins) reads a score as a probability: it means "
        "something for the classifier and the baseline, not for the anomaly score "
        "or the combined score.",
        "",
        f"![precision-recall]({PR_PNG})",
        "",
        f"![score histograms]({HIST_PNG})",
        "",
        "## Decisions of the policy",
        "",
        "combined: the whole policy on both scores (what the gateway does); "
        "risk_classifier and baseline: the classifier's thresholds alone; "
        "anomaly_autoencoder: the anomaly thresholds alone.",
        "",
        "| model | traffic | APPROVE | FLAG | REVIEW |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name in MODELS:
        for who in ("fraud", "legitimate"):
            s = m[name]["policy"][who]
            lines.append(
                f"| {name} | {who} | {_pct(s['APPROVE'])} | {_pct(s['FLAG'])} "
                f"| {_pct(s['REVIEW'])} |"
            )
    lines += ["", "## Goals", ""]
    lines += [f"- {text}: **{'met' if ok else 'not met'}**" for text, ok in _goals(m)]
    proposal = metrics.get("weight_proposal")
    if proposal:
        lines += ["", "## Combined-score weights measured on HISTORY", ""]
        if "weights" in proposal:
            w, on = proposal["weights"], proposal["on_data"]
            lines += [
                f"Measured on {proposal['measured_on']}, {proposal['rows']} rows "
                "with labels known when DATA starts; never on DATA. Best PR-AUC on "
                f"a 0.05 grid: anomaly {w['anomaly']}, risk {w['risk']}. On DATA "
                f"those weights give PR-AUC {on['pr_auc']:.4f}, ROC-AUC "
                f"{on['roc_auc']:.4f}, recall @ 1% FPR "
                f"{_pct(on['recall_at_1pct_fpr'])} (classifier alone "
                f"{m[CLASSIFIER]['pr_auc']:.4f}).",
                "",
                "The policy decides on each score's own thresholds, not on the "
                "combined score: new weights change the reported `combined_score`, "
                "no decision.",
            ]
        else:
            lines.append(f"Not measured: {proposal['problem']}.")
    lines.append("")
    return "\n".join(lines)


def summary(metrics: dict[str, Any]) -> str:
    """The comparison, for the terminal: one line a model, then the goals."""
    m = metrics["models"]
    pub = metrics["published"]
    names = {
        CLASSIFIER: f"{CLASSIFIER} v{pub[CLASSIFIER]['version']}",
        AUTOENCODER: f"{AUTOENCODER} v{pub[AUTOENCODER]['version']}",
        "combined": "combined",
        "baseline": "baseline (gradient-boosted trees)",
    }
    width = max(len(n) for n in names.values())
    lines = [
        f"{'':{width}}  PR-AUC  ROC-AUC  rec@1%FPR  rec@5%FPR     ECE  "
        "legit REVIEW  fraud REVIEW+FLAG"
    ]
    for name in MODELS:
        r = m[name]
        legit, fraud = r["policy"]["legitimate"], r["policy"]["fraud"]
        lines.append(
            f"{names[name]:{width}}  {r['pr_auc']:.4f}   {r['roc_auc']:.4f}"
            f"  {100 * r['recall_at_1pct_fpr']:8.2f}%  "
            f"{100 * r['recall_at_5pct_fpr']:8.2f}%  {r['ece']:.4f}"
            f"  {100 * legit['REVIEW']:11.2f}%"
            f"  {100 * (fraud['REVIEW'] + fraud['FLAG']):16.2f}%"
        )
    lines.append("")
    lines += [f"{'met    ' if ok else 'NOT MET'}  {text}" for text, ok in _goals(m)]
    return "\n".join(lines)


def _goals(m: dict[str, Any]) -> list[tuple[str, bool]]:
    clf = m[CLASSIFIER]
    return [
        (
            f"classifier PR-AUC {clf['pr_auc']:.4f} >= baseline "
            f"{m['baseline']['pr_auc']:.4f}",
            clf["pr_auc"] >= m["baseline"]["pr_auc"],
        ),
        (
            f"combined PR-AUC {m['combined']['pr_auc']:.4f} >= classifier "
            f"{clf['pr_auc']:.4f}",
            m["combined"]["pr_auc"] >= clf["pr_auc"],
        ),
        (
            "legitimate to REVIEW under the policy "
            f"{_pct(m['combined']['policy']['legitimate']['REVIEW'])} <= 2%",
            m["combined"]["policy"]["legitimate"]["REVIEW"] <= 0.02,
        ),
        (f"classifier ECE {clf['ece']:.4f} <= 0.02", clf["ece"] <= 0.02),
    ]


def _versions(values: Sequence[str]) -> dict[str, int]:
    out = {}
    for value in values:
        name, _, number = value.partition("=")
        if not number.isdigit() or int(number) < 1:
            raise ValueError(f"--version wants MODEL=N with N >= 1, got {value!r}")
        out[name] = int(number)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m training.evaluate_release",
        description="The published models on DATA against a baseline fitted on "
        "HISTORY.",
    )
    parser.add_argument("--data", type=Path, required=True, help="later CSV")
    parser.add_argument("--history", type=Path, required=True, help="earlier CSV")
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="output directory (default evaluations/<UTC time>)",
    )
    parser.add_argument("--repository", type=Path, default=ROOT / "model_repository")
    parser.add_argument("--policy", type=Path, default=ROOT / "config" / "policy.toml")
    parser.add_argument(
        "--label-delay-days",
        type=float,
        default=DEFAULT_LABEL_DELAY_DAYS,
        help="when a row has no reported_at, its label is known this long after "
        "the transaction (default %(default)s)",
    )
    parser.add_argument("--seed", type=int, default=BASELINE_SEED)
    parser.add_argument("--max-rows", type=int, default=None)
    parser.add_argument(
        "--version",
        action="append",
        default=[],
        metavar="MODEL=N",
        help="score version N of MODEL instead of the live one (a candidate "
        "before it goes live); repeatable",
    )
    args = parser.parse_args(argv)
    try:
        versions = _versions(args.version)
    except ValueError as exc:
        parser.error(str(exc))
    out = args.out or Path("evaluations") / time.strftime(
        "%Y%m%dT%H%M%SZ", time.gmtime()
    )
    try:
        path = evaluate_release(
            args.data,
            args.history,
            out,
            repository=args.repository,
            policy_path=args.policy,
            label_delay_days=args.label_delay_days,
            seed=args.seed,
            max_rows=args.max_rows,
            versions=versions,
        )
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(summary(json.loads(path.read_text())))
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
