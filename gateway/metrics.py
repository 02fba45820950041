"""Prometheus metrics: latency per route, time per stage, decisions, degraded count.

With several uvicorn workers each process keeps its own counters; when
``PROMETHEUS_MULTIPROC_DIR`` is set (``python -m gateway`` sets it for
``WORKERS`` > 1) they are written to files there and ``/metrics`` sums them.
"""

from __future__ import annotations

import logging
import os
import re
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from fastapi import FastAPI, Response
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Histogram,
    generate_latest,
    multiprocess,
)
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STAGES = (
    "validation",
    "idempotency",
    "features",
    "history",
    "triton",
    "policy",
    "persistence",
)

# Seconds: from 100 us (a stage) up to the request deadline.
_BUCKETS = (
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
)

REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time from a request reaching the gateway to its answer being sent.",
    ["route", "method", "status"],
    buckets=_BUCKETS,
)
STAGE_SECONDS = Histogram(
    "gateway_stage_duration_seconds",
    "Time spent in each stage of scoring a transaction. validation: from the "
    "request reaching the gateway to the route's code (authentication, body, "
    "JSON, pydantic).",
    ["stage"],
    buckets=_BUCKETS,
)
DECISIONS = Counter(
    "gateway_decisions_total", "Decisions made, by outcome.", ["decision"]
)
DEGRADED = Counter(
    "gateway_degraded_total", "Decisions that fell back to the fail-safe."
)
HISTORY_UNAVAILABLE = Counter(
    "gateway_history_unavailable_total",
    "Customer-history reads or updates that Redis did not complete in time. "
    "consequence: degraded (a live model needed the history, the answer fell "
    "back to the fail-safe), scored (no live model needed it), outcome (an "
    "outcome was stored but not applied to the history).",
    ["consequence"],
)
HISTORY_CONFLICTS = Counter(
    "gateway_history_conflicts_total",
    "Customer-history updates retried because the state changed meanwhile.",
)
HISTORY_OUT_OF_ORDER = Counter(
    "gateway_history_out_of_order_total",
    "Transactions older than the latest one already in their customer's history.",
)
SCHEMA_RETRIES = Counter(
    "gateway_schema_retries_total",
    "Model calls repeated once after Triton refused the input shape and the "
    "model's feature schema was read again.",
    ["model"],
)
GROUP_COMMIT_ROWS = Histogram(
    "gateway_group_commit_rows",
    "Rows written by one INSERT of the group commit.",
    buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512),
)

_STAGE = {name: STAGE_SECONDS.labels(name) for name in STAGES}
access_log = logging.getLogger("gateway.access")
_request_start: ContextVar[float | None] = ContextVar("request_start", default=None)


@contextmanager
def stage(name: str) -> Iterator[None]:
    start = time.perf_counter()
    try:
        yield
    finally:
        _STAGE[name].observe(time.perf_counter() - start)


def validated() -> None:
    """Record the validation stage, once per request, when the route's code starts."""
    start = _request_start.get()
    if start is not None:
        _STAGE["validation"].observe(time.perf_counter() - start)
        _request_start.set(None)


_REQUEST_ID = re.compile(rb"[A-Za-z0-9._-]{1,64}")


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            # A client's id is kept only when it cannot forge log fields.
            if _REQUEST_ID.fullmatch(value):
                return str(value.decode("ascii"))
            break
    return uuid.uuid4().hex


class RequestObserver:
    """ASGI middleware: per request, its id echoed in ``X-Request-ID``, one
    access-log line and one latency observation labelled by route."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        start = time.perf_counter()
        token = _request_start.set(start)
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [
                    *message.get("headers", []),
                    (b"x-request-id", request_id.encode("ascii")),
                ]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            _request_start.reset(token)
            elapsed = time.perf_counter() - start
            route = scope.get("route")
            # Unmatched paths share one label, so scanners cannot grow the series.
            path = getattr(route, "path", None) or "unmatched"
            REQUEST_SECONDS.labels(path, scope["method"], str(status)).observe(elapsed)
            access_log.info(
                "request_id=%s method=%s path=%s status=%d latency_ms=%.2f",
                request_id,
                scope["method"],
                # Escaped, so a path cannot start a forged line of its own.
                scope["path"].encode("unicode_escape").decode("ascii"),
                status,
                elapsed * 1000,
            )


def render() -> Response:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        payload = generate_latest(registry)
    else:
        payload = generate_latest()
    return Response(payload, media_type=CONTENT_TYPE_LATEST)


def install(app: FastAPI) -> None:
    """Add the middleware (outermost) and the ``GET /metrics`` route."""
    app.add_middleware(RequestObserver)

    async def metrics() -> Response:
        return render()

    app.add_api_route(
        "/metrics",
        metrics,
        methods=["GET"],
        include_in_schema=False,
        summary="Prometheus metrics",
    )
