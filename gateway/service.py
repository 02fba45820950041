"""Scoring and recording decisions: the path of one transaction."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import numpy as np

import features
from features.history import HistoryEvent
from features.schemas import BASIC_SCHEMA_ID, WIDEST_SCHEMA_ID
from gateway.errors import ApiError
from gateway.history import HistoryStore, HistoryUnavailable
from gateway.idempotency import Claimed, IdempotencyStore, Seen, Unavailable
from gateway.metrics import (
    DECISIONS,
    DEGRADED,
    HISTORY_UNAVAILABLE,
    stage,
    validated,
)
from gateway.policy import Policy
from gateway.schemas import ScoreResponse, TransactionRequest
from gateway.storage import Storage, StorageUnavailable, StoredDecision
from gateway.triton import Features, Scores, ScoringUnavailable, TritonScorer

log = logging.getLogger("gateway.service")

_POLL_S = 0.01


@dataclass(frozen=True)
class Recorded:
    body: dict[str, Any]
    replayed: bool


@dataclass(frozen=True)
class Assessed:
    """A decision and the feature row it was made from."""

    response: ScoreResponse
    features: np.ndarray
    feature_schema: str


def _conflict(transaction_id: str) -> ApiError:
    return ApiError(
        409,
        "idempotency_conflict",
        f"transaction_id {transaction_id!r} was already used with a different payload",
        [{"field": "transaction_id", "problem": "already used with another payload"}],
    )


class ScoringService:
    def __init__(
        self,
        scorer: TritonScorer,
        storage: Storage,
        idempotency: IdempotencyStore,
        history: HistoryStore,
        policy: Policy,
        *,
        wait_for_duplicate_s: float,
    ) -> None:
        self.scorer = scorer
        self.storage = storage
        self.idempotency = idempotency
        self.history = history
        self.policy = policy
        self._wait_s = wait_for_duplicate_s
        # Transaction id -> (lock, holders): without Redis, duplicates in this
        # process queue here rather than each holding a pooled connection.
        self._local: dict[str, tuple[asyncio.Lock, list[int]]] = {}

    async def evaluate(self, requests: list[TransactionRequest]) -> list[ScoreResponse]:
        """Score transactions in one Triton call and apply the policy to each.

        Reads the customers' histories without adding these transactions to
        them: nothing is stored, and a later POST /transactions counts them.
        """
        return [a.response for a in await self._assess(requests, apply=False)]

    async def feature_rows(self, requests: list[TransactionRequest]) -> Features:
        """The rows of ``requests`` in the widest schema the history allows,
        reading the histories without changing them."""
        rows, why = await self._features(requests, apply=False)
        if why is not None:
            self._history_failed(why, "scored")
        return rows

    async def _features(
        self, requests: list[TransactionRequest], *, apply: bool
    ) -> tuple[Features, str | None]:
        """The rows, and why the history block is missing from them, if it is."""
        with stage("features"):
            fields = [r.model_dump() for r in requests]
            basic = features.encode(fields)
        events = [HistoryEvent.from_transaction(f) for f in fields]
        try:
            with stage("history"):
                if apply:
                    blocks = np.stack([await self.history.apply(e) for e in events])
                else:
                    blocks = await self.history.peek(events)
        except HistoryUnavailable as exc:
            return Features(basic, BASIC_SCHEMA_ID), str(exc)
        widest = np.concatenate([basic, blocks], axis=1)
        return Features(widest, WIDEST_SCHEMA_ID), None

    def _history_failed(self, why: str, consequence: str) -> None:
        HISTORY_UNAVAILABLE.labels(consequence).inc()
        log.warning("customer history unavailable (%s): %s", consequence, why)

    async def _assess(
        self, requests: list[TransactionRequest], *, apply: bool
    ) -> list[Assessed]:
        """Score with every model in the schema it speaks; ``apply`` adds the
        transactions to their customers' histories (once each)."""
        validated()
        rows, why = await self._features(requests, apply=apply)
        try:
            if why is not None:
                if self.scorer.needs_history():
                    self._history_failed(why, "degraded")
                    raise ScoringUnavailable(f"history features unavailable: {why}")
                self._history_failed(why, "scored")
            with stage("triton"):
                scores = await self.scorer.score(rows)
        except ScoringUnavailable as exc:
            log.warning(
                "scoring degraded to fail-safe %s: %s", self.policy.failsafe, exc
            )
            DEGRADED.inc(len(requests))
            DECISIONS.labels(self.policy.failsafe.value).inc(len(requests))
            responses = [self._failsafe(r) for r in requests]
        else:
            with stage("policy"):
                responses = self._decide(requests, scores)
            for response in responses:
                DECISIONS.labels(response.decision.value).inc()
        return [
            Assessed(response, row, rows.schema)
            for response, row in zip(responses, rows.matrix, strict=True)
        ]

    def _decide(
        self, requests: list[TransactionRequest], scores: Scores
    ) -> list[ScoreResponse]:
        processed_at = datetime.now(UTC)
        # The versions that computed these scores, as Triton reported them.
        versions = scores.versions
        return [
            ScoreResponse(
                transaction_id=r.transaction_id,
                anomaly_score=float(a),
                risk_probability=float(p),
                combined_score=self.policy.combined(float(a), float(p)),
                decision=self.policy.decide(float(a), float(p)),
                processed_at=processed_at,
                model_versions=versions,
                policy_version=self.policy.version,
                degraded=False,
            )
            for r, a, p in zip(requests, scores.anomaly, scores.risk, strict=True)
        ]

    def _failsafe(self, request: TransactionRequest) -> ScoreResponse:
        return ScoreResponse(
            transaction_id=request.transaction_id,
            anomaly_score=None,
            risk_probability=None,
            combined_score=None,
            decision=self.policy.failsafe,
            processed_at=datetime.now(UTC),
            # No model produced this decision.
            model_versions={},
            policy_version=self.policy.version,
            degraded=True,
        )

    async def record(self, request: TransactionRequest) -> Recorded:
        """Score and durably store a transaction once, however often it is sent."""
        validated()
        digest = request.payload_hash()
        deadline = time.monotonic() + self._wait_s
        while True:
            with stage("idempotency"):
                claim = await self.idempotency.claim(request.transaction_id, digest)
            if isinstance(claim, Seen):
                if claim.payload_sha256 != digest:
                    raise _conflict(request.transaction_id)
                if claim.response is not None:
                    return Recorded(claim.response, replayed=True)
                stored = await self._await_first(request.transaction_id, deadline)
                if stored is not None:
                    return self._replay(request, digest, stored)
                if time.monotonic() >= deadline:
                    raise _in_progress(request.transaction_id)
                continue
            if isinstance(claim, Unavailable):
                log.warning("idempotency cache unavailable: %s", claim.reason)
                return await self._record_serialised(request, digest, deadline)
            async with self._local_turn(request.transaction_id, deadline) as queued:
                if queued:
                    # A request that found Redis down may have stored it first.
                    stored = await self._fetch(request.transaction_id)
                    if stored is not None:
                        return self._replay(request, digest, stored)
                return await self._score_and_store(request, digest, claim)

    async def _record_serialised(
        self, request: TransactionRequest, digest: str, deadline: float
    ) -> Recorded:
        """Without Redis: PostgreSQL serialises the duplicates of one id.

        The advisory lock is held while the id is looked up, scored and
        inserted, so concurrent duplicates (in any gateway process) score once.
        """
        key = request.transaction_id
        async with self._local_turn(key, deadline):
            stored = await self._fetch(key)
            if stored is not None:
                return self._replay(request, digest, stored)
            try:
                async with self.storage.serialised(key) as locked:
                    stored = await locked.fetch(key)
                    if stored is not None:
                        return self._replay(request, digest, stored)
                    (assessed,) = await self._assess([request], apply=True)
                    response = assessed.response
                    with stage("persistence"):
                        inserted = await locked.insert(
                            request,
                            digest,
                            response,
                            features=assessed.features,
                            feature_schema=assessed.feature_schema,
                        )
            except StorageUnavailable as exc:
                raise _storage_unavailable(exc) from exc

        # Committed: the lock's transaction ended without an error.
        if not inserted:
            # A request on the Redis path stored it meanwhile: theirs stands.
            stored = await self._fetch(key)
            if stored is None:
                raise ApiError(500, "internal_error", "stored row vanished")
            return self._replay(request, digest, stored)
        body = response.model_dump(mode="json")
        await self.idempotency.complete(key, digest, body)
        return Recorded(body, replayed=False)

    @asynccontextmanager
    async def _local_turn(self, key: str, deadline: float) -> AsyncIterator[bool]:
        """This process's turn for ``key``: one request per id at a time.

        Yields whether another request of the same id came first.

        Both paths take it, so a request that finds Redis down cannot score an
        id that a request of this process is scoring on the Redis path.
        Limitation: across processes only the advisory lock serialises, and
        the Redis path does not take it; if Redis fails for some requests of
        an id and not others, two processes may each score it once (the
        unique key still keeps one row and one answer).
        """
        lock, holders = self._local.setdefault(key, (asyncio.Lock(), [0]))
        holders[0] += 1
        queued = holders[0] > 1 or lock.locked()
        try:
            try:
                async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                    await lock.acquire()
            except TimeoutError:
                raise _in_progress(key) from None
            try:
                yield queued
            finally:
                lock.release()
        finally:
            holders[0] -= 1
            if holders[0] == 0:
                del self._local[key]

    async def _await_first(
        self, transaction_id: str, deadline: float
    ) -> StoredDecision | None:
        """Wait for the request that holds the claim; its answer, or None."""
        while time.monotonic() < deadline:
            await asyncio.sleep(_POLL_S)
            seen = await self.idempotency.peek(transaction_id)
            if seen is None:
                # The claim was released or expired: the first request failed.
                return None
            if seen.response is not None:
                return StoredDecision(seen.payload_sha256, seen.response)
        return await self._fetch(transaction_id)

    def _replay(
        self, request: TransactionRequest, digest: str, stored: StoredDecision
    ) -> Recorded:
        if stored.payload_sha256 != digest:
            raise _conflict(request.transaction_id)
        return Recorded(stored.response, replayed=True)

    async def _fetch(self, transaction_id: str) -> StoredDecision | None:
        try:
            return await self.storage.fetch(transaction_id)
        except StorageUnavailable as exc:
            raise _storage_unavailable(exc) from exc

    async def _score_and_store(
        self,
        request: TransactionRequest,
        digest: str,
        claim: Claimed | Unavailable,
    ) -> Recorded:
        (assessed,) = await self._assess([request], apply=True)
        response = assessed.response
        try:
            with stage("persistence"):
                inserted = await self.storage.insert(
                    request,
                    digest,
                    response,
                    features=assessed.features,
                    feature_schema=assessed.feature_schema,
                )
        except StorageUnavailable as exc:
            if isinstance(claim, Claimed):
                await self.idempotency.release(request.transaction_id, digest)
            raise _storage_unavailable(exc) from exc

        if not inserted:
            # Someone stored this id first (Redis lost or expired): theirs stands.
            stored = await self._fetch(request.transaction_id)
            if stored is None:
                raise ApiError(500, "internal_error", "stored row vanished")
            return self._replay(request, digest, stored)

        body = response.model_dump(mode="json")
        with stage("idempotency"):
            await self.idempotency.complete(request.transaction_id, digest, body)
        return Recorded(body, replayed=False)


def _in_progress(transaction_id: str) -> ApiError:
    return ApiError(
        409,
        "in_progress",
        f"transaction_id {transaction_id!r} is being processed by another "
        "request; retry shortly",
        [{"field": "transaction_id", "problem": "being processed by another request"}],
        headers={"Retry-After": "1"},
    )


def _storage_unavailable(exc: Exception) -> ApiError:
    log.warning("storage unavailable: %s", exc)
    return ApiError(
        503,
        "storage_unavailable",
        "the decision could not be stored; nothing was recorded, retry later",
        headers={"Retry-After": "1"},
    )
