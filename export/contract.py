"""The serving contract of each model (fixed; the gateway depends on it)."""

from __future__ import annotations

from dataclasses import dataclass

import features

ONNX_OPSETS: tuple[int, ...] = (17, 18)
MAX_BATCH_SIZE = 1024


@dataclass(frozen=True)
class ModelContract:
    name: str
    input_name: str
    output_name: str
    num_features: int = features.NUM_FEATURES
    output_width: int = 1
    parity_atol: float = 1e-5


# The anomaly calibration's steepest segment (slope ~1e4 between close legit
# error quantiles) turns float32 rounding inside the network into score
# differences of ~1e-5; an export in training mode still differs by far more.
AUTOENCODER = ModelContract(
    "anomaly_autoencoder", "features", "anomaly_score", parity_atol=1e-4
)
CLASSIFIER = ModelContract("risk_classifier", "features", "risk_probability")
CONTRACTS: dict[str, ModelContract] = {c.name: c for c in (AUTOENCODER, CLASSIFIER)}
