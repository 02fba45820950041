"""Unseen-value augmentation: teach the models what an OTHER bucket means.

In a training set from one source, a categorical field's OTHER column is
constant zero, so neither model learns anything about it and a serving-time
value outside the vocabulary lands where the models have never been. Moving a
small share of training rows' values into OTHER (independently per field, and
afresh every epoch) makes OTHER an ordinary value that stands for "some value
of this field", with the label kept: the classifier learns the field's
marginal risk there, the autoencoder learns to reconstruct it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

import features


@dataclass(frozen=True)
class Block:
    """The columns of one categorical field in the feature vector."""

    field: str
    start: int
    stop: int

    @property
    def other(self) -> int:
        return self.stop - 1


def categorical_blocks() -> tuple[Block, ...]:
    blocks = []
    start = len(features.NUMERIC_FEATURES)
    for vocab in features.VOCABULARIES:
        stop = start + len(vocab.columns)
        blocks.append(Block(vocab.field, start, stop))
        start = stop
    return tuple(blocks)


def with_other(x: np.ndarray, field: str, rows: np.ndarray | None = None) -> np.ndarray:
    """A copy of ``x`` with ``field`` set to OTHER (in ``rows``, default all)."""
    block = next((b for b in categorical_blocks() if b.field == field), None)
    if block is None:
        raise ValueError(f"no categorical field {field!r} in {features.SCHEMA_ID}")
    out = np.array(x, dtype=np.float32, copy=True)
    where = slice(None) if rows is None else rows
    out[where, block.start : block.stop] = 0.0
    out[where, block.other] = 1.0
    return out


def augment_unseen(
    x: np.ndarray,
    rate: float,
    rng: np.random.Generator,
    swap_rate: float = 0.0,
) -> np.ndarray:
    """A copy of ``x`` where each row's value of each field is OTHER with ``rate``.

    With ``swap_rate``, a value is instead replaced by a uniformly drawn known
    value of the field: combinations that the data never shows (category W
    from a mobile device, in IEEE-CIS) then stop being out of reach.
    """
    for name, value in (("unseen-value rate", rate), ("swap rate", swap_rate)):
        if not 0.0 <= value < 1.0:
            raise ValueError(f"{name} must be in [0, 1), got {value}")
    if rate + swap_rate >= 1.0:
        raise ValueError(f"rate + swap rate must stay below 1, got {rate + swap_rate}")
    out = np.array(x, dtype=np.float32, copy=True)
    if rate == 0.0 and swap_rate == 0.0:
        return out
    for block in categorical_blocks():
        draw = rng.random(len(out))
        other = draw < rate
        swap = (draw >= rate) & (draw < rate + swap_rate)
        out[other | swap, block.start : block.stop] = 0.0
        out[other, block.other] = 1.0
        known = block.other - block.start
        columns = block.start + rng.integers(0, known, size=int(swap.sum()))
        out[np.flatnonzero(swap), columns] = 1.0
    return out


def with_value(x: np.ndarray, field: str, value: str) -> np.ndarray:
    """A copy of ``x`` with ``field`` set to a vocabulary value in every row."""
    vocab = next((v for v in features.VOCABULARIES if v.field == field), None)
    if vocab is None:
        raise ValueError(f"no categorical field {field!r} in {features.SCHEMA_ID}")
    block = next(b for b in categorical_blocks() if b.field == field)
    out = np.array(x, dtype=np.float32, copy=True)
    out[:, block.start : block.stop] = 0.0
    out[:, block.start + int(vocab.index([value])[0])] = 1.0
    return out


def has_value(x: np.ndarray, field: str, value: str) -> np.ndarray:
    """Rows of ``x`` whose ``field`` is ``value`` (OTHER for unknown values)."""
    vocab = next((v for v in features.VOCABULARIES if v.field == field), None)
    if vocab is None:
        raise ValueError(f"no categorical field {field!r} in {features.SCHEMA_ID}")
    block = next(b for b in categorical_blocks() if b.field == field)
    return x[:, block.start + int(vocab.index([value])[0])] > 0.5
