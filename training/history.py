"""History features over a time-ordered file, as the gateway computes them online.

The transactions of one or more files are folded in time order through
``features.history``; each labelled row's confirmed outcome enters its
customer's history at the moment it became known (``training.labels``: the
file's ``reported_at``, else a fixed delay after the transaction), so no
transaction ever sees a label from its future, its own included.
"""

from __future__ import annotations

import numpy as np

from features import history
from features.schemas import BASIC_SCHEMA_ID, HISTORY_SCHEMA_ID, feature_names
from training.data import Transactions
from training.labels import DEFAULT_LABEL_DELAY_DAYS, label_known_at


def _events(txns: Transactions) -> list[history.HistoryEvent]:
    return list(
        history.iter_events(
            txns.user_id,
            txns.transaction_id,
            txns.amount,
            txns.epoch,
            txns.country,
            txns.device,
            txns.product_category,
        )
    )


def _outcomes(
    txns: Transactions, delay_days: float, first_row: int = 0
) -> list[history.Outcome]:
    """The labelled rows' outcomes; ``first_row`` + the row index orders two
    verdicts on one transaction known at the same moment (the later row wins)."""
    known = label_known_at(txns, delay_days)
    return [
        history.Outcome(
            known_at=float(known[i]),
            user_id=txns.user_id[i],
            transaction_id=txns.transaction_id[i],
            is_fraud=bool(txns.is_fraud[i] == 1),
            tiebreak=first_row + int(i),
        )
        for i in np.flatnonzero(np.isfinite(known))
    ]


def history_blocks(
    *parts: Transactions, delay_days: float = DEFAULT_LABEL_DELAY_DAYS
) -> list[np.ndarray]:
    """The history block of every row of each part, folded over the parts in
    the order given (each part time-ordered, each starting after the previous
    one ends), with the labels of all parts fed back as they became known."""
    for earlier, later in zip(parts, parts[1:], strict=False):
        if len(earlier) and len(later) and earlier.epoch[-1] > later.epoch[0]:
            raise ValueError("history parts overlap in time; pass them in time order")
    events = [e for part in parts for e in _events(part)]
    outcomes: list[history.Outcome] = []
    first_row = 0
    for part in parts:
        outcomes += _outcomes(part, delay_days, first_row)
        first_row += len(part)
    block = history.fold(events, outcomes)
    out, start = [], 0
    for part in parts:
        out.append(block[start : start + len(part)])
        start += len(part)
    return out


def encode(
    txns: Transactions,
    schema: str,
    history_block: np.ndarray | None = None,
    delay_days: float = DEFAULT_LABEL_DELAY_DAYS,
) -> np.ndarray:
    """The feature matrix of ``txns`` in ``schema``.

    ``history_block``: precomputed (``history_blocks``) when the history must
    start before ``txns`` does; else it is folded over ``txns`` alone.
    """
    feature_names(schema)
    basic = txns.features()
    if schema == BASIC_SCHEMA_ID:
        return basic
    assert schema == HISTORY_SCHEMA_ID
    if history_block is None:
        (history_block,) = history_blocks(txns, delay_days=delay_days)
    return np.concatenate([basic, history_block], axis=1)
