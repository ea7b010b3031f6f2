"""Prometheus metrics of one worker, registered on a registry that is passed in.

Label values are bounded: topics, reason codes, statuses and partition numbers; never a
customer id. Gauges describing state (customers tracked, at risk) are computed at scrape time
from the partitions this worker owns, so the sum over workers counts every customer once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from churnwatch.domain.churn import Figures

if TYPE_CHECKING:
    from streams.figures import FiguresSnapshot

OTHER = "other"
SEVERITY_LABELS = ("info", "warning", "critical")  # always exported, 0 when none


@dataclass(frozen=True, slots=True)
class StateSummary:
    """What the state gauges show, as computed from the owned partitions."""

    customers_tracked: int = 0
    customers_limit: int | None = None  # the cap over the owned partitions (None: no cap)
    customers_at_risk: int = 0
    at_risk_by_reason: Mapping[str, int] = field(default_factory=dict)
    at_risk_by_severity: Mapping[str, int] = field(default_factory=dict)
    at_risk_mrr_by_severity: Mapping[str, float] = field(default_factory=dict)  # currency units
    active_by_segment: Mapping[tuple[str, ...], int] = field(default_factory=dict)
    watermarks: Mapping[int, float] = field(default_factory=dict)  # partition -> epoch seconds
    wall_clock: float = 0.0
    figures: FiguresSnapshot | None = None
    refreshed_at: float | None = None  # when the at-risk, active and churn figures were counted
    refresh_seconds: float | None = None  # how long counting them took


class BoundedLabels:
    """Keeps a label's distinct values bounded: the first `limit` seen, then `other`."""

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._seen: set[str] = set()

    def __call__(self, value: str) -> str:
        if value in self._seen:
            return value
        if len(self._seen) < self._limit:
            self._seen.add(value)
            return value
        return OTHER


class WorkerMetrics:
    """Counters and histograms of the processing path; state gauges via `StateCollector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_processed = Counter(
            "churnwatch_events_processed",
            "Input events consumed and not dead-lettered (applied, duplicate or redelivered); "
            "each event of an envelope counts.",
            ["topic"],
            registry=registry,
        )
        self.events_dead_lettered = Counter(
            "churnwatch_events_dead_lettered",
            "Input events sent to the dead-letter topic, by reason (an envelope refused whole "
            "counts each event it held).",
            ["topic", "reason"],
            registry=registry,
        )
        self.events_late = Counter(
            "churnwatch_events_late",
            "Events older than their partition's watermark (dead-lettered with reason=late).",
            ["topic"],
            registry=registry,
        )
        self.events_redelivered = Counter(
            "churnwatch_events_redelivered",
            "Events skipped because their message's offset was already applied (redelivery).",
            ["topic"],
            registry=registry,
        )
        self.events_duplicate = Counter(
            "churnwatch_events_duplicate",
            "Events recognised as already applied (same event id: billing always, usage within "
            "limits.dedupe_horizon_seconds), counted once.",
            ["topic"],
            registry=registry,
        )
        self.envelopes = Counter(
            "churnwatch_envelopes",
            "Input messages that were envelopes (many events of one customer in one message).",
            ["topic"],
            registry=registry,
        )
        self.dedupe_forgotten = Counter(
            "churnwatch_dedupe_forgotten",
            "Usage event ids forgotten before the dedupe horizon, to stay within "
            "limits.dedupe_max_ids per customer.",
            registry=registry,
        )
        self.events_moved_away = Counter(
            "churnwatch_events_moved_away",
            "Messages left for a partition's new owner after a rebalance (read again there).",
            ["topic"],
            registry=registry,
        )
        self.events_deferred = Counter(
            "churnwatch_events_deferred",
            "Messages taken while a rebalance was under way, left to be read again after it.",
            ["topic"],
            registry=registry,
        )
        self.events_rewound = Counter(
            "churnwatch_events_rewound",
            "Messages put back because earlier ones of their partition had not been read: the "
            "consumer was moved back to the first missing offset (seen around rebalances).",
            ["topic"],
            registry=registry,
        )
        self.heartbeats = Counter(
            "churnwatch_heartbeats",
            "Heartbeat control messages received (each may advance its partition's event time).",
            ["topic"],
            registry=registry,
        )
        self.alerts = Counter(
            "churnwatch_alerts",
            "Alert transitions published, by status and primary reason.",
            ["status", "reason"],
            registry=registry,
        )
        self.customers_expired = Counter(
            "churnwatch_customers_expired",
            "Customers forgotten: not subscribed and idle for longer than the retention.",
            registry=registry,
        )
        self.period_record_failures = Counter(
            "churnwatch_period_record_failures",
            "Closed periods the SQL store refused (retried by the figures timer).",
            registry=registry,
        )
        self.batch_events = Histogram(
            "churnwatch_batch_events",
            "Messages per processed batch.",
            buckets=(1, 10, 100, 500, 1000, 2000, 4000, 8000, 16000),
            registry=registry,
        )
        self.batch_duration = Histogram(
            "churnwatch_batch_duration_seconds",
            "Time to process one batch, decode to state write.",
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
            registry=registry,
        )


class StateCollector(Collector):
    """Gauges read from the worker's state at scrape time."""

    def __init__(
        self,
        summarize: Callable[[], StateSummary],
        segment_by: Sequence[str] = (),
        max_segment_values: int = 50,
    ) -> None:
        self._summarize = summarize
        self._segment_by = tuple(segment_by)
        self._bounds = [BoundedLabels(max_segment_values) for _ in self._segment_by]

    def collect(self) -> Iterable[Metric]:
        summary = self._summarize()
        yield _gauge(
            "churnwatch_customers_tracked",
            "Customers with state in the partitions this worker owns.",
            summary.customers_tracked,
        )
        if summary.customers_limit is not None:
            yield _gauge(
                "churnwatch_customers_tracked_limit",
                "Most customers the owned partitions may track (events of new ones beyond it "
                "are dead-lettered with reason=capacity).",
                summary.customers_limit,
            )
        yield _gauge(
            "churnwatch_customers_at_risk",
            "Customers with an open alert.",
            summary.customers_at_risk,
        )
        by_reason = GaugeMetricFamily(
            "churnwatch_customers_at_risk_by_reason",
            "Customers with an open alert, by each reason it holds (a customer may hold several).",
            labels=["reason"],
        )
        for reason, count in sorted(summary.at_risk_by_reason.items()):
            by_reason.add_metric([reason], count)
        yield by_reason
        by_severity = GaugeMetricFamily(
            "churnwatch_customers_at_risk_by_severity",
            "Customers with an open alert, by the alert's severity.",
            labels=["severity"],
        )
        mrr = GaugeMetricFamily(
            "churnwatch_at_risk_mrr",
            "MRR (currency units) of subscribed customers with an open alert, by severity.",
            labels=["severity"],
        )
        for severity in SEVERITY_LABELS:
            by_severity.add_metric([severity], summary.at_risk_by_severity.get(severity, 0))
            mrr.add_metric([severity], summary.at_risk_mrr_by_severity.get(severity, 0.0))
        yield by_severity
        yield mrr
        active = GaugeMetricFamily(
            "churnwatch_customers_active",
            "Customers with usage in the activity window before their partition's watermark.",
            labels=list(self._segment_by),
        )
        counted: dict[tuple[str, ...], int] = {}
        for segment, count in summary.active_by_segment.items():
            key = tuple(bound(value) for bound, value in zip(self._bounds, segment, strict=True))
            counted[key] = counted.get(key, 0) + count
        for segment, count in sorted(counted.items()):
            active.add_metric(list(segment), count)
        yield active
        if summary.refreshed_at is not None and summary.refresh_seconds is not None:
            yield _gauge(
                "churnwatch_state_refreshed_timestamp_seconds",
                "When the last count of the at-risk, active and churn figures began (every "
                "churn.figures_interval_seconds at most; longer on big workers, see "
                "churnwatch_state_refresh_duration_seconds).",
                summary.refreshed_at,
            )
            yield _gauge(
                "churnwatch_state_refresh_duration_seconds",
                "How long the last count of the at-risk, active and churn figures took: "
                "O(customers); the next waits at least 9 times as long.",
                summary.refresh_seconds,
            )
        yield from _watermark_gauges(summary)
        if summary.figures is not None:
            yield from self._figure_gauges(summary.figures)

    def _figure_gauges(self, snapshot: FiguresSnapshot) -> Iterator[Metric]:
        """Numerators and denominators per period and segment; ratios are PromQL's job."""
        labels = ["period", *self._segment_by]
        families: dict[str, GaugeMetricFamily] = {}
        for item in fields(Figures):
            name, unit = _figure_metric(item.name)
            families[item.name] = GaugeMetricFamily(
                f"churnwatch_period_{name}", _FIGURE_HELP.get(item.name, name) + unit, labels=labels
            )
        start = GaugeMetricFamily(
            "churnwatch_period_start_timestamp_seconds", "Start of the period.", labels=["period"]
        )
        end = GaugeMetricFamily(
            "churnwatch_period_counted_until_timestamp_seconds",
            "Where counting stopped: the period end, or the watermark while it is open.",
            labels=["period"],
        )
        for period_name, view in snapshot.views.items():
            start.add_metric([period_name], view.period.start)
            end.add_metric([period_name], view.end)
            bounded: dict[tuple[str, ...], Figures] = {}
            for segment, figures in view.figures.items():
                key = tuple(
                    bound(value) for bound, value in zip(self._bounds, segment, strict=True)
                )
                bounded.setdefault(key, Figures()).add(figures)
            for segment, figures in sorted(bounded.items()):
                for item_name, value in figures.as_dict().items():
                    scale = 100 if item_name.endswith("_cents") else 1
                    families[item_name].add_metric([period_name, *segment], value / scale)
        yield start
        yield end
        yield from families.values()


def _figure_metric(field_name: str) -> tuple[str, str]:
    if field_name.endswith("_mrr_cents"):
        return field_name.removesuffix("_cents"), " (MRR, currency units)"
    return field_name, ""


_FIGURE_HELP = {
    "start_customers": "Customers subscribed at the period start",
    "end_customers": "Customers subscribed at the period end (or now)",
    "retained_customers": "Subscribed at start and end",
    "churned_customers": "Subscribed at start, not at end",
    "churned_involuntary_customers": "Churned while a payment was failing",
    "new_customers": "Subscribed at end, never before the start",
    "reactivated_customers": "Subscribed at end, not at start, subscribed some time before",
    "start_mrr_cents": "MRR at start of customers subscribed at start",
    "end_mrr_cents": "MRR at end of customers subscribed at end",
    "churned_mrr_cents": "MRR at start of churned customers",
    "downsell_mrr_cents": "MRR decreases of retained customers",
    "expansion_mrr_cents": "MRR increases of retained customers",
    "new_mrr_cents": "MRR at end of new customers",
    "reactivation_mrr_cents": "MRR at end of reactivated customers",
    "retained_end_mrr_cents": "MRR at end of retained customers",
    "start_active_customers": "Customers active (usage in the activity window) at the start",
    "churned_active_customers": "Active at the start, not at the end",
}


def _gauge(name: str, documentation: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, documentation, value=value)


def _watermark_gauges(summary: StateSummary) -> Iterator[Metric]:
    per_partition = GaugeMetricFamily(
        "churnwatch_partition_watermark_timestamp_seconds",
        "Event-time watermark of each owned partition (newest event time less lateness).",
        labels=["partition"],
    )
    for partition, watermark in sorted(summary.watermarks.items()):
        per_partition.add_metric([str(partition)], watermark)
    yield per_partition
    if summary.watermarks:
        yield _gauge(
            "churnwatch_watermark_lag_seconds",
            "Wall clock minus the oldest watermark of the owned partitions.",
            summary.wall_clock - min(summary.watermarks.values()),
        )
