"""Each customer's history in Redis, updated with the functions training uses.

Per customer, a hash ``<prefix>hist:v1:<sha256(user_id)>`` holds the
``features.history.CustomerState`` as JSON (``s``) and a version (``v``); no
raw user id is stored. The one global feature, how often anyone paid this
exact amount in the last 7 days, reads per-day hashes
``<prefix>hist:v1:amounts:<day>`` keyed by amount in cents.

Applying a transaction writes the new state, a per-transaction marker holding
the history block it was scored with, and the amount counter in one Lua
script, only if the customer's state did not change since it was read
(compare-and-set on its version, retried on conflict). The amount count is
not part of the comparison: concurrent transactions of the same amount may
each read it without the other (sequential traffic, as the parity test
sends, gives exactly the offline value). A
transaction whose marker exists gets its stored block back and changes
nothing, so a retry or a replay never counts a transaction twice.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from redis.exceptions import RedisError

from features import history
from gateway.idempotency import connect
from gateway.limits import time_left
from gateway.metrics import HISTORY_CONFLICTS, HISTORY_OUT_OF_ORDER

log = logging.getLogger("gateway.history")

_DAY_S = 86_400
# A marker outlives any client retry or file replay we expect.
MARKER_TTL_S = 30 * _DAY_S
# A customer unseen this long starts afresh (longer than every window, and
# than the 180 days that "no previous transaction" stands for).
STATE_TTL_S = 400 * _DAY_S
# A day's amount counters serve the 7 days that follow it.
AMOUNTS_TTL_S = (history.DAY_BUCKETS_7D + 1) * _DAY_S
ATTEMPTS = 5

# KEYS: state, marker (or the state again when none), then the day hash of
# the transaction's amount counter (none for an outcome).
# ARGV: expected version, new state, marker value ('' for none), amount in
# cents, and the three TTLs (state, marker, amount counter).
# Returns 1 written, 0 conflict, -1 marker already there (nothing written).
# Only the customer's state is compared: the global amount counter is
# incremented whatever others did meanwhile, or every transaction of a common
# amount, whoever the customer, would conflict with every other.
_APPLY = """
local has_marker = ARGV[3] ~= ''
if has_marker and redis.call('EXISTS', KEYS[2]) == 1 then return -1 end
local version = tonumber(redis.call('HGET', KEYS[1], 'v') or '0')
if version ~= tonumber(ARGV[1]) then return 0 end
if #KEYS > 2 then
  redis.call('HINCRBY', KEYS[3], ARGV[4], 1)
  redis.call('EXPIRE', KEYS[3], ARGV[7])
end
redis.call('HSET', KEYS[1], 'v', version + 1, 's', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[5])
if has_marker then redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[6]) end
return 1
"""


# KEYS: state, marker (or the state again when none is wanted), then the 7
# day hashes of the amount counters. ARGV: amount in cents, '1' to read the
# marker. Returns {version, state, 7-day count of the amount, marker}.
_READ = """
local hv = redis.call('HMGET', KEYS[1], 'v', 's')
local count = 0
for i = 3, #KEYS do
  count = count + tonumber(redis.call('HGET', KEYS[i], ARGV[1]) or '0')
end
local marker = false
if ARGV[2] == '1' then marker = redis.call('GET', KEYS[2]) end
return {hv[1] or false, hv[2] or false, count, marker}
"""


class HistoryUnavailable(Exception):
    """Redis did not read or update a customer's history in time."""


@dataclass(frozen=True)
class _Read:
    version: int
    state: history.CustomerState | None
    amount_count: int
    applied: np.ndarray | None


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode("utf-8")).hexdigest()


def _block(raw: bytes) -> np.ndarray:
    return np.asarray(orjson.loads(raw)["block"], dtype=np.float32)


class HistoryStore:
    def __init__(
        self,
        url: str,
        *,
        key_prefix: str,
        timeout_s: float,
        budget_s: float,
    ) -> None:
        self._prefix = key_prefix + "hist:v1:"
        # The whole read-compute-write of one operation, retries included.
        self._budget_s = budget_s
        self._redis = connect(url, timeout_s)
        self._apply = self._redis.register_script(_APPLY)
        self._read_script = self._redis.register_script(_READ)

    async def close(self) -> None:
        await self._redis.aclose()

    def state_key(self, user_id: str) -> str:
        return self._prefix + _digest(user_id)

    def _marker_key(self, transaction_id: str) -> str:
        return self._prefix + "applied:" + _digest(transaction_id)

    def amount_key(self, day: int) -> str:
        """The hash of one day's exact-amount counters."""
        return f"{self._prefix}amounts:{day}"

    def _amount_keys(self, event: history.HistoryEvent) -> list[str]:
        """The day hashes of the 7-day amount window, the event's day first."""
        return [self.amount_key(event.day - i) for i in range(history.DAY_BUCKETS_7D)]

    async def _bounded(self, work: Any) -> Any:
        """Run ``work`` within the budget and the request's deadline."""
        try:
            async with asyncio.timeout(time_left(self._budget_s)):
                return await work
        except TimeoutError:
            raise HistoryUnavailable("history store did not answer in time") from None
        except (RedisError, OSError, ValueError, KeyError) as exc:
            raise HistoryUnavailable(str(exc) or type(exc).__name__) from exc

    async def apply(self, event: history.HistoryEvent) -> np.ndarray:
        """The history block of ``event``, its customer's state updated once."""
        return await self._bounded(self._apply_once(event))  # type: ignore[no-any-return]

    async def peek(self, events: Sequence[history.HistoryEvent]) -> np.ndarray:
        """The history blocks of ``events``, writing nothing: an applied
        transaction's stored block, else against the current state (as if it
        were the customer's next transaction)."""
        return await self._bounded(self._peek(events))  # type: ignore[no-any-return]

    async def apply_outcome(
        self,
        user_id: str,
        transaction_id: str,
        is_fraud: bool,
        *,
        reported_epoch: float,
        tiebreak: int,
    ) -> None:
        """The customer's history once this verdict on the transaction is known
        (kept only if it is later than the one the history holds)."""
        await self._bounded(
            self._apply_outcome(
                user_id, transaction_id, is_fraud, reported_epoch, tiebreak
            )
        )

    async def _read(self, event: history.HistoryEvent, marker: bool) -> _Read:
        # One script call instead of nine pipelined commands: the client's
        # per-command work was the gateway's largest CPU cost under load.
        state_key = self.state_key(event.user_id)
        marker_key = self._marker_key(event.transaction_id) if marker else state_key
        version, state, count, applied = await self._read_script(
            keys=[state_key, marker_key, *self._amount_keys(event)],
            args=[str(event.cents), "1" if marker else "0"],
        )
        return _Read(
            version=int(version or 0),
            state=history.CustomerState.from_json(state) if state else None,
            amount_count=int(count),
            applied=_block(applied) if applied else None,
        )

    async def _peek(self, events: Sequence[history.HistoryEvent]) -> np.ndarray:
        out = np.zeros((len(events), history.NUM_HISTORY_FEATURES), dtype=np.float32)
        for row, event in enumerate(events):
            read = await self._read(event, marker=True)
            if read.applied is not None:
                out[row] = read.applied
            else:
                out[row] = history.history_features(
                    read.state, event, read.amount_count
                )
        return out

    async def _apply_once(self, event: history.HistoryEvent) -> np.ndarray:
        marker_key = self._marker_key(event.transaction_id)
        for attempt in range(ATTEMPTS):
            read = await self._read(event, marker=True)
            if read.applied is not None:
                return read.applied
            block = history.history_features(read.state, event, read.amount_count)
            state = history.apply_transaction(read.state, event)
            marker = orjson.dumps({"block": [float(v) for v in block]})
            written = await self._apply(
                keys=[
                    self.state_key(event.user_id),
                    marker_key,
                    self.amount_key(event.day),
                ],
                args=[
                    read.version,
                    state.to_json(),
                    marker,
                    event.cents,
                    STATE_TTL_S,
                    MARKER_TTL_S,
                    AMOUNTS_TTL_S,
                ],
            )
            if written == 1:
                latest = read.state.latest if read.state is not None else None
                if latest is not None and event.epoch < latest:
                    HISTORY_OUT_OF_ORDER.inc()
                return block
            if written == -1:
                # Another request applied this transaction meanwhile.
                continue
            HISTORY_CONFLICTS.inc()
            log.debug("history conflict, attempt %d", attempt + 1)
        raise HistoryUnavailable(f"state kept changing over {ATTEMPTS} attempts")

    async def _apply_outcome(
        self,
        user_id: str,
        transaction_id: str,
        is_fraud: bool,
        reported_epoch: float,
        tiebreak: int,
    ) -> None:
        key = self.state_key(user_id)
        for _ in range(ATTEMPTS):
            version, raw = await self._redis.hmget(key, ["v", "s"])
            before = history.CustomerState.from_json(raw) if raw else None
            after = history.apply_outcome(
                before, transaction_id, is_fraud, reported_epoch, tiebreak
            )
            if before is not None and after.to_json() == before.to_json():
                return
            written = await self._apply(
                keys=[key, key],
                args=[int(version or 0), after.to_json(), "", 0, STATE_TTL_S, 0, 0],
            )
            if written == 1:
                return
            HISTORY_CONFLICTS.inc()
        raise HistoryUnavailable(f"state kept changing over {ATTEMPTS} attempts")
