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


def build_classifier(mean: np.ndarray, variance: np.ndarray) -> keras.Model:
    inputs = keras.Input(shape=(mean.shape[0],), name="features")
    x = keras.layers.Normalization(mean=mean, variance=variance, name="standardise")(
        inputs
    )
    x = keras.layers.BatchNormalization(name="batch_norm")(x)
    x = keras.layers.Dense(64, activation="relu", name="dense_64")(x)
    x = keras.layers.Dropout(0.3, name="dropout")(x)
    x = keras.layers.Dense(32, activation="relu", name="dense_32")(x)
    x = keras.layers.Dense(16, activation="relu", name="dense_16")(x)
    logit = keras.layers.Dense(1, name=LOGIT_LAYER)(x)
    probability = keras.layers.Activation("sigmoid", name="probability")(logit)
    return keras.Model(inputs, probability, name="risk_classifier_uncalibrated")


def class_weights(labels: np.ndarray) -> dict[int, float]:
    """Balanced weights: each class carries half of the total loss."""
    n, positives = len(labels), int(labels.sum())
    if positives == 0 or positives == n:
        raise ValueError(f"training needs both classes, found {positives} fraud of {n}")
    return {0: n / (2.0 * (n - positives)), 1: n / (2.0 * positives)}


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
) -> keras.Model:
    """Balanced class weights; a fresh unseen-value augmentation every epoch.

    ``mean``/``std`` should describe the augmented data, so that the OTHER
    columns count as varying ones (see ``classifier_scaling``).
    """
    keras.utils.set_random_seed(seed)
    rng = np.random.default_rng(seed)
    scaling_rows = augment_unseen(
        x, unseen_rate, np.random.default_rng(seed), swap_rate
    )
    model = build_classifier(*classifier_scaling(scaling_rows, mean, std))
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate),
        loss="binary_crossentropy",
        metrics=[keras.metrics.AUC(curve="PR", name="pr_auc")],
    )
    targets = labels.astype(np.float32).reshape(-1, 1)
    weights = class_weights(labels)
    for epoch in range(epochs):
        model.fit(
            augment_unseen(x, unseen_rate, rng, swap_rate),
            targets,
            initial_epoch=epoch,
            epochs=epoch + 1,
            batch_size=batch_size,
            class_weight=weights,
            shuffle=True,
            verbose=2,
        )
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
