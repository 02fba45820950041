"""Time-ordered train / calibration / validation split."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Split:
    train: np.ndarray
    calibration: np.ndarray
    validation: np.ndarray


def time_split(
    epoch: np.ndarray, train: float = 0.70, calibration: float = 0.15
) -> Split:
    """Earliest ``train`` share to train, the next ``calibration``, then the rest."""
    if train <= 0 or calibration <= 0 or train + calibration >= 1:
        raise ValueError(
            f"bad split fractions: train={train}, calibration={calibration}"
        )
    order = np.argsort(epoch, kind="stable")
    n = len(order)
    a, b = int(n * train), int(n * (train + calibration))
    if a == 0 or b in (a, n):
        raise ValueError(f"{n} rows are too few to split into three parts")
    return Split(order[:a], order[a:b], order[b:])
