"""The feature schemas a model version may be trained on, by id.

``txn-history-v1`` is ``txn-basic-v1`` (the request fields) followed by the
per-customer history block, so the vector of a basic model is the first
columns of the history vector: a caller computes the widest vector once and
gives each model the prefix its schema names.
"""

from __future__ import annotations

import numpy as np

from features import FEATURE_NAMES, SCHEMA_ID
from features.history import HISTORY_FEATURE_NAMES, HISTORY_SCHEMA_ID

BASIC_SCHEMA_ID = SCHEMA_ID
SCHEMAS: dict[str, tuple[str, ...]] = {
    BASIC_SCHEMA_ID: FEATURE_NAMES,
    HISTORY_SCHEMA_ID: FEATURE_NAMES + HISTORY_FEATURE_NAMES,
}
# What training produces now.
CURRENT_SCHEMA_ID = HISTORY_SCHEMA_ID
WIDEST_SCHEMA_ID = HISTORY_SCHEMA_ID


class UnknownSchemaError(ValueError):
    pass


def feature_names(schema: str) -> tuple[str, ...]:
    try:
        return SCHEMAS[schema]
    except KeyError:
        raise UnknownSchemaError(
            f"unknown feature schema {schema!r}; known: {', '.join(SCHEMAS)}"
        ) from None


def width(schema: str) -> int:
    return len(feature_names(schema))


def columns_for(widest: np.ndarray, schema: str) -> np.ndarray:
    """The columns of ``schema`` from a matrix in the widest schema."""
    if widest.shape[-1] != len(SCHEMAS[WIDEST_SCHEMA_ID]):
        raise ValueError(
            f"expected {len(SCHEMAS[WIDEST_SCHEMA_ID])} columns, got {widest.shape[-1]}"
        )
    return widest[..., : width(schema)]
