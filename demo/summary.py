"""Aggregating replay outcomes and printing them as a plain-text report."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

DECISIONS: tuple[str, ...] = ("APPROVE", "FLAG", "REVIEW")
OTHER_DECISION = "other"
LABEL_ROWS: tuple[str, ...] = ("fraud", "legit", "unlabelled")
SAMPLE_CHARS = 300


@dataclass(frozen=True)
class Outcome:
    """What happened to one request. ``status`` is None when no answer came."""

    transaction_id: str
    label: bool | None
    latency_s: float
    status: int | None
    decision: str | None = None
    degraded: bool = False
    replayed: bool = False
    error: str | None = None

    @property
    def ok(self) -> bool:
        if self.error is not None or self.status is None:
            return False
        return 200 <= self.status < 300

    @property
    def error_key(self) -> str:
        if self.status is None:
            return "no answer"
        if 200 <= self.status < 300:
            return f"{self.status} unreadable body"
        return str(self.status)


@dataclass
class ErrorGroup:
    count: int
    sample: str


def label_row(label: bool | None) -> str:
    if label is None:
        return "unlabelled"
    return "fraud" if label else "legit"


@dataclass
class Summary:
    decisions: Counter[str] = field(default_factory=Counter)
    by_label: dict[str, Counter[str]] = field(
        default_factory=lambda: {row: Counter() for row in LABEL_ROWS}
    )
    errors: dict[str, ErrorGroup] = field(default_factory=dict)
    latencies_s: list[float] = field(default_factory=list)
    degraded: int = 0
    replayed: int = 0
    total: int = 0
    elapsed_s: float = 0.0

    def add(self, outcome: Outcome) -> None:
        self.total += 1
        if outcome.status is not None:
            self.latencies_s.append(outcome.latency_s)

        if not outcome.ok:
            group = self.errors.get(outcome.error_key)
            if group is None:
                sample = (outcome.error or "")[:SAMPLE_CHARS]
                self.errors[outcome.error_key] = ErrorGroup(count=1, sample=sample)
            else:
                group.count += 1
            return

        decision = outcome.decision if outcome.decision in DECISIONS else None
        decision = decision or OTHER_DECISION
        self.decisions[decision] += 1
        self.by_label[label_row(outcome.label)][decision] += 1
        if outcome.degraded:
            self.degraded += 1
        if outcome.replayed:
            self.replayed += 1

    @property
    def failed(self) -> int:
        return sum(group.count for group in self.errors.values())

    @property
    def succeeded(self) -> int:
        return self.total - self.failed


def summarise(outcomes: Iterable[Outcome], elapsed_s: float = 0.0) -> Summary:
    summary = Summary(elapsed_s=elapsed_s)
    for outcome in outcomes:
        summary.add(outcome)
    return summary


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100) of values, interpolating between ranks."""
    if not values:
        raise ValueError("percentile of no values")
    if not 0 <= q <= 100:
        raise ValueError(f"percentile must be within 0..100, got {q}")

    ordered = sorted(values)
    position = (len(ordered) - 1) * q / 100
    lower = math.floor(position)
    upper = math.ceil(position)
    fraction = position - lower
    return ordered[lower] + (ordered[upper] - ordered[lower]) * fraction


def ratio(part: int, whole: int) -> str:
    if whole == 0:
        return "n/a (none)"
    return f"{part}/{whole} = {100 * part / whole:.1f}%"


def fraud_recall(summary: Summary) -> tuple[int, int]:
    """Labelled fraud that the gateway sent to FLAG or REVIEW, of all fraud."""
    fraud = summary.by_label["fraud"]
    caught = fraud["FLAG"] + fraud["REVIEW"]
    return caught, sum(fraud.values())


def legit_review_share(summary: Summary) -> tuple[int, int]:
    legit = summary.by_label["legit"]
    return legit["REVIEW"], sum(legit.values())


def latency_line(latencies_s: Sequence[float]) -> str:
    if not latencies_s:
        return "latency: no answers"
    ms = [value * 1000 for value in latencies_s]
    marks = ", ".join(f"p{q} {percentile(ms, q):.1f}" for q in (50, 95, 99))
    return f"latency ms: {marks}, max {max(ms):.1f}"


def decision_table(summary: Summary) -> list[str]:
    columns = list(DECISIONS)
    if summary.decisions[OTHER_DECISION]:
        columns.append(OTHER_DECISION)

    header = f"{'':<12}" + "".join(f"{c:>9}" for c in columns) + f"{'total':>9}"
    lines = [header]
    for row in LABEL_ROWS:
        counts = summary.by_label[row]
        cells = "".join(f"{counts[c]:>9}" for c in columns)
        lines.append(f"{row:<12}{cells}{sum(counts.values()):>9}")
    return lines


def format_summary(summary: Summary, concurrency: int) -> str:
    seconds = summary.elapsed_s
    rate = summary.total / seconds if seconds > 0 else 0.0
    lines = [
        f"requests: {summary.total} in {seconds:.2f} s ({rate:.1f}/s) "
        f"at concurrency {concurrency}; {summary.succeeded} answered, "
        f"{summary.failed} failed",
        latency_line(summary.latencies_s),
        "decisions: "
        + ", ".join(f"{d} {summary.decisions[d]}" for d in DECISIONS)
        + (
            f", {OTHER_DECISION} {summary.decisions[OTHER_DECISION]}"
            if summary.decisions[OTHER_DECISION]
            else ""
        )
        + f"; degraded {summary.degraded}",
    ]

    if summary.replayed:
        lines.append(
            f"note: {summary.replayed} answers were stored before and replayed, "
            "not scored now (these transaction ids were sent earlier)"
        )
    if summary.degraded:
        lines.append(
            f"warning: {summary.degraded} answers are degraded: the fail-safe "
            "decided, not the models (is Triton up?)"
        )

    if summary.errors:
        lines.append("errors:")
        for key, group in sorted(summary.errors.items()):
            lines.append(f"  {key}: {group.count}  sample: {group.sample}")
    else:
        lines.append("errors: none")

    lines.append("")
    lines.append("decisions by label:")
    lines.extend(decision_table(summary))
    lines.append("fraud recall (FLAG+REVIEW): " + ratio(*fraud_recall(summary)))
    lines.append("legit sent to REVIEW: " + ratio(*legit_review_share(summary)))
    return "\n".join(lines)
