"""One training run: data, split, both models, calibration, report."""

from __future__ import annotations

import hashlib
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from features.schemas import CURRENT_SCHEMA_ID, feature_names
from training import autoencoder as ae
from training import classifier as clf
from training import run as layout
from training.calibration import (
    DEFAULT_ANOMALY_KNOTS,
    fit_platt,
    fit_quantile_knots,
    standardisation,
)
from training.data import UNLABELLED, Transactions, read_transactions
from training.history import encode
from training.labels import DEFAULT_LABEL_DELAY_DAYS, labels_as_of
from training.policy import DEFAULT_POLICY
from training.report import evaluate, plot_precision_recall, write_report
from training.robustness import evaluate_file, unseen_value_probes
from training.split import Split, time_split
from training.unseen import augment_unseen

PARITY_ROWS = 512


@dataclass(frozen=True)
class TrainConfig:
    data: Path
    out: Path
    seed: int = 42
    ae_epochs: int = 20
    clf_epochs: int = 15
    max_rows: int | None = None
    threads: int = 2
    unseen_rate: float = 0.1
    swap_rate: float = 0.05
    ae_error: str = "blockwise"
    extra_eval: tuple[Path, ...] = ()
    feature_schema: str = CURRENT_SCHEMA_ID
    label_delay_days: float = DEFAULT_LABEL_DELAY_DAYS
    train_share: float = 0.85
    calibration_share: float = 0.10
    clf_members: int = 3
    clf_balanced: bool = False


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _labelled(index: np.ndarray, labels: np.ndarray, part: str) -> np.ndarray:
    index = index[labels[index] >= 0]
    positives = int(labels[index].sum())
    if positives == 0 or positives == len(index):
        raise ValueError(
            f"the {part} split needs labelled fraud and legitimate rows; it has "
            f"{positives} fraud of {len(index)} labelled (train and calibration "
            "count a label only once it was known when the file ends: its "
            "reported_at, else --label-delay-days after the transaction)"
        )
    return index


def _data_summary(cfg: TrainConfig, txns: Transactions, split: Split) -> dict[str, Any]:
    labelled = txns.is_fraud >= 0
    return {
        "source": cfg.data.name,
        "sha256": _sha256(cfg.data),
        "rows": len(txns),
        "labelled_rows": int(labelled.sum()),
        "fraud_rate": float(txns.is_fraud[labelled].mean()),
        "start": _iso(float(txns.epoch.min())),
        "end": _iso(float(txns.epoch.max())),
        "max_rows": cfg.max_rows,
        "split": {
            "train": len(split.train),
            "calibration": len(split.calibration),
            "validation": len(split.validation),
            "calibration_starts": _iso(float(txns.epoch[split.calibration[0]])),
            "validation_starts": _iso(float(txns.epoch[split.validation[0]])),
        },
    }


def train(cfg: TrainConfig) -> Path:
    import torch

    torch.set_num_threads(cfg.threads)
    started = time.monotonic()
    out = cfg.out
    out.mkdir(parents=True, exist_ok=False)
    rng = np.random.default_rng(cfg.seed)

    _log(f"reading {cfg.data}")
    txns = read_transactions(cfg.data, max_rows=cfg.max_rows)
    names = feature_names(cfg.feature_schema)
    _log(f"encoding {len(txns)} rows in {cfg.feature_schema} ({len(names)} features)")
    x = encode(txns, cfg.feature_schema, delay_days=cfg.label_delay_days)
    # Fitting happens when the file ends: a label counts only if it was known
    # by then (its report time, else the transaction time plus the delay).
    # The validation split, the latest rows, is scored on every label the
    # file has; train and calibration split the earlier rows whose label was
    # known, in time order.
    fitted_as_of = float(txns.epoch[-1])
    known = labels_as_of(txns, fitted_as_of, cfg.label_delay_days)
    labels = txns.is_fraud
    split = time_split(txns.epoch, cfg.train_share, cfg.calibration_share)
    earlier = np.concatenate([split.train, split.calibration])
    fitted = earlier[known[earlier] != UNLABELLED]
    not_yet_known = int(np.sum(labels[earlier] >= 0)) - len(fitted)
    share = cfg.train_share / (cfg.train_share + cfg.calibration_share)
    inner = time_split(txns.epoch[fitted], share, (1 - share) / 2)
    split = Split(
        fitted[inner.train],
        fitted[np.concatenate([inner.calibration, inner.validation])],
        split.validation,
    )
    train_idx = _labelled(split.train, known, "train")
    cal_idx = _labelled(split.calibration, known, "calibration")
    val_idx = _labelled(split.validation, labels, "validation")
    _log(
        f"{len(txns)} rows: train {len(split.train)}, calibration "
        f"{len(split.calibration)}, validation {len(split.validation)}; "
        f"{not_yet_known} labels not yet known when the file ends"
    )

    legit_train = train_idx[labels[train_idx] == 0]
    legit_cal = cal_idx[labels[cal_idx] == 0]
    # Scaling constants describe the augmented data the models train on, so
    # that OTHER columns are varying ones and not constant zeros.
    ae_mean, ae_std = standardisation(
        augment_unseen(x[legit_train], cfg.unseen_rate, rng, cfg.swap_rate)
    )
    _log(
        f"training the autoencoder on {len(legit_train)} legitimate rows "
        f"({cfg.ae_error} error, unseen-value rate {cfg.unseen_rate})"
    )
    net = ae.train_autoencoder(
        x[legit_train],
        ae_mean,
        ae_std,
        epochs=cfg.ae_epochs,
        seed=cfg.seed,
        error=cfg.ae_error,
        unseen_rate=cfg.unseen_rate,
        swap_rate=cfg.swap_rate,
    )
    curve_quantiles = [q for q, _ in DEFAULT_ANOMALY_KNOTS]
    scorer = ae.AnomalyScorer(net, x.shape[1], len(curve_quantiles) + 2, cfg.ae_error)
    scorer.set_standardisation(ae_mean, ae_std)
    curve = fit_quantile_knots(ae.score(scorer, x[legit_cal], errors=True))
    scorer.set_calibration(curve)
    ae.save_scorer(scorer, out / layout.AUTOENCODER)

    clf_mean, clf_std = standardisation(
        augment_unseen(x[train_idx], cfg.unseen_rate, rng, cfg.swap_rate)
    )
    _log(f"training the classifier on {len(train_idx)} labelled rows")
    clf_log: list[dict[str, float]] = []
    raw_model = clf.train_classifier(
        x[train_idx],
        known[train_idx],
        clf_mean,
        clf_std,
        epochs=cfg.clf_epochs,
        seed=cfg.seed,
        unseen_rate=cfg.unseen_rate,
        swap_rate=cfg.swap_rate,
        members=cfg.clf_members,
        balanced=cfg.clf_balanced,
        select_on=(x[cal_idx], known[cal_idx]),
        log=clf_log,
    )
    platt = fit_platt(clf.logits(raw_model, x[cal_idx]), known[cal_idx])
    model = clf.calibrated_classifier(raw_model, platt)
    clf.save_classifier(
        model, out / layout.CLASSIFIER_KERAS, out / layout.CLASSIFIER_SAVEDMODEL
    )

    x_val, y_val = x[val_idx], labels[val_idx]
    anomaly = ae.score(scorer, x_val)
    risk = clf.predict(model, x_val)
    risk_raw = clf.predict(raw_model, x_val)
    parity = rng.choice(len(x_val), size=min(PARITY_ROWS, len(x_val)), replace=False)
    np.save(out / layout.PARITY_FEATURES, x_val[np.sort(parity)])

    validation = evaluate(y_val, anomaly, risk, risk_raw)
    plot_precision_recall(
        y_val,
        {
            "anomaly_autoencoder": anomaly,
            "risk_classifier": risk,
            DEFAULT_POLICY.combined_label: DEFAULT_POLICY.combined(anomaly, risk),
        },
        out / layout.PR_CURVE_PNG,
    )

    def scores(rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return ae.score(scorer, rows), clf.predict(model, rows)

    _log("probing unseen values on legitimate validation rows")
    probes = unseen_value_probes(x_val[y_val == 0], scores)
    extra = []
    for path in cfg.extra_eval:
        _log(f"scoring extra file {path}")
        extra.append(
            evaluate_file(path, scores, cfg.feature_schema, cfg.label_delay_days)
        )
    elapsed = time.monotonic() - started
    report: dict[str, Any] = {
        "run": out.name,
        "created_at": _iso(time.time()),
        "feature_schema": cfg.feature_schema,
        "feature_names": list(names),
        "labels": {
            "delay_days": cfg.label_delay_days,
            "fitted_as_of": _iso(fitted_as_of),
            "train_and_calibration_rows_not_yet_known": not_yet_known,
        },
        "seed": cfg.seed,
        "epochs": {"autoencoder": cfg.ae_epochs, "classifier": cfg.clf_epochs},
        "classifier": {
            "members": cfg.clf_members,
            "balanced_class_weights": cfg.clf_balanced,
            "epoch_selection": "best PR-AUC on the calibration split",
            "epochs": clf_log,
        },
        "robustness_method": {
            "unseen_value_rate": cfg.unseen_rate,
            "swap_rate": cfg.swap_rate,
            "autoencoder_error": cfg.ae_error,
        },
        "training_seconds": round(elapsed, 1),
        "data": _data_summary(cfg, txns, split),
        "calibration": {
            "anomaly_knots": {"quantiles": [0.0, *curve_quantiles, None]}
            | curve.as_dict(),
            "platt": {"a": platt.a, "b": platt.b},
        },
        "validation": validation,
        "unseen_value_probes": probes,
        "extra_evaluations": extra,
    }
    write_report(report, out)
    layout.RunDir(out).write_manifest(report)
    _log(f"run written to {out} in {elapsed:.0f}s")
    return out
