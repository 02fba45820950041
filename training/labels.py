"""When a label may be used: only from the moment it would have been known.

A fraud label arrives late (a chargeback weeks after the payment, an analyst's
verdict days after). Anything computed "as of" time ``t`` (a model fitted at
``t``, weights measured at ``t``) may only see labels known by ``t``: the
file's ``reported_at`` where it has one, else the transaction time plus a
fixed delay.
"""

from __future__ import annotations

import numpy as np

from training.data import UNLABELLED, Transactions

DEFAULT_LABEL_DELAY_DAYS = 7.0
_DAY_S = 86_400.0


def label_known_at(
    txns: Transactions, delay_days: float = DEFAULT_LABEL_DELAY_DAYS
) -> np.ndarray:
    """Epoch seconds at which each row's label became known.

    ``reported_at`` where the file gives it, else ``timestamp + delay_days``.
    Unlabelled rows get +inf: their label is never known.
    """
    if delay_days < 0:
        raise ValueError(f"label delay must not be negative, got {delay_days}")
    known = txns.epoch + delay_days * _DAY_S
    if txns.reported_epoch is not None:
        reported = txns.reported_epoch
        known = np.where(np.isnan(reported), known, reported)
    return np.where(txns.is_fraud == UNLABELLED, np.inf, known)


def labels_as_of(
    txns: Transactions, as_of: float, delay_days: float = DEFAULT_LABEL_DELAY_DAYS
) -> np.ndarray:
    """The labels visible at epoch ``as_of``: ``UNLABELLED`` where not yet known."""
    known = label_known_at(txns, delay_days) <= as_of
    return np.where(known, txns.is_fraud, UNLABELLED).astype(np.int8)


def known_rows(
    txns: Transactions, as_of: float, delay_days: float = DEFAULT_LABEL_DELAY_DAYS
) -> np.ndarray:
    """Indices of rows that happened before ``as_of`` with a label known by then."""
    labels = labels_as_of(txns, as_of, delay_days)
    return np.flatnonzero((txns.epoch < as_of) & (labels != UNLABELLED))
