"""The PyTorch autoencoder and its calibrated, self-contained scoring module."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.calibration import PiecewiseLinear
from training.unseen import augment_unseen, categorical_blocks

HIDDEN: tuple[int, ...] = (64, 32, 16)
ERROR_KINDS: tuple[str, ...] = ("known-blocks", "blockwise", "mse")
# A numeric feature's squared standardised error counts at most this much (a
# 4-sigma miss), so one wild value cannot outweigh the rest of the row.
NUMERIC_TERM_CAP = 16.0
# Half the squared distance between two one-hot vectors is at most 1.
BLOCK_TERM_CAP = 1.0
_NO_CAP = 3.0e38


@dataclass(frozen=True)
class ErrorTerms:
    """How per-feature squared errors become the terms of the error."""

    weight: np.ndarray
    """[features]: multiplies the squared error in standardised space."""
    matrix: np.ndarray
    """[features, terms]: which features add up to which term."""
    cap: np.ndarray
    """[terms]: the most one term can count."""
    unknown: np.ndarray
    """[features, terms]: a 1 in a term's column drops the term when that
    (OTHER) feature is set."""

    def tensors(self) -> dict[str, torch.Tensor]:
        return {
            "feature_weight": torch.from_numpy(self.weight),
            "term_matrix": torch.from_numpy(self.matrix),
            "term_cap": torch.from_numpy(self.cap),
            "term_unknown": torch.from_numpy(self.unknown),
        }


def error_terms(std: np.ndarray, kind: str) -> ErrorTerms:
    """The terms of a reconstruction error kind; the error is their mean.

    ``mse``: one term per feature, the squared error in standardised space
    (version 1's score). ``blockwise``: one term per numeric feature, the same
    squared standardised error capped at NUMERIC_TERM_CAP, and one term per
    categorical field, half the squared error of the block's reconstruction in
    raw one-hot space (in [0, 1]), so a rare or unseen value costs at most one
    term instead of 1/std^2 per column. ``known-blocks``: blockwise, averaged
    over the fields whose value is known: a value in the OTHER bucket is
    missing information, about which the model has nothing to say.
    """
    n = std.shape[0]
    if kind == "mse":
        return ErrorTerms(
            np.ones(n, np.float32),
            np.eye(n, dtype=np.float32),
            np.full(n, _NO_CAP, np.float32),
            np.zeros((n, n), np.float32),
        )
    if kind not in ERROR_KINDS:
        raise ValueError(f"unknown reconstruction error {kind!r}; use {ERROR_KINDS}")
    blocks = categorical_blocks()
    numeric = blocks[0].start
    # Columns after the categorical blocks (the history block of
    # txn-history-v1) are numeric too: one term each.
    trailing = n - blocks[-1].stop
    if trailing < 0:
        raise ValueError(f"{n} features cannot hold the categorical blocks")
    weight = np.ones(n, np.float32)
    matrix = np.zeros((n, numeric + len(blocks) + trailing), np.float32)
    unknown = np.zeros_like(matrix)
    matrix[np.arange(numeric), np.arange(numeric)] = 1.0
    for t, block in enumerate(blocks, start=numeric):
        cols = slice(block.start, block.stop)
        weight[cols] = 0.5 * std[cols].astype(np.float32) ** 2
        matrix[cols, t] = 1.0
        if kind == "known-blocks":
            unknown[block.other, t] = 1.0
    first = numeric + len(blocks)
    matrix[np.arange(blocks[-1].stop, n), np.arange(first, first + trailing)] = 1.0
    cap = np.array(
        [NUMERIC_TERM_CAP] * numeric
        + [BLOCK_TERM_CAP] * len(blocks)
        + [NUMERIC_TERM_CAP] * trailing,
        np.float32,
    )
    return ErrorTerms(weight, matrix, cap, unknown)


def mean_error(
    reconstruction: torch.Tensor,
    z: torch.Tensor,
    features: torch.Tensor,
    terms: dict[str, torch.Tensor],
    capped: bool = True,
) -> torch.Tensor:
    """[batch, 1]: the mean of the error terms that count for each row."""
    squared = (reconstruction - z) ** 2 * terms["feature_weight"]
    values = torch.matmul(squared, terms["term_matrix"])
    if capped:
        values = torch.minimum(values, terms["term_cap"])
    counts = 1.0 - torch.matmul(features, terms["term_unknown"])
    return torch.sum(values * counts, dim=1, keepdim=True) / torch.sum(
        counts, dim=1, keepdim=True
    )


class Autoencoder(nn.Module):
    """Encoder 64-32-16, mirrored decoder 16-32-64-n, on standardised inputs."""

    def __init__(self, num_features: int, hidden: tuple[int, ...] = HIDDEN):
        super().__init__()
        widths = (num_features, *hidden)
        self.encoder = _mlp(widths)
        self.decoder = _mlp(tuple(reversed(widths)))

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.encoder(z))


def _mlp(widths: tuple[int, ...]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        layers.append(nn.Linear(a, b))
        if i < len(widths) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


class AnomalyScorer(nn.Module):
    """Raw features -> anomaly score in [0, 1], everything learned kept as buffers.

    The score is the mean of the reconstruction error's terms (see
    ``error_terms``), mapped through a monotone piecewise-linear calibration.
    """

    mean: torch.Tensor
    std: torch.Tensor
    feature_weight: torch.Tensor
    term_matrix: torch.Tensor
    term_cap: torch.Tensor
    term_unknown: torch.Tensor
    knot_x: torch.Tensor
    knot_y: torch.Tensor
    segment_width: torch.Tensor
    segment_slope: torch.Tensor

    def __init__(
        self,
        autoencoder: Autoencoder,
        num_features: int,
        num_knots: int,
        error: str = "mse",
    ):
        super().__init__()
        self.autoencoder = autoencoder
        self.error = error
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        for name, value in error_terms(np.ones(num_features), error).tensors().items():
            self.register_buffer(name, value)
        self.register_buffer("knot_x", torch.linspace(0.0, 1.0, num_knots))
        self.register_buffer("knot_y", torch.linspace(0.0, 1.0, num_knots))
        self.register_buffer("segment_width", torch.zeros(num_knots - 1))
        self.register_buffer("segment_slope", torch.zeros(num_knots - 1))

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))
        for name, value in error_terms(std, self.error).tensors().items():
            getattr(self, name).copy_(value)

    def set_calibration(self, curve: PiecewiseLinear) -> None:
        x = torch.from_numpy(curve.x.astype(np.float32))
        y = torch.from_numpy(curve.y.astype(np.float32))
        self.knot_x.copy_(x)
        self.knot_y.copy_(y)
        self.segment_width.copy_(x[1:] - x[:-1])
        self.segment_slope.copy_((y[1:] - y[:-1]) / (x[1:] - x[:-1]))

    def reconstruction_error(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.std
        terms = {
            "feature_weight": self.feature_weight,
            "term_matrix": self.term_matrix,
            "term_cap": self.term_cap,
            "term_unknown": self.term_unknown,
        }
        return mean_error(self.autoencoder(z), z, features, terms)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        error = self.reconstruction_error(features)
        # A sum of clipped ramps: exports to plain ONNX ops, no search needed.
        ramps = torch.minimum(torch.relu(error - self.knot_x[:-1]), self.segment_width)
        rise = torch.sum(ramps * self.segment_slope, dim=1, keepdim=True)
        return torch.clamp(self.knot_y[0] + rise, 0.0, 1.0)


def train_autoencoder(
    legit_features: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    *,
    epochs: int,
    seed: int,
    error: str = "mse",
    unseen_rate: float = 0.0,
    swap_rate: float = 0.0,
    batch_size: int = 256,
    learning_rate: float = 1e-3,
) -> Autoencoder:
    """Train on legitimate rows with the loss the score uses (uncapped).

    With ``unseen_rate`` > 0 each epoch sees a fresh unseen-value augmentation.
    """
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    rng = np.random.default_rng(seed)
    model = Autoencoder(legit_features.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    terms = error_terms(std, error).tensors()
    n = legit_features.shape[0]

    model.train()
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        rows = augment_unseen(legit_features, unseen_rate, rng, swap_rate)
        raw = torch.from_numpy(rows)
        z = torch.from_numpy((rows - mean) / std).float()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            index = order[start : start + batch_size]
            batch = z[index]
            loss = torch.mean(
                mean_error(model(batch), batch, raw[index], terms, capped=False)
            )
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            total += loss.item() * batch.shape[0]
        print(
            f"autoencoder epoch {epoch}/{epochs}: loss {total / n:.5f} "
            f"({time.monotonic() - started:.1f}s)",
            file=sys.stderr,
            flush=True,
        )
    model.eval()
    return model


@torch.no_grad()
def score(
    scorer: AnomalyScorer, features: np.ndarray, errors: bool = False
) -> np.ndarray:
    scorer.eval()
    x = torch.from_numpy(np.ascontiguousarray(features, dtype=np.float32))
    out = scorer.reconstruction_error(x) if errors else scorer(x)
    return out.numpy().ravel()


def save_scorer(scorer: AnomalyScorer, path: Path) -> None:
    torch.save(
        {
            "state_dict": scorer.state_dict(),
            "num_features": int(scorer.mean.shape[0]),
            "num_knots": int(scorer.knot_x.shape[0]),
            "error": scorer.error,
        },
        path,
    )


def load_scorer(path: Path) -> AnomalyScorer:
    payload = torch.load(path, weights_only=True)
    n = payload["num_features"]
    # Runs saved before the error kinds existed scored with plain MSE.
    error = payload.get("error", "mse")
    scorer = AnomalyScorer(Autoencoder(n), n, payload["num_knots"], error)
    state = payload["state_dict"]
    # ... and without the buffers that later error kinds added.
    state = error_terms(state["std"].numpy(), error).tensors() | state
    scorer.load_state_dict(state)
    return scorer.eval()
