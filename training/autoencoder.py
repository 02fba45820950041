"""The PyTorch autoencoder and its calibrated, self-contained scoring module."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch
from torch import nn

from training.calibration import PiecewiseLinear

HIDDEN: tuple[int, ...] = (64, 32, 16)


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

    The score is the mean squared reconstruction error in standardised space,
    mapped through a monotone piecewise-linear calibration.
    """

    mean: torch.Tensor
    std: torch.Tensor
    knot_x: torch.Tensor
    knot_y: torch.Tensor
    segment_width: torch.Tensor
    segment_slope: torch.Tensor

    def __init__(self, autoencoder: Autoencoder, num_features: int, num_knots: int):
        super().__init__()
        self.autoencoder = autoencoder
        self.register_buffer("mean", torch.zeros(num_features))
        self.register_buffer("std", torch.ones(num_features))
        self.register_buffer("knot_x", torch.linspace(0.0, 1.0, num_knots))
        self.register_buffer("knot_y", torch.linspace(0.0, 1.0, num_knots))
        self.register_buffer("segment_width", torch.zeros(num_knots - 1))
        self.register_buffer("segment_slope", torch.zeros(num_knots - 1))

    def set_standardisation(self, mean: np.ndarray, std: np.ndarray) -> None:
        self.mean.copy_(torch.from_numpy(mean))
        self.std.copy_(torch.from_numpy(std))

    def set_calibration(self, curve: PiecewiseLinear) -> None:
        x = torch.from_numpy(curve.x.astype(np.float32))
        y = torch.from_numpy(curve.y.astype(np.float32))
        self.knot_x.copy_(x)
        self.knot_y.copy_(y)
        self.segment_width.copy_(x[1:] - x[:-1])
        self.segment_slope.copy_((y[1:] - y[:-1]) / (x[1:] - x[:-1]))

    def reconstruction_error(self, features: torch.Tensor) -> torch.Tensor:
        z = (features - self.mean) / self.std
        return torch.mean((self.autoencoder(z) - z) ** 2, dim=1, keepdim=True)

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
    batch_size: int = 256,
    learning_rate: float = 1e-3,
) -> Autoencoder:
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    model = Autoencoder(legit_features.shape[1])
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    z = torch.from_numpy((legit_features - mean) / std).float()
    n = z.shape[0]

    model.train()
    for epoch in range(1, epochs + 1):
        started = time.monotonic()
        order = torch.randperm(n, generator=generator)
        total = 0.0
        for start in range(0, n, batch_size):
            batch = z[order[start : start + batch_size]]
            loss = torch.mean((model(batch) - batch) ** 2)
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
        },
        path,
    )


def load_scorer(path: Path) -> AnomalyScorer:
    payload = torch.load(path, weights_only=True)
    n = payload["num_features"]
    scorer = AnomalyScorer(Autoencoder(n), n, payload["num_knots"])
    scorer.load_state_dict(payload["state_dict"])
    return scorer.eval()
