"""The one gRPC client to Triton, and what the gateway knows of the live models."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field

import numpy as np
import tritonclient.grpc.aio as grpcclient
from tritonclient.utils import InferenceServerException

from features.schemas import (
    HISTORY_SCHEMA_ID,
    SCHEMAS,
    width,
)
from gateway.metrics import SCHEMA_RETRIES

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
    # Versions Triton failed to load, with its reason; they never serve.
    failed: dict[str, str] = field(default_factory=dict)
    # Why newer ready versions are not used while an older one is kept.
    refused: str | None = None
    # Versions seen ready while the model spoke our feature schema.
    accepted: set[str] = field(default_factory=set)
    # Set while newer versions are refused: every call names this version.
    pinned_version: str | None = None
    # The schema the live version is called with: the model's, while it is one
    # this gateway speaks, else the one its kept version was accepted with.
    speaks: str | None = None

    @property
    def usable(self) -> bool:
        return self.live_version is not None and self.problem is None


@dataclass(frozen=True)
class Features:
    """The rows of a request in ``schema``: the widest one the gateway speaks,
    or ``txn-basic-v1`` alone when the customer history could not be read."""

    matrix: np.ndarray
    schema: str

    def columns(self, schema: str) -> np.ndarray | None:
        """The columns of ``schema``, or None when these rows lack them."""
        # Every schema's columns start those of the wider ones.
        if width(schema) <= width(self.schema):
            return self.matrix[..., : width(schema)]
        return None


@dataclass(frozen=True)
class Scores:
    anomaly: np.ndarray
    risk: np.ndarray
    # Model name -> the version Triton says computed the scores.
    versions: dict[str, str]


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

    def scoring_models(self) -> list[ModelState]:
        """The models that score transactions (not the ensemble)."""
        return [self.models[self.anomaly_model], self.models[self.classifier_model]]

    async def close(self) -> None:
        await self._client.close()

    async def server_ready(self) -> bool:
        # Liveness, not Triton's strict readiness: after any failed model load
        # (a broken version dropped in) /v2/health/ready stays false although
        # every live version serves. Each model's readiness comes from refresh.
        try:
            return bool(await self._client.is_server_live(client_timeout=self._timeout))
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
        failed: dict[str, dict[str, str]] = {name: {} for name in self.models}
        listed: set[str] = set()
        for entry in index.get("models", []):
            name, version = entry.get("name"), entry.get("version")
            if name not in ready:
                continue
            listed.add(name)
            if not version:
                continue
            if entry.get("state") == "READY":
                ready[name].append(version)
            elif entry.get("state") == "UNAVAILABLE" and entry.get("reason") not in (
                None,
                "",
                "unloaded",
            ):
                failed[name][version] = entry["reason"]
        for name, state in self.models.items():
            state.versions = sorted(ready[name], key=int)
            state.failed = failed[name]
            if not state.versions:
                state.live_version = None
                state.problem = (
                    "no ready version"
                    if name in listed
                    else "not in Triton's model repository"
                )
                continue
            state.feature_schema = await self._feature_schema(name)
            self._judge_schema(state)

    def _judge_schema(self, state: ModelState) -> None:
        """Follow Triton's newest version, unless it speaks a schema this
        gateway does not know.

        Then an older version that this gateway accepted stays in use (each
        call names it, with the schema it was accepted with) for as long as
        Triton keeps it loaded.
        """
        if state.feature_schema in SCHEMAS:
            state.accepted.update(state.versions)
            state.live_version = state.versions[-1]
            state.speaks = state.feature_schema
            state.pinned_version = None
            state.problem = state.refused = None
            return
        why = (
            f"feature schema {state.feature_schema!r} is not one this gateway "
            f"speaks ({', '.join(SCHEMAS)})"
        )
        kept = [v for v in state.versions if v in state.accepted]
        newer = [v for v in state.versions if v not in state.accepted]
        message = f"refused version(s) {', '.join(newer) or 'all'}: {why}"
        if message != (state.refused or state.problem):
            log.error("model %s: %s", state.name, message)
        if kept:
            state.pinned_version = state.live_version = kept[-1]
            state.refused = f"{message}; version {kept[-1]} stays live"
            state.problem = None
        else:
            state.pinned_version = state.live_version = state.speaks = None
            state.refused = None
            state.problem = message

    def needs_history(self) -> bool:
        """Whether a model that scores transactions speaks the history schema."""
        return any(
            self.models[name].usable and self.models[name].speaks == HISTORY_SCHEMA_ID
            for name in (self.anomaly_model, self.classifier_model)
        )

    async def _reread_schema(self, state: ModelState, used: str) -> bool:
        """Read the model's schema again; whether it is a known one other than
        ``used``, the one the refused call was made with."""
        schema = await self._feature_schema(state.name)
        if schema is None or schema == used or schema not in SCHEMAS:
            return False
        if schema == state.speaks:
            # A refresh during the refused call already followed the switch.
            return True
        log.warning(
            "model %s now speaks %s (was %s): retrying with its columns",
            state.name,
            schema,
            state.speaks,
        )
        state.feature_schema = schema
        self._judge_schema(state)
        return True

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

    async def _infer(
        self, model: str, rows: Features, outputs: tuple[str, ...]
    ) -> tuple[list[np.ndarray], str]:
        """The outputs, and the version that Triton says produced them.

        A model whose schema changed under us (a version with another input
        width went live) refuses the shape: its schema is read again and the
        call is made once more with the columns it now expects.
        """
        state = self.models[model]
        for attempt in range(2):
            if not state.usable or state.speaks is None:
                raise ScoringUnavailable(f"{model}: {state.problem or 'not ready'}")
            used = state.speaks
            batch = rows.columns(used)
            if batch is None:
                raise ScoringUnavailable(
                    f"{model}: speaks {state.speaks}, whose history features "
                    "are unavailable"
                )
            try:
                result = await self._call(model, state, batch, outputs)
                break
            except InferenceServerException as exc:
                retry = attempt == 0 and _is_shape_error(exc)
                if retry and await self._reread_schema(state, used):
                    SCHEMA_RETRIES.labels(model).inc()
                    continue
                raise ScoringUnavailable(f"{model}: {exc}") from exc
            except (TimeoutError, OSError) as exc:
                raise ScoringUnavailable(f"{model}: {exc}") from exc
        n = rows.matrix.shape[0]
        arrays = []
        for name in outputs:
            values = result.as_numpy(name)
            if values is None or values.shape[0] != n:
                raise ScoringUnavailable(f"{model}: malformed output {name}")
            values = values.reshape(n).astype(np.float64)
            if not np.all(np.isfinite(values)) or np.any((values < 0) | (values > 1)):
                raise ScoringUnavailable(f"{model}: {name} outside [0, 1]")
            arrays.append(values)
        version = result.get_response().model_version or "unknown"
        return arrays, version

    async def _call(
        self,
        model: str,
        state: ModelState,
        batch: np.ndarray,
        outputs: tuple[str, ...],
    ) -> grpcclient.InferResult:
        tensor = grpcclient.InferInput("features", list(batch.shape), "FP32")
        tensor.set_data_from_numpy(np.ascontiguousarray(batch, dtype=np.float32))
        requested = [grpcclient.InferRequestedOutput(name) for name in outputs]
        return await self._client.infer(
            model,
            [tensor],
            model_version=state.pinned_version or "",
            outputs=requested,
            client_timeout=self._timeout,
        )

    async def score(self, rows: Features) -> Scores:
        """Anomaly scores and fraud probabilities for each row.

        The two models are called side by side rather than through the
        ensemble: each answer names the version that computed it, so the
        versions recorded with a decision are exact even while Triton has an
        old and a new version ready during a swap (the ensemble would name
        only itself). Measured cost: about 10 % more latency per call at
        concurrency 1-8 on this 2-core machine (see README).
        """
        (anomaly, anomaly_version), (risk, risk_version) = await asyncio.gather(
            self._infer(self.anomaly_model, rows, ("anomaly_score",)),
            self._infer(self.classifier_model, rows, ("risk_probability",)),
        )
        return Scores(
            anomaly[0],
            risk[0],
            {
                self.anomaly_model: anomaly_version,
                self.classifier_model: risk_version,
            },
        )

    async def anomaly(self, rows: Features) -> tuple[np.ndarray, str]:
        (values,), version = await self._infer(
            self.anomaly_model, rows, ("anomaly_score",)
        )
        return values, version

    async def classify(self, rows: Features) -> tuple[np.ndarray, str]:
        (values,), version = await self._infer(
            self.classifier_model, rows, ("risk_probability",)
        )
        return values, version


def _is_shape_error(exc: InferenceServerException) -> bool:
    """Triton refused the input as not matching the model's configuration."""
    return "INVALID_ARGUMENT" in str(exc.status() or "") or "shape" in str(exc)
