"""Prometheus metrics of one worker, registered on a registry that is passed in.

Label values are bounded: topics, reason codes, statuses and partition numbers; never a
customer id. Gauges describing state (customers tracked, at risk) are computed at scrape time
from the partitions this worker owns, so the sum over workers counts every customer once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector


@dataclass(frozen=True, slots=True)
class StateSummary:
    """What the state gauges show, as computed from the owned partitions."""

    customers_tracked: int = 0
    customers_at_risk: int = 0
    at_risk_by_reason: Mapping[str, int] = field(default_factory=dict)
    watermarks: Mapping[int, float] = field(default_factory=dict)  # partition -> epoch seconds
    wall_clock: float = 0.0


class WorkerMetrics:
    """Counters and histograms of the processing path; state gauges via `StateCollector`."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.events_processed = Counter(
            "churnwatch_events_processed",
            "Input events applied to customer state.",
            ["topic"],
            registry=registry,
        )
        self.events_dead_lettered = Counter(
            "churnwatch_events_dead_lettered",
            "Input messages sent to the dead-letter topic, by reason.",
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
            "Messages skipped because their offset was already applied (redelivery).",
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

    def __init__(self, summarize: Callable[[], StateSummary]) -> None:
        self._summarize = summarize

    def collect(self) -> Iterable[Metric]:
        summary = self._summarize()
        yield _gauge(
            "churnwatch_customers_tracked",
            "Customers with state in the partitions this worker owns.",
            summary.customers_tracked,
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
        yield from _watermark_gauges(summary)


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
