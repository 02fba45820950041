"""The Keras risk classifier (functional API) and its calibrated serving model."""

from __future__ import annotations

import os

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

from pathlib import Path  # noqa: E402

import keras  # noqa: E402
import numpy as np  # noqa: E402

from training.calibration import Platt  # noqa: E402
from training.unseen import augment_unseen  # noqa: E402

LOGIT_LAYER = "logit"
OUTPUT_NAME = "risk_probability"
# Normalization divides by sqrt(variance); this one makes a column read as ~0.
_IGNORED_VARIANCE = 1e12


def classifier_scaling(
    x: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance for the Normalization layer.

    A column that never varied in training taught the classifier nothing, and
    batch norm would amplify any later value in it through weights that never
    trained; reading such a column as zero keeps unseen values harmless.
    """
    constant = x.std(axis=0) < 1e-6
    variance = np.where(constant, _IGNORED_VARIANCE, std.astype(np.float64) ** 2)
    return mean.astype(np.float32), variance.astype(np.float32)


def _member(x: keras.KerasTensor, k: int) -> keras.KerasTensor:
    x = keras.layers.Dense(64, activation="relu", name=f"m{k}_dense_64")(x)
    x = keras.layers.Dropout(0.2, name=f"m{k}_dropout")(x)
    x = keras.layers.Dense(32, activation="relu", name=f"m{k}_dense_32")(x)
    x = keras.layers.Dense(16, activation="relu", name=f"m{k}_dense_16")(x)
    return keras.layers.Dense(1, name=f"m{k}_logit")(x)


def build_classifier(
    mean: np.ndarray, variance: np.ndarray, members: int = 1
) -> keras.Model:
    """``members`` networks on the same standardised input, trained together;
    the served logit is the mean of theirs (a deep ensemble in one graph)."""
    if members < 1:
        raise ValueError(f"members must be at least 1, got {members}")
    inputs = keras.Input(shape=(mean.shape[0],), name="features")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(
        inputs
    )
    x = keras.layers.BatchNormalization(name="batch_norm")(x)
    heads = [_member(x, k) for k in range(members)]
    logit = (
        keras.layers.Average(name=LOGIT_LAYER)(heads)
        if members > 1
        else keras.layers.Identity(name=LOGIT_LAYER)(heads[0])
    )
    probability = keras.layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name="risk_classifier_uncalibrated")


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced weights: each class carries half of the total loss."""
    n, positives = len(labels), int(labels.sum())
    if positives == 0 or positives == n:
        raise ValueError(f"training needs both classes, found {positives} fraud of {n}")
    return {0: n / (2.0 * (n - positives)), 1: n / (2.0 * positives)}


def _pr_auc(model: keras.Model, x: np.ndarray, labels: np.ndarray) -> float:
    from sklearn.metrics import average_precision_score

    return float(average_precision_score(labels, predict(model, x)))


def train_classifier(
    x: np.ndarray,
    labels: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    epochs: int,
    seed: int,
    unseen_rate: float = 0.0,
    swap_rate: float = 0.0,
    batch_size: int = 512,
    learning_rate: float = 1e-3,
    members: int = 1,
    balanced: bool = False,
    select_on: tuple[np.ndarray, np.ndarray] | None = None,
    log: list[dict[str, float]] | None = None,
) -> keras.Model:
    """A fresh unseen-value augmentation every epoch.

    ``balanced``: class weights that give each class half of the loss (off by
    default: on IEEE-CIS they cost ranking quality, and Platt scaling fixes
    the probabilities either way). ``select_on`` (features, labels): keep the
    weights of the epoch with the best PR-AUC there (the calibration split;
    never the data the model is evaluated on). ``mean``/``std`` should describe
    the augmented data, so that the OTHER columns count as varying ones (see
    ``classifier_scaling``).
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    scaling_rows = augment_unseen(
        x, unseen_rate, np.random.default_rng(seed), swap_rate
    )
    model = build_classifier(*classifier_scaling(scaling_rows, mean, std), members)
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
    )
    targets = labels.astype(np.float32).reshape(-1, 1)
    weights = class_weights(labels) if balanced else None
    best: tuple[float, list[np.ndarray]] | None = None
    for epoch in range(epochs):
        history = model.fit(
            augment_unseen(x, unseen_rate, rng, swap_rate),
            targets,
            initial_epoch=epoch,
            epochs=epoch + 1,
            batch_size=batch_size,
            class_weight=weights,
            shuffle=True,
            verbose=2,
        )
        entry = {"epoch": epoch + 1, "loss": float(history.history["loss"][-1])}
        if select_on is not None:
            entry["selection_pr_auc"] = _pr_auc(model, *select_on)
            if best is None or entry["selection_pr_auc"] > best[0]:
                best = (entry["selection_pr_auc"], model.get_weights())
        if log is not None:
            log.append(entry)
    if best is not None:
        model.set_weights(best[1])
    return model


def logits(model: keras.Model, x: np.ndarray) -> np.ndarray:
    head = keras.Model(model.input, model.get_layer(LOGIT_LAYER).output)
    return np.asarray(head.predict(x, batch_size=4096, verbose=0)).ravel()


def calibrated_classifier(model: keras.Model, platt: Platt) -> keras.Model:
    """The trained layers with Platt scaling on the logit: the served model."""
    logit = model.get_layer(LOGIT_LAYER).output
    platt_layer = keras.layers.Dense(1, name="platt", trainable=False)
    probability = keras.layers.Activation("sigmoid", name=OUTPUT_NAME)(
        platt_layer(logit)
    )
    platt_layer.set_weights(
        [np.array([[platt.a]], dtype=np.float32), np.array([platt.b], dtype=np.float32)]
    )
    return keras.Model(model.input, probability, name="risk_classifier")


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    return np.asarray(model.predict(x, batch_size=4096, verbose=0)).ravel()


def save_classifier(model: keras.Model, keras_path: Path, savedmodel_dir: Path) -> None:
    model.save(keras_path)
    model.export(savedmodel_dir, verbose=False)


def load_classifier(keras_path: Path) -> keras.Model:
    return keras.saving.load_model(keras_path, compile=False)
