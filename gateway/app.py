"""The FastAPI application: routes, start-up and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Annotated, Any

from fastapi import FastAPI, Path, Request, Response

from features.schemas import SCHEMAS, WIDEST_SCHEMA_ID
from gateway import repository
from gateway.auth import Authenticate, KeyRing, parse_api_keys, requires
from gateway.config import Settings, get_settings
from gateway.errors import ApiError, install_error_handlers, json_response
from gateway.history import HistoryStore
from gateway.idempotency import IdempotencyStore
from gateway.jsonbody import StrictJSONRoute
from gateway.limits import BodySizeLimit, Deadline
from gateway.metrics import install as install_metrics
from gateway.outcomes import record as record_outcome
from gateway.outcomes import transaction_record
from gateway.policy import load_policy
from gateway.schemas import (
    IDENTIFIER_PATTERN,
    AnomalyResponse,
    BatchRequest,
    BatchResponse,
    ClassifyResponse,
    ErrorResponse,
    HealthResponse,
    ModelInfoResponse,
    OutcomeRequest,
    OutcomeResponse,
    ScoreResponse,
    TransactionRecord,
    TransactionRequest,
)
from gateway.service import ScoringService
from gateway.storage import Storage, StorageUnavailable
from gateway.triton import ModelState, ScoringUnavailable, TritonScorer

log = logging.getLogger("gateway")


def _errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """Every status a route can answer besides 200, all in the error shape."""
    # 401: no valid key; 500: unexpected failure; 503: a dependency is down or
    # the request deadline passed.
    return {code: {"model": ErrorResponse} for code in sorted({401, 500, 503, *codes})}


# Routes that read a JSON body: 400 not JSON, 403 key lacks the scope,
# 413 too large, 415 not sent as JSON, 422 invalid.
_BODY_ERRORS = _errors(400, 403, 413, 415, 422)
_STORE_ERRORS = _errors(400, 403, 409, 413, 415, 422)


async def _refresh_models(scorer: TritonScorer, interval_s: float) -> None:
    while True:
        await asyncio.sleep(interval_s)
        try:
            await scorer.refresh()
        except Exception:  # the loop must outlive any single failure
            log.exception("model refresh failed")


def _not_stored(what: str | None, exc: Exception) -> ApiError:
    """PostgreSQL did not answer: 503, nothing recorded (``what``), retry."""
    log.warning("storage unavailable: %s", exc)
    message = (
        f"{what} could not be stored; nothing was recorded, retry later"
        if what
        else "the stored decisions cannot be read now; retry later"
    )
    return ApiError(503, "storage_unavailable", message, headers={"Retry-After": "1"})


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or get_settings()
    policy = load_policy(settings.policy_path)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        storage = Storage(
            settings.database_url,
            min_size=settings.db_pool_min_size,
            max_size=settings.db_pool_max_size,
            acquire_timeout_s=settings.db_acquire_timeout_ms / 1000,
            statement_timeout_s=settings.db_statement_timeout_ms / 1000,
            group_commit_max_rows=settings.db_group_commit_max_rows,
            group_commit_window_s=settings.db_group_commit_window_ms / 1000,
        )
        await storage.open()
        idempotency = IdempotencyStore(
            settings.redis_url,
            ttl_s=settings.idempotency_ttl_s,
            pending_ttl_s=max(5, settings.idempotency_wait_ms // 1000 * 5),
            timeout_s=settings.redis_timeout_ms / 1000,
            key_prefix=settings.redis_key_prefix,
        )
        history = HistoryStore(
            settings.redis_url,
            key_prefix=settings.redis_key_prefix,
            timeout_s=settings.redis_timeout_ms / 1000,
            budget_s=settings.history_timeout_ms / 1000,
        )
        scorer = TritonScorer(
            settings.triton_url,
            ensemble=settings.triton_ensemble,
            anomaly_model=settings.triton_anomaly_model,
            classifier_model=settings.triton_classifier_model,
            timeout_s=settings.triton_timeout_ms / 1000,
        )
        await scorer.refresh()
        app.state.service = ScoringService(
            scorer,
            storage,
            idempotency,
            history,
            policy,
            wait_for_duplicate_s=settings.idempotency_wait_ms / 1000,
        )
        refresher = asyncio.create_task(
            _refresh_models(scorer, settings.model_refresh_s)
        )
        log.info(
            "gateway ready: feature schemas %s, policy %s",
            ", ".join(f"{m.name}={m.speaks or 'none'}" for m in scorer.models.values()),
            policy.version,
        )
        try:
            yield
        finally:
            refresher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await refresher
            await scorer.close()
            await idempotency.close()
            await history.close()
            await storage.close()

    app = FastAPI(
        # No 307 to a trailing-slash twin: its Location would echo the Host header.
        redirect_slashes=False,
        title="Transaction risk gateway",
        version="0.1.0",
        description="Scores payment transactions with two models served by Triton "
        "and decides APPROVE, FLAG or REVIEW.",
        lifespan=lifespan,
    )
    app.router.route_class = StrictJSONRoute
    install_error_handlers(app)
    keys = KeyRing(parse_api_keys(settings.api_keys))
    if not keys.enabled:
        log.warning(
            "API_KEYS is empty: authentication is OFF; "
            "acceptable in development only (production refuses to start)"
        )
    # Outermost first: request log and metrics, deadline, authentication,
    # body limit.
    app.add_middleware(BodySizeLimit, max_bytes=settings.max_body_bytes)
    app.add_middleware(Authenticate, keys=keys)
    app.add_middleware(Deadline, timeout_s=settings.request_timeout_ms / 1000)
    install_metrics(app)
    score = requires("score")
    operator = requires("operator")
    outcomes = requires("outcomes")
    outcome_reader = requires("operator", "outcomes")

    def service(request: Request) -> ScoringService:
        return request.app.state.service  # type: ignore[no-any-return]

    @app.get(
        "/health",
        response_model=HealthResponse,
        responses={
            503: {"model": HealthResponse, "description": "Triton or PostgreSQL down"},
            500: {"model": ErrorResponse},
        },
    )
    async def health(request: Request) -> Response:
        """Checks Triton, PostgreSQL and Redis; 503 when scoring or storage is down."""
        svc = service(request)
        checks: dict[str, str] = {}

        async def triton() -> None:
            # The two scoring models alone: the ensemble is not called to score
            # (it is parked while its members speak different schemas).
            ready = await svc.scorer.server_ready()
            usable = all(m.usable for m in svc.scorer.scoring_models())
            checks["triton"] = "ok" if ready and usable else "unavailable"

        async def postgres() -> None:
            try:
                await svc.storage.ping()
                checks["postgres"] = "ok"
            except StorageUnavailable:
                checks["postgres"] = "unavailable"

        async def redis() -> None:
            try:
                await svc.idempotency.ping()
                checks["redis"] = "ok"
            except Exception:
                checks["redis"] = "unavailable"

        await asyncio.gather(triton(), postgres(), redis())
        essential = checks["triton"] == "ok" and checks["postgres"] == "ok"
        if essential and checks["redis"] == "ok":
            status = "ok"
        elif essential:
            status = "degraded"
        else:
            status = "unavailable"
        return json_response(
            {"status": status, "checks": checks}, status=200 if essential else 503
        )

    # Load balancers often probe with HEAD; same checks, no body.
    app.add_api_route("/health", health, methods=["HEAD"], include_in_schema=False)

    @app.post(
        "/transactions",
        response_model=ScoreResponse,
        responses=_STORE_ERRORS,
        dependencies=[score],
        summary="Score a transaction and store the decision",
    )
    async def post_transaction(body: TransactionRequest, request: Request) -> Response:
        """Answers only once the decision is committed; a retry replays it."""
        recorded = await service(request).record(body)
        headers = {"Idempotent-Replay": "true"} if recorded.replayed else None
        return json_response(recorded.body, headers=headers)

    @app.post(
        "/outcomes",
        status_code=201,
        response_model=OutcomeResponse,
        responses={
            200: {"model": OutcomeResponse, "description": "Replay of a stored report"},
            **_errors(400, 403, 404, 409, 413, 415, 422),
        },
        dependencies=[outcomes],
        summary="Record a confirmed outcome (fraud or legitimate) of a stored "
        "transaction",
    )
    async def post_outcome(body: OutcomeRequest, request: Request) -> Response:
        """Append-only; the same outcome_id with the same fields is answered 200."""
        svc = service(request)
        try:
            recorded = await record_outcome(svc.storage, svc.history, body)
        except StorageUnavailable as exc:
            raise _not_stored("the outcome", exc) from exc
        if recorded.replayed:
            return json_response(recorded.body, headers={"Idempotent-Replay": "true"})
        return json_response(recorded.body, status=201)

    @app.get(
        "/transactions/{transaction_id}",
        response_model=TransactionRecord,
        responses=_errors(403, 404),
        dependencies=[outcome_reader],
        summary="A stored decision and its confirmed outcomes",
    )
    async def get_transaction(
        transaction_id: Annotated[str, Path(pattern=IDENTIFIER_PATTERN, max_length=64)],
        request: Request,
    ) -> Response:
        try:
            record = await transaction_record(service(request).storage, transaction_id)
        except StorageUnavailable as exc:
            raise _not_stored(None, exc) from exc
        return json_response(record)

    @app.post(
        "/risk/analyze",
        response_model=ScoreResponse,
        responses=_BODY_ERRORS,
        dependencies=[score],
        summary="Score a transaction without storing it",
    )
    async def analyze(body: TransactionRequest, request: Request) -> Response:
        (result,) = await service(request).evaluate([body])
        return json_response(result.model_dump(mode="json"))

    @app.post(
        "/risk/batch",
        response_model=BatchResponse,
        responses=_BODY_ERRORS,
        dependencies=[score],
        summary="Score up to MAX_BATCH_SIZE transactions in one call, without storing",
    )
    async def batch(body: BatchRequest, request: Request) -> Response:
        """Transaction ids must be unique within a batch."""
        if len(body.transactions) > settings.max_batch_size:
            raise ApiError(
                413,
                "batch_too_large",
                f"a batch holds at most {settings.max_batch_size} transactions, "
                f"got {len(body.transactions)}",
            )
        seen: dict[str, int] = {}
        for i, txn in enumerate(body.transactions):
            first = seen.get(txn.transaction_id)
            if first is not None:
                raise ApiError(
                    422,
                    "validation_error",
                    f"transaction_id {txn.transaction_id!r} appears twice in the batch",
                    [
                        {
                            "field": f"transactions.{i}.transaction_id",
                            "problem": f"duplicate of transactions.{first}",
                        }
                    ],
                )
            seen[txn.transaction_id] = i
        results = await service(request).evaluate(body.transactions)
        return json_response({"results": [r.model_dump(mode="json") for r in results]})

    async def _single(
        request: Request, body: TransactionRequest, model: str
    ) -> dict[str, Any]:
        svc = service(request)
        rows = await svc.feature_rows([body])
        try:
            if model == svc.scorer.anomaly_model:
                value, version = await svc.scorer.anomaly(rows)
            else:
                value, version = await svc.scorer.classify(rows)
        except ScoringUnavailable as exc:
            log.warning("%s unavailable: %s", model, exc)
            raise ApiError(
                503,
                "model_unavailable",
                f"model {model} is unavailable; no score was produced",
                headers={"Retry-After": "1"},
            ) from exc
        return {
            "transaction_id": body.transaction_id,
            "value": float(value[0]),
            "model_version": version,
            "processed_at": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
        }

    @app.post(
        "/anomaly/score",
        response_model=AnomalyResponse,
        responses=_BODY_ERRORS,
        dependencies=[score],
        summary="The autoencoder's anomaly score alone",
    )
    async def anomaly_score(body: TransactionRequest, request: Request) -> Response:
        out = await _single(request, body, service(request).scorer.anomaly_model)
        out["anomaly_score"] = out.pop("value")
        return json_response(out)

    @app.post(
        "/risk/classify",
        response_model=ClassifyResponse,
        responses=_BODY_ERRORS,
        dependencies=[score],
        summary="The classifier's fraud probability alone",
    )
    async def classify(body: TransactionRequest, request: Request) -> Response:
        out = await _single(request, body, service(request).scorer.classifier_model)
        out["risk_probability"] = out.pop("value")
        return json_response(out)

    @app.get(
        "/model/info",
        response_model=ModelInfoResponse,
        responses=_errors(403),
        dependencies=[operator],
        summary="Live model versions and feature schemas, from Triton",
    )
    async def model_info(request: Request) -> Response:
        """Versions ready in Triton; on disk and model cards with MODEL_REPOSITORY."""
        svc = service(request)
        await svc.scorer.refresh()
        disk = settings.model_repository

        def described(m: ModelState) -> dict[str, Any]:
            on_disk = training = None
            if disk is not None:
                on_disk = repository.versions_on_disk(disk, m.name)
                if m.live_version is not None:
                    training = repository.training_summary(disk, m.name, m.live_version)
            return {
                "live_version": m.live_version,
                "versions": m.versions,
                "versions_on_disk": on_disk,
                "failed_versions": m.failed,
                "feature_schema": m.feature_schema,
                "usable": m.usable,
                "problem": m.problem,
                "refused": m.refused,
                "training": training,
            }

        return json_response(
            {
                # The row computed per request (and stored with each decision);
                # each model gets the first columns, as many as its schema has.
                "feature_schema": WIDEST_SCHEMA_ID,
                "feature_names": list(SCHEMAS[WIDEST_SCHEMA_ID]),
                "policy_version": svc.policy.version,
                # When false, the versions below are the last ones seen.
                "triton_reachable": svc.scorer.reachable,
                "models": {name: described(m) for name, m in svc.scorer.models.items()},
            }
        )

    if settings.noop_route:

        @app.get("/noop", include_in_schema=False)
        async def noop() -> Response:
            """The web stack alone: the floor that benchmarks compare routes with."""
            return json_response({"ok": True})

    return app
