"""The serving contract of each model (fixed; the gateway depends on it)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import features
from features import schemas

ONNX_OPSETS: tuple[int, ...] = (17, 18)
MAX_BATCH_SIZE = 1024


@dataclass(frozen=True)
class ModelContract:
    name: str
    input_name: str
    output_name: str
    # The input is one row of this feature schema; its width follows from it.
    feature_schema: str = features.SCHEMA_ID
    output_width: int = 1
    parity_atol: float = 1e-5

    @property
    def num_features(self) -> int:
        return schemas.width(self.feature_schema)

    def for_schema(self, feature_schema: str) -> ModelContract:
        """The same model on another feature schema (raises on an unknown one)."""
        schemas.width(feature_schema)
        return replace(self, feature_schema=feature_schema)


# The anomaly calibration's steepest segment (slope ~1e4 between close legit
# error quantiles) turns float32 rounding inside the network into score
# differences of ~1e-5; an export in training mode still differs by far more.
AUTOENCODER = ModelContract(
    "anomaly_autoencoder", "features", "anomaly_score", parity_atol=1e-4
)
CLASSIFIER = ModelContract("risk_classifier", "features", "risk_probability")
CONTRACTS: dict[str, ModelContract] = {c.name: c for c in (AUTOENCODER, CLASSIFIER)}
