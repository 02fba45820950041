"""The one gRPC client to Triton, and what the gateway knows of the live models."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

import features

log = logging.getLogger("gateway.triton")

# gRPC waits longer and longer between attempts to reconnect to a server that
# went away (up to 120 s by default), so a Triton restart after a long outage
# could leave the gateway on the fail-safe for two more minutes. Capped at 1 s,
# scoring resumes within about a second of Triton being back.
_CHANNEL_ARGS = [
    ("grpc.max_send_message_length", 2**31 - 1),
    ("grpc.max_receive_message_length", 2**31 - 1),
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
]


class ScoringUnavailable(Exception):
    """Triton did not give scores: unreachable, timed out, or model not usable."""


@dataclass
class ModelState:
    name: str
    live_version: str | None = None
    versions: list[str] = field(default_factory=list)
    feature_schema: str | None = None
    problem: str | None = None

    @property
    def usable(self) -> bool:
        return self.live_version is not None and self.problem is None


class TritonScorer:
    def __init__(
        self,
        url: str,
        *,
        ensemble: str,
        anomaly_model: str,
        classifier_model: str,
        timeout_s: float,
    ) -> None:
        self._url = url
        self._timeout = timeout_s
        self.ensemble = ensemble
        self.anomaly_model = anomaly_model
        self.classifier_model = classifier_model
        self._client = grpcclient.InferenceServerClient(
            url=url, channel_args=_CHANNEL_ARGS
        )
        self.reachable = False
        self.models: dict[str, ModelState] = {
            name: ModelState(name)
            for name in (ensemble, anomaly_model, classifier_model)
        }

    async def close(self) -> None:
        await self._client.close()

    async def server_ready(self) -> bool:
        try:
            return bool(
                await self._client.is_server_ready(client_timeout=self._timeout)
            )
        except (TimeoutError, InferenceServerException, OSError):
            return False

    async def refresh(self) -> None:
        """Read live versions and feature schemas from Triton."""
        try:
            index = await self._client.get_model_repository_index(
                as_json=True, client_timeout=self._timeout * 4
            )
        except (TimeoutError, InferenceServerException, OSError) as exc:
            # Keep what was last known: inference fails fast on its own while
            # Triton is down, and resumes as soon as it is back.
            log.warning("cannot read Triton's model repository: %s", exc)
            self.reachable = False
            return
        self.reachable = True
        ready: dict[str, list[str]] = {name: [] for name in self.models}
        for entry in index.get("models", []):
            name = entry.get("name")
            if name in ready and entry.get("state") == "READY" and entry.get("version"):
                ready[name].append(entry["version"])
        for name, state in self.models.items():
            versions = sorted(ready[name], key=int)
            state.versions = versions
            state.live_version = versions[-1] if versions else None
            if state.live_version is None:
                state.problem = "no ready version"
                continue
            state.feature_schema = await self._feature_schema(name)
            if state.feature_schema != features.SCHEMA_ID:
                if state.problem is None or "schema" not in state.problem:
                    log.error(
                        "model %s speaks feature schema %r; this gateway speaks %r",
                        name,
                        state.feature_schema,
                        features.SCHEMA_ID,
                    )
                state.problem = (
                    f"feature schema {state.feature_schema!r} is not "
                    f"{features.SCHEMA_ID!r}"
                )
            else:
                state.problem = None

    async def _feature_schema(self, model: str) -> str | None:
        try:
            config = await self._client.get_model_config(
                model, as_json=True, client_timeout=self._timeout * 4
            )
        except (TimeoutError, InferenceServerException, OSError):
            return None
        params = config.get("config", {}).get("parameters", {})
        value = params.get("feature_schema", {}).get("string_value")
        return str(value) if value is not None else None

    def versions_for(self, *models: str) -> dict[str, str]:
        return {name: self.models[name].live_version or "unknown" for name in models}

    async def _infer(
        self, model: str, batch: np.ndarray, outputs: tuple[str, ...]
    ) -> list[np.ndarray]:
        state = self.models[model]
        if not state.usable:
            raise ScoringUnavailable(f"{model}: {state.problem or 'not ready'}")
        tensor = grpcclient.InferInput("features", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        try:
            result = await self._client.infer(
                model, [tensor], outputs=requested, client_timeout=self._timeout
            )
        except (TimeoutError, InferenceServerException, OSError) as exc:
            raise ScoringUnavailable(f"{model}: {exc}") from exc
        arrays = []
        for name in outputs:
            values = result.as_numpy(name)
            if values is None or values.shape[0] != batch.shape[0]:
                raise ScoringUnavailable(f"{model}: malformed output {name}")
            values = values.reshape(batch.shape[0]).astype(np.float64)
            if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
                raise ScoringUnavailable(f"{model}: {name} outside [0, 1]")
            arrays.append(values)
        return arrays

    async def score(self, batch: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Anomaly scores and fraud probabilities for each row, in one call."""
        anomaly, risk = await self._infer(
            self.ensemble, batch, ("anomaly_score", "risk_probability")
        )
        return anomaly, risk

    async def anomaly(self, batch: np.ndarray) -> np.ndarray:
        (values,) = await self._infer(self.anomaly_model, batch, ("anomaly_score",))
        return values

    async def classify(self, batch: np.ndarray) -> np.ndarray:
        (values,) = await self._infer(
            self.classifier_model, batch, ("risk_probability",)
        )
        return values
