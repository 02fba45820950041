"""Per-customer history features: one code path for training and serving.

A customer's history is a small ``CustomerState`` (bucketed counts and sums,
first and latest time, a running mean of the log amount, the devices,
countries, categories and amounts seen, and the confirmed outcomes known so
far). Three pure functions work on it:

- ``history_features(state, event, amount_count_7d)``: the feature block of a
  transaction, from the state *before* it;
- ``apply_transaction(state, event)``: the state after it;
- ``apply_outcome(state, transaction_id, is_fraud, reported_epoch, tiebreak)``:
  the state once a confirmed outcome (chargeback, analyst verdict) is known;
  of several verdicts on one transaction the latest reported stands, whatever
  order they are applied in.

Offline, ``HistoryFold`` folds them over a time-ordered file, with outcomes
entering at the time they became known. Online, the gateway keeps each state
as JSON in Redis and calls the same functions, so the two cannot disagree.

The one global feature, how common the exact amount is across all customers
over the last 7 days, comes from per-day counters keyed by amount in cents
(``AmountCounts`` offline, Redis hashes online).

Everything here is deterministic in its inputs: floats round-trip exactly
through JSON (``repr``), and no wall clock is read.
"""

from __future__ import annotations

import heapq
import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from features import (
    epoch_seconds,
    normalise_category,
    normalise_country,
    normalise_device,
)

HISTORY_SCHEMA_NAME = "txn-history"
HISTORY_SCHEMA_VERSION = 1
HISTORY_SCHEMA_ID = f"{HISTORY_SCHEMA_NAME}-v{HISTORY_SCHEMA_VERSION}"

HISTORY_FEATURE_NAMES: tuple[str, ...] = (
    "hist_log_count_1h",
    "hist_log_count_24h",
    "hist_log_count_7d",
    "hist_log_sum_24h",
    "hist_log_sum_7d",
    "hist_log_seconds_since_prev",
    "hist_log_seconds_since_first",
    "hist_amount_vs_usual",
    "hist_is_first",
    "hist_new_device",
    "hist_new_country",
    "hist_new_category",
    "hist_same_amount_before",
    "hist_log_amount_count_7d_all",
    "hist_log_known_fraud",
    "hist_log_known_legit",
    "hist_known_fraud_share",
)
NUM_HISTORY_FEATURES = len(HISTORY_FEATURE_NAMES)

# 2: each remembered verdict carries its order key (format 1 is still read).
STATE_FORMAT = 2
_MINUTE = 60
_HOUR = 3_600
_DAY = 86_400
MINUTE_BUCKETS = 60  # the 1 h window, in 1-minute buckets
HOUR_BUCKETS_24H = 24
HOUR_BUCKETS_7D = 168  # the 24 h and 7 d windows, in 1-hour buckets
DAY_BUCKETS_7D = 7  # the global amount counters, in 1-day buckets
# "No previous transaction" reads as this long ago (about 180 days).
NO_PREVIOUS_S = 180.0 * _DAY
# The running mean of the log amount weighs the latest of this many equally.
USUAL_SPAN = 20
# Bounded memory per customer; the oldest entries go first.
MAX_SEEN_VALUES = 32
MAX_SEEN_AMOUNTS = 64
MAX_OUTCOMES = 256


def amount_cents(amount: float) -> int:
    """The exact amount as an integer number of cents."""
    return int(round(float(amount) * 100.0))


@dataclass(frozen=True)
class HistoryEvent:
    """The fields of a transaction that its customer's history needs."""

    user_id: str
    transaction_id: str
    amount: float
    epoch: float
    country: str
    device: str
    product_category: str

    @classmethod
    def of(
        cls,
        *,
        user_id: str,
        transaction_id: str,
        amount: float,
        epoch: float,
        country: str,
        device: str,
        product_category: str | None,
    ) -> HistoryEvent:
        """Normalised like the request-field encoding (case, blank category)."""
        return cls(
            user_id=user_id,
            transaction_id=transaction_id,
            amount=float(amount),
            epoch=float(epoch),
            country=normalise_country(country),
            device=normalise_device(device),
            product_category=normalise_category(product_category),
        )

    @classmethod
    def from_transaction(cls, transaction: Mapping[str, Any]) -> HistoryEvent:
        """From a mapping with the request's fields, as ``features.encode``
        takes them (amount as Decimal, float or string; timestamp as an aware
        datetime or RFC 3339 string; product_category optional)."""
        return cls.of(
            user_id=transaction["user_id"],
            transaction_id=transaction["transaction_id"],
            amount=float(transaction["amount"]),
            epoch=epoch_seconds(transaction["timestamp"]),
            country=transaction["country"],
            device=transaction["device"],
            product_category=transaction.get("product_category"),
        )

    @property
    def cents(self) -> int:
        return amount_cents(self.amount)

    @property
    def day(self) -> int:
        return int(self.epoch // _DAY)


# A confirmed outcome as remembered: (label, reported epoch, tiebreak).
Verdict = tuple[int, float, int]
# A verdict read from a format-1 state had no order key: it reads as reported
# at the epoch itself, before any outcome the gateway accepts.
LEGACY_REPORTED_EPOCH = 0.0
LEGACY_TIEBREAK = -1


def _order(verdict: Verdict) -> tuple[float, int, int]:
    """Later reported wins; then the larger tiebreak; then fraud, so that
    equal keys still give one answer."""
    label, reported, tiebreak = verdict
    return (reported, tiebreak, label)


@dataclass
class CustomerState:
    """What is kept of one customer; JSON round-trips it exactly."""

    count: int = 0
    first: float | None = None
    latest: float | None = None
    usual_log_amount: float = 0.0
    # bucket index -> [count, amount sum]
    minutes: dict[int, list[float]] = field(default_factory=dict)
    hours: dict[int, list[float]] = field(default_factory=dict)
    devices: list[str] = field(default_factory=list)
    countries: list[str] = field(default_factory=list)
    categories: list[str] = field(default_factory=list)
    amounts: list[int] = field(default_factory=list)
    known_fraud: int = 0
    known_legit: int = 0
    # transaction id -> the standing verdict (1 fraud, 0 legitimate) and its
    # order key: (label, reported epoch, tiebreak)
    outcomes: dict[str, Verdict] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "format": STATE_FORMAT,
                "count": self.count,
                "first": self.first,
                "latest": self.latest,
                "usual": self.usual_log_amount,
                "minutes": [[b, *v] for b, v in sorted(self.minutes.items())],
                "hours": [[b, *v] for b, v in sorted(self.hours.items())],
                "devices": self.devices,
                "countries": self.countries,
                "categories": self.categories,
                "amounts": self.amounts,
                "known_fraud": self.known_fraud,
                "known_legit": self.known_legit,
                # Sorted, so equal states give equal text whatever the order
                # their verdicts arrived in.
                "outcomes": {
                    tid: list(self.outcomes[tid]) for tid in sorted(self.outcomes)
                },
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, text: str | bytes) -> CustomerState:
        raw = json.loads(text)
        if raw.get("format") not in (1, STATE_FORMAT):
            raise ValueError(f"customer state format {raw.get('format')!r} unknown")
        outcomes: dict[str, Verdict] = {}
        for tid, value in raw["outcomes"].items():
            if raw["format"] == 1:
                value = [value, LEGACY_REPORTED_EPOCH, LEGACY_TIEBREAK]
            label, reported, tiebreak = value
            outcomes[str(tid)] = (int(label), float(reported), int(tiebreak))
        return cls(
            count=int(raw["count"]),
            first=raw["first"],
            latest=raw["latest"],
            usual_log_amount=float(raw["usual"]),
            minutes={int(b): [c, s] for b, c, s in raw["minutes"]},
            hours={int(b): [c, s] for b, c, s in raw["hours"]},
            devices=list(raw["devices"]),
            countries=list(raw["countries"]),
            categories=list(raw["categories"]),
            amounts=[int(a) for a in raw["amounts"]],
            known_fraud=int(raw["known_fraud"]),
            known_legit=int(raw["known_legit"]),
            outcomes=outcomes,
        )

    def copy(self) -> CustomerState:
        return CustomerState(
            count=self.count,
            first=self.first,
            latest=self.latest,
            usual_log_amount=self.usual_log_amount,
            minutes={b: list(v) for b, v in self.minutes.items()},
            hours={b: list(v) for b, v in self.hours.items()},
            devices=list(self.devices),
            countries=list(self.countries),
            categories=list(self.categories),
            amounts=list(self.amounts),
            known_fraud=self.known_fraud,
            known_legit=self.known_legit,
            outcomes=dict(self.outcomes),
        )


def _window(buckets: Mapping[int, list[float]], now: int, width: int) -> list[float]:
    """Count and sum of the buckets in (now - width, now]."""
    count = total = 0.0
    for bucket, (c, s) in buckets.items():
        if now - width < bucket <= now:
            count += c
            total += s
    return [count, total]


def history_features(
    state: CustomerState | None, event: HistoryEvent, amount_count_7d: int
) -> np.ndarray:
    """The history block of ``event``, from its customer's state before it.

    ``amount_count_7d``: transactions of any customer with this exact amount
    in the 7 daily buckets up to the event's day, before it.
    """
    out = np.zeros(NUM_HISTORY_FEATURES, dtype=np.float32)
    log_amount = math.log1p(event.amount)
    out[13] = math.log1p(max(amount_count_7d, 0))
    if state is None or state.count == 0:
        out[5] = math.log1p(NO_PREVIOUS_S)
        out[8] = 1.0
        out[9] = out[10] = out[11] = 1.0
        return out
    t = event.epoch
    count_1h, _ = _window(state.minutes, int(t // _MINUTE), MINUTE_BUCKETS)
    count_24h, sum_24h = _window(state.hours, int(t // _HOUR), HOUR_BUCKETS_24H)
    count_7d, sum_7d = _window(state.hours, int(t // _HOUR), HOUR_BUCKETS_7D)
    out[0] = math.log1p(count_1h)
    out[1] = math.log1p(count_24h)
    out[2] = math.log1p(count_7d)
    out[3] = math.log1p(sum_24h)
    out[4] = math.log1p(sum_7d)
    # An out-of-order arrival (older than the latest seen) reads as "just now".
    assert state.latest is not None and state.first is not None
    out[5] = math.log1p(max(t - state.latest, 0.0))
    out[6] = math.log1p(max(t - state.first, 0.0))
    out[7] = log_amount - state.usual_log_amount
    out[9] = float(event.device not in state.devices)
    out[10] = float(event.country not in state.countries)
    out[11] = float(event.product_category not in state.categories)
    out[12] = float(event.cents in state.amounts)
    known = state.known_fraud + state.known_legit
    out[14] = math.log1p(state.known_fraud)
    out[15] = math.log1p(state.known_legit)
    out[16] = state.known_fraud / known if known else 0.0
    return out


def _remember(values: list[Any], value: Any, limit: int) -> None:
    if value in values:
        values.remove(value)
    values.append(value)
    del values[:-limit]


def _add(buckets: dict[int, list[float]], bucket: int, amount: float) -> None:
    entry = buckets.setdefault(bucket, [0, 0.0])
    entry[0] += 1
    entry[1] += amount


def _prune(buckets: dict[int, list[float]], latest: int, keep: int) -> None:
    for bucket in [b for b in buckets if b <= latest - keep]:
        del buckets[bucket]


def apply_transaction(
    state: CustomerState | None, event: HistoryEvent
) -> CustomerState:
    """The customer's state once ``event`` has happened (a new object).

    An event far ahead of the others (a timestamp in the wrong year) becomes
    ``latest``: every bucket older than the windows before it is pruned, and
    events before it then count nothing in the windows (their own buckets are
    pruned on arrival) and read as "just now" after it, until real time
    passes it. Nothing here can tell a wrong time from a real one; the
    gateway refuses timestamps more than a day past its clock
    (``gateway.schemas.TRANSACTION_FUTURE_MARGIN``), and offline files are
    taken as given.
    """
    new = CustomerState() if state is None else state.copy()
    t = event.epoch
    new.count += 1
    new.first = t if new.first is None else min(new.first, t)
    new.latest = t if new.latest is None else max(new.latest, t)
    log_amount = math.log1p(event.amount)
    if new.count == 1:
        new.usual_log_amount = log_amount
    else:
        span = min(new.count, USUAL_SPAN)
        new.usual_log_amount += (log_amount - new.usual_log_amount) / span
    _add(new.minutes, int(t // _MINUTE), event.amount)
    _add(new.hours, int(t // _HOUR), event.amount)
    _prune(new.minutes, int(new.latest // _MINUTE), MINUTE_BUCKETS)
    _prune(new.hours, int(new.latest // _HOUR), HOUR_BUCKETS_7D)
    _remember(new.devices, event.device, MAX_SEEN_VALUES)
    _remember(new.countries, event.country, MAX_SEEN_VALUES)
    _remember(new.categories, event.product_category, MAX_SEEN_VALUES)
    _remember(new.amounts, event.cents, MAX_SEEN_AMOUNTS)
    return new


def apply_outcome(
    state: CustomerState | None,
    transaction_id: str,
    is_fraud: bool,
    reported_epoch: float,
    tiebreak: int = 0,
) -> CustomerState:
    """The state once a confirmed outcome of one of the customer's transactions
    is known (a new object).

    Of several verdicts on one transaction the one reported last stands (an
    analyst overturning a chargeback); equal ``reported_epoch``s go to the
    larger ``tiebreak`` (online the outcome's row id, so the order is the
    database's). A verdict older than the one kept changes nothing, so any
    order of the same calls gives the same state; the counts follow the
    standing verdicts.
    """
    new = CustomerState() if state is None else state.copy()
    verdict: Verdict = (int(bool(is_fraud)), float(reported_epoch), int(tiebreak))
    previous = new.outcomes.get(transaction_id)
    if previous is not None and _order(previous) >= _order(verdict):
        return new
    if previous is not None:
        if previous[0] == 1:
            new.known_fraud -= 1
        else:
            new.known_legit -= 1
    if verdict[0] == 1:
        new.known_fraud += 1
    else:
        new.known_legit += 1
    new.outcomes[transaction_id] = verdict
    if len(new.outcomes) > MAX_OUTCOMES:
        # Counts stay; only the memory of which transaction it was goes, the
        # earliest reported first.
        # Limitation: a later verdict on a forgotten transaction counts again,
        # and which one is forgotten depends on the order verdicts came in;
        # keeping every verdict (or a per-transaction key in Redis) would fix it.
        oldest = min(new.outcomes, key=lambda tid: (_order(new.outcomes[tid]), tid))
        del new.outcomes[oldest]
    return new


class AmountCounts:
    """Global per-day counters of exact amounts (the offline twin of the
    gateway's Redis hashes)."""

    def __init__(self) -> None:
        self._days: dict[int, dict[int, int]] = {}

    def count_7d(self, event: HistoryEvent) -> int:
        day, cents = event.day, event.cents
        return sum(
            self._days.get(d, {}).get(cents, 0)
            for d in range(day - DAY_BUCKETS_7D + 1, day + 1)
        )

    def days(self) -> dict[int, dict[int, int]]:
        """Day index -> {amount in cents: count}, the days still kept."""
        return {day: dict(counts) for day, counts in self._days.items()}

    def add(self, event: HistoryEvent) -> None:
        counts = self._days.setdefault(event.day, {})
        counts[event.cents] = counts.get(event.cents, 0) + 1
        for old in [d for d in self._days if d <= event.day - 2 * DAY_BUCKETS_7D]:
            del self._days[old]


@dataclass(frozen=True)
class Outcome:
    """A confirmed outcome, known from ``known_at`` on. ``tiebreak`` orders
    outcomes of one transaction known at the same moment (larger: later)."""

    known_at: float
    user_id: str
    transaction_id: str
    is_fraud: bool
    tiebreak: int = 0


class HistoryFold:
    """Every customer's state in memory, fed in time order (offline)."""

    def __init__(self) -> None:
        self.customers: dict[str, CustomerState] = {}
        self.amounts = AmountCounts()

    def score_and_apply(self, event: HistoryEvent) -> np.ndarray:
        state = self.customers.get(event.user_id)
        row = history_features(state, event, self.amounts.count_7d(event))
        self.customers[event.user_id] = apply_transaction(state, event)
        self.amounts.add(event)
        return row

    def outcome(self, outcome: Outcome) -> None:
        self.customers[outcome.user_id] = apply_outcome(
            self.customers.get(outcome.user_id),
            outcome.transaction_id,
            outcome.is_fraud,
            outcome.known_at,
            outcome.tiebreak,
        )


def fold(
    events: Sequence[HistoryEvent],
    outcomes: Iterable[Outcome] = (),
    into: HistoryFold | None = None,
) -> np.ndarray:
    """The history block of each event, in the order given.

    ``events`` must be in time order (ties in file order). An outcome is
    applied before every event strictly later than its ``known_at``, so a
    transaction never sees a label that was not yet known, its own included;
    outcomes known after the last event enter the state at the end (``into``
    keeps them for what follows).
    """
    state = into if into is not None else HistoryFold()
    pending: list[tuple[float, int, Outcome]] = []
    for i, o in enumerate(outcomes):
        if math.isfinite(o.known_at):
            pending.append((o.known_at, i, o))
    heapq.heapify(pending)
    out = np.zeros((len(events), NUM_HISTORY_FEATURES), dtype=np.float32)
    for row, event in enumerate(events):
        while pending and pending[0][0] < event.epoch:
            state.outcome(heapq.heappop(pending)[2])
        out[row] = state.score_and_apply(event)
    while pending:
        state.outcome(heapq.heappop(pending)[2])
    return out


def iter_events(
    user_id: Sequence[str],
    transaction_id: Sequence[str],
    amount: np.ndarray,
    epoch: np.ndarray,
    country: Sequence[str],
    device: Sequence[str],
    product_category: Sequence[str | None],
) -> Iterator[HistoryEvent]:
    for i in range(len(transaction_id)):
        yield HistoryEvent.of(
            user_id=user_id[i],
            transaction_id=transaction_id[i],
            amount=float(amount[i]),
            epoch=float(epoch[i]),
            country=country[i],
            device=device[i],
            product_category=product_category[i],
        )
