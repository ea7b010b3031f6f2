"""The Faust app factory: settings in, a wired worker out (tables, agents, timers, web views)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import faust
from faust.types import TP
from prometheus_client import CollectorRegistry, PlatformCollector, ProcessCollector

from churnwatch.domain.alerts import AlertPolicy
from churnwatch.domain.churn import ChurnPolicy, period_figures
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import ring_days_needed
from churnwatch.domain.partition import ClosedPeriod, PartitionEngine
from churnwatch.domain.periods import period_of
from churnwatch.domain.retention import StateBounds
from churnwatch.domain.rules import WEIGHTS
from churnwatch.exceptions import ConfigError
from churnwatch.kafka_client import faust_credentials
from churnwatch.metrics import StateCollector, StateSummary, WorkerMetrics
from config import Settings
from streams.assignor import CopartitionedAssignor
from streams.codecs import CUSTOMER_CODEC, register_codecs
from streams.figures import FiguresSnapshot, StateTally, figures_snapshot
from streams.ingest import Backlog, Emitter, IngestBatch, PeriodSink, Rewinder, Topics
from streams.state import (
    ClockBook,
    DecodedRecords,
    PartitionIndex,
    ProducerChangelog,
    stored_customer,
    stored_customers,
)
from streams.topics import CUSTOMERS_TABLE
from streams.transport import App, seek


class FaustEmitter:
    """Emitter that hands records to Faust's producer (flushed before offsets commit)."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def send(
        self,
        topic: str,
        key: bytes | None,
        value: bytes | None,
        headers: list[tuple[str, bytes]] | None,
    ) -> None:
        await self._app.producer.send(topic, key, value, None, None, headers)

    async def flush(self) -> None:
        await self._app.producer.flush()


def never_commit(message: Any) -> None:
    """Keep a message's offset out of the next commit: Faust commits acked offsets of any
    partition, and this one's partition now belongs to another worker, which reads it from
    the committed offset. Marked acked before the stream acks it, Faust records nothing."""
    message.acked = True


class FaustRewinder:
    """Seeks Faust's consumer back; gives up only where retention removed the offsets."""

    def __init__(self, app: faust.App) -> None:
        self._app = app

    async def rewind(self, topic: str, partition: int, offset: int) -> bool:
        tp = TP(topic, partition)
        consumer = self._app.consumer
        earliest = (await consumer.earliest_offsets(tp)).get(tp) or 0
        if offset < earliest:
            return False
        await seek(self._app, tp, offset)
        return True


def owned_partitions(app: faust.App, topic: str) -> set[int]:
    """Partitions of `topic` the app actively owns right now (empty before an assignment)."""
    try:
        actives = app.assignor.assigned_actives()
    except Exception:  # before the first assignment the assignor has nothing to say
        return set()
    return {tp.partition for tp in actives if tp.topic == topic}


def group_coordinator_known(app: faust.App) -> bool:
    """Whether the consumer knows its group's coordinator. aiokafka forgets it when a request
    to it fails, and finds it again only once a broker answers: while the cluster is out of
    reach this says so, where Faust's own state (assignment, not rebalancing) stays unchanged.
    Private names of the pinned faust-streaming and aiokafka (tests/fault checks them)."""
    consumer = getattr(getattr(app.consumer, "_thread", None), "_consumer", None)
    coordinator = getattr(consumer, "_coordinator", None)
    return getattr(coordinator, "coordinator_id", None) is not None


class FaustBacklog:
    """Backlog from the consumer's last known highwater of each topic-partition.

    Before a fetch response names a partition's highwater, it is unknown: assume there is more
    to read, for `UNKNOWN_GRACE_SECONDS`. A partition read to its end before this worker owned
    it can stay unknown (no records come back), and must not hold the clock back for good.
    Asking the broker instead would go through the consumer's thread, which a rebalance may be
    holding while it waits for this very batch.
    """

    UNKNOWN_GRACE_SECONDS = 5.0

    def __init__(self, app: faust.App) -> None:
        self._app = app
        self._earliest: dict[TP, int] = {}
        self._unknown_since: dict[TP, float] = {}

    async def unread(self, topic: str, partition: int, next_offset: int | None) -> bool:
        tp = TP(topic, partition)
        consumer = self._app.consumer
        highwater: int | None = consumer.highwater(tp)  # None before a fetch answered
        if highwater is None:
            since = self._unknown_since.setdefault(tp, time.monotonic())
            return time.monotonic() - since < self.UNKNOWN_GRACE_SECONDS
        self._unknown_since.pop(tp, None)
        if next_offset is None:  # nothing processed here yet: reading starts at the earliest
            if tp not in self._earliest:
                earliest = await consumer.earliest_offsets(tp)
                self._earliest[tp] = earliest.get(tp) or 0
            next_offset = self._earliest[tp]
        return bool(highwater > next_offset)


@dataclass
class Worker:
    """Everything a running worker holds; agents and views reach it through here."""

    app: faust.App
    settings: Settings
    registry: CollectorRegistry
    metrics: WorkerMetrics
    input_topics: Any
    customers: Any
    clocks: ClockBook
    index: PartitionIndex
    engine: PartitionEngine
    ingest: IngestBatch
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    agents: dict[str, Any] = field(default_factory=dict)
    figures: FiguresSnapshot = field(default_factory=FiguresSnapshot)
    tally: StateTally = field(default_factory=lambda: StateTally(0, ()))  # none yet
    refreshed_at: float | None = None  # when the last refresh_figures began (wall clock)
    refresh_seconds: float | None = None  # how long it took

    def owned_partitions(self) -> set[int]:
        """Partitions of the usage topic this worker actively owns right now."""
        return owned_partitions(self.app, self.settings.topics.usage)

    def settled(self) -> bool:
        """Not rebalancing nor restoring tables: the owned state is complete."""
        return not (self.app.rebalancing or self.app.in_recovery)

    def connected(self) -> bool:
        """The consumer group's coordinator is known: the broker answers."""
        return group_coordinator_known(self.app)

    def customer(self, customer_id: str) -> CustomerState | None:
        """A customer's record, decoded (None: not tracked by this worker)."""
        return stored_customer(self.customers, customer_id)

    def customers_in(self, partition: int) -> Iterator[CustomerState]:
        """The records of a partition, read through the batches' decoded records: call it
        holding `lock`, as those are exact only between batches."""
        return stored_customers(self.customers, self.index, partition, self.ingest.decoded)

    def refresh_figures(self) -> None:
        """Recount the churn figures and the at-risk and active gauges of the owned partitions
        (a timer calls this, not a scrape): one pass, every record read once, one at a time."""
        if not self.settled():
            return  # keep the last complete figures while state is being restored
        started, counted_at = time.monotonic(), time.time()
        owned = self.owned_partitions()
        watermarks = self.clocks.watermarks(owned)
        tally = StateTally(self.settings.churn.activity_window_days, self.engine.segment_by)

        def counted(partition: int) -> Iterator[CustomerState]:
            return tally.counting(self.customers_in(partition), watermarks.get(partition))

        self.figures = figures_snapshot(self.engine, counted, watermarks)
        for partition in owned - watermarks.keys():
            tally.add(self.customers_in(partition), None)
        self.tally = tally
        self.refreshed_at = counted_at
        self.refresh_seconds = time.monotonic() - started

    async def reconcile_periods(self) -> None:
        """Record the last closed period of owned partitions not in the store yet.

        Covers a close whose write failed, and a restart: the period's history is still in
        the customers' records, so its figures can be counted again (an idempotent upsert).
        """
        if not self.settled():
            return
        for partition in self.owned_partitions():
            watermark = self.clocks.get(partition).watermark
            if watermark is None:
                continue
            closed = period_of(watermark, self.engine.granularity).previous()
            if (partition, closed.label) in self.ingest.recorded:
                continue
            customers = list(self.customers_in(partition))
            figures = period_figures(
                customers, closed.start, closed.end, self.engine.policy, self.engine.segment_by
            )
            await self.ingest.record_period(ClosedPeriod(partition, closed, figures))

    def summarize(self) -> StateSummary:
        """The state gauges at scrape time: customers tracked now (from the index), the rest as
        of the last `refresh_figures` (decoding every record is no work for a scrape)."""
        owned = self.owned_partitions()
        tally = self.tally
        cap = self.engine.bounds.max_customers
        return StateSummary(
            customers_tracked=sum(len(self.index.customers(p)) for p in owned),
            customers_limit=None if cap is None else cap * len(owned),
            customers_at_risk=tally.at_risk,
            at_risk_by_reason=tally.by_reason,
            at_risk_by_severity=tally.by_severity,
            at_risk_mrr_by_severity=tally.mrr_by_severity,
            active_by_segment=tally.active,
            watermarks=self.clocks.watermarks(owned),
            wall_clock=time.time(),
            figures=self.figures,
            refreshed_at=self.refreshed_at,
            refresh_seconds=self.refresh_seconds,
        )


def partition_engine(settings: Settings) -> PartitionEngine:
    """The rules, time, churn and bounds settings every partition of a worker shares."""
    return PartitionEngine(
        thresholds=settings.rules,
        allowed_lateness=settings.allowed_lateness_seconds,
        ring_days=ring_days_needed(
            max(
                settings.churn.activity_window_days,
                *(
                    window
                    for rules in (
                        settings.rules,
                        *(
                            entry.apply_to(settings.rules)
                            for entry in settings.alerts.segment_rules
                        ),
                    )
                    for window in (
                        rules.recent_days + rules.baseline_days,
                        rules.inactive_days,
                        rules.low_engagement_window_days,
                    )
                ),
            ),
            settings.allowed_lateness_seconds,
        ),
        granularity=settings.churn.period,
        policy=ChurnPolicy(
            count_intra_period=settings.churn.count_intra_period,
            involuntary_after_days=settings.churn.involuntary_after_days,
            activity_window_days=settings.churn.activity_window_days,
        ),
        segment_by=settings.churn.segment_by,
        alert_policy=alert_policy(settings),
        weights=WEIGHTS | settings.alerts.weights,
        segment_thresholds=tuple(
            (tuple(sorted(entry.match.items())), entry.apply_to(settings.rules))
            for entry in settings.alerts.segment_rules
        ),
        dedupe_horizon=settings.limits.dedupe_horizon_seconds,
        dedupe_max_ids=settings.limits.dedupe_max_ids,
        bounds=StateBounds(
            retention_days=settings.state.retention_days,
            max_customers=settings.state.max_customers_per_partition,
        ),
        sweep_decoded_max=settings.state.sweep_decoded_max,
    )


PRODUCER_BATCH_BYTES = 512 * 1024


def stream_settings(settings: Settings) -> dict[str, Any]:
    """The Faust settings that decide how fast the worker consumes (and the benchmark's
    Faust floor, benchmarks/faust_floor.py, runs with the same)."""
    return {
        "fetch_max_wait_ms": settings.fetch_max_wait_ms,
        "consumer_auto_offset_reset": "earliest",
        "producer_linger": 0.005,
        # A batch ends by handing ~1,000 records to the producer and flushing. At Faust's
        # 16 KiB a partition's batch holds ~50 of them, and the next waits until the sender
        # has taken it: a flush of 1,000 ~300 B records took 23-33 ms and 13-15 ms of CPU
        # (aiokafka against the embedded broker), 10 ms and 8 ms with 256 KiB or 1 MiB. 512 KiB
        # holds a whole batch's records for one partition (a worker may own just one), under
        # the broker's and the consumers' 1 MB limits (message.max.bytes, max fetch size).
        "producer_max_batch_size": PRODUCER_BATCH_BYTES,
        "broker_max_poll_records": settings.batch_max_events,
        "stream_buffer_maxsize": max(32_768, 2 * settings.batch_max_events),
        # Not waiting for streams on revoke: tried (Faust's default) and measured no better on
        # the two-worker test, and it would tie every hand-over to the alert sink's and the
        # notifier's retries (a database or webhook outage would stall the whole group).
        "stream_wait_empty": False,
        "broker_session_timeout": 10.0,
        "broker_heartbeat_interval": 1.0,
    }


def create_worker(
    settings: Settings,
    registry: CollectorRegistry | None = None,
    emitter: Emitter | None = None,
    periods: PeriodSink | None = None,
    backlog: Backlog | None = None,
    owned: Callable[[], set[int]] | None = None,
    rewinder: Rewinder | None = None,
) -> Worker:
    """Build the Faust app and everything it runs, without starting anything.

    `emitter` replaces Faust's producer for alerts and dead letters, `periods` the SQL store
    of closed periods, `backlog` the consumer's view of unread messages, `owned` the
    assignment, `rewinder` the consumer's seek (agent tests, where no consumer runs).
    """
    register_codecs()
    if registry is None:
        registry = CollectorRegistry()
        ProcessCollector(registry=registry)
        PlatformCollector(registry=registry)
    app = App(
        settings.app_id,
        broker=settings.broker_url,
        broker_credentials=faust_credentials(settings.kafka),
        store=settings.store,
        datadir=str(settings.data_dir),
        topic_partitions=settings.partitions,
        topic_replication_factor=settings.replication_factor,
        web_port=settings.web_port,
        web_bind=settings.web_bind,
        web_host=settings.web_host,
        PartitionAssignor=CopartitionedAssignor,
        **stream_settings(settings),
    )
    input_topics = app.topic(
        settings.topics.usage,
        settings.topics.billing,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=settings.partitions,
    )
    customers = _table(app, CUSTOMERS_TABLE, CUSTOMER_CODEC, settings.partitions)
    clocks = ClockBook(customers)
    index = PartitionIndex(customers)
    metrics = WorkerMetrics(registry)
    engine = partition_engine(settings)
    topics = settings.topics
    ingest = IngestBatch(
        engine=engine,
        customers=customers,
        clocks=clocks,
        index=index,
        limits=settings.limits,
        topics=Topics(
            topics.usage, topics.billing, topics.alerts, topics.dead_letters, topics.health
        ),
        emitter=emitter or FaustEmitter(app),
        periods=periods or default_period_sink(settings),
        backlog=backlog or FaustBacklog(app),
        metrics=metrics,
        owned=owned or (lambda: owned_partitions(app, topics.usage)),
        uncommittable=never_commit,
        rewinder=rewinder or FaustRewinder(app),
        # Straight to the producer, unless tests replaced it (then as Faust sends).
        changelog=ProducerChangelog(customers) if emitter is None else None,
        decoded=DecodedRecords(settings.state.decoded_cache_max),
    )
    worker = Worker(
        app=app,
        settings=settings,
        registry=registry,
        metrics=metrics,
        input_topics=input_topics,
        customers=customers,
        clocks=clocks,
        index=index,
        engine=engine,
        ingest=ingest,
    )
    registry.register(
        StateCollector(
            worker.summarize, settings.churn.segment_by, settings.churn.max_segment_values
        )
    )

    from agents import install_all  # agents import this module's Worker: keep the cycle late

    install_all(worker)
    return worker


def alert_policy(settings: Settings) -> AlertPolicy:
    """The lifecycle and severity settings as the domain takes them."""
    alerts = settings.alerts
    unknown = set(alerts.weights) - set(WEIGHTS)
    if unknown:
        raise ConfigError(f"alerts.weights names unknown reasons: {sorted(unknown)}")
    return AlertPolicy(
        warning_score=alerts.warning_score,
        critical_score=alerts.critical_score,
        high_mrr=alerts.high_mrr,
        escalation_step=alerts.escalation_step,
        resolve_after_days=alerts.resolve_after_days,
        cooldown_days=alerts.cooldown_days,
    )


def _table(app: faust.App, name: str, value_serializer: str, partitions: int) -> Any:
    """A table with raw string keys and the given value codec.

    Faust derives serializers from Record types; these tables hold plain objects, so the
    serializers are set here, before the store exists (it is made lazily), and the changelog
    topic, already made when the table was registered, is made again with them: recovery
    decodes the changelog through that topic (faust-streaming is pinned for this).
    """
    table: Any = app.Table(name, key_type=str, partitions=partitions)
    table.key_serializer = "raw"
    table.value_serializer = value_serializer
    # Faust's own changelog topics send with acks=0: a write "flushed" before a rebalance may
    # not be in the log yet when the partition's next owner reads it to its end, and is lost.
    table.changelog_topic = app.topic(
        table._changelog_topic_name(),
        key_type=str,
        key_serializer="raw",
        value_serializer=value_serializer,
        partitions=partitions,
        compacting=True,
        acks=True,
        internal=True,
        maxsize=131_072,
        allow_empty=True,
    )
    return table


class MemoryPeriodSink:
    """Keeps closed periods in memory (tests; workers without a database)."""

    def __init__(self) -> None:
        self.closed: list[ClosedPeriod] = []

    async def record(self, closed: ClosedPeriod) -> bool:
        self.closed.append(closed)
        return True


def default_period_sink(settings: Settings) -> PeriodSink:
    """The SQL store named by the settings (migrated to the current schema on start)."""
    from streams.periods import SqlPeriodSink

    return SqlPeriodSink.from_settings(settings)
