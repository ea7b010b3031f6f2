"""The alert sink: transitions off the alerts topic into the SQL alert store, idempotently.

Batches are written in a database thread; Faust acks a batch after the body, so a crash
re-reads it and the store's (alert_id, status, event_time) key drops what it already has.
A malformed message is counted and logged (position, no payload) and skipped. A failing
database is retried with backoff, holding the batch: nothing is acked before it is stored.
"""

from __future__ import annotations

import asyncio
from collections import Counter as Tally
from collections.abc import Callable, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import structlog
from prometheus_client import CollectorRegistry, Counter
from sqlalchemy.exc import SQLAlchemyError

from churnwatch.exceptions import InvalidAlertError
from churnwatch.store.alerts import AlertStore, Transition, TransitionRecorder, decode_transition

if TYPE_CHECKING:
    from streams.app import Worker
    from streams.ingest import Message

log = structlog.get_logger(__name__)

RETRY_FIRST_SECONDS = 0.5
RETRY_MAX_SECONDS = 30.0
T = TypeVar("T")


class SinkMetrics:
    """What the sink did with each message; no customer or alert id as a label."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.written = Counter(
            "churnwatch_alert_sink_written",
            "Alert transitions the sink stored for the first time.",
            registry=registry,
        )
        self.duplicate = Counter(
            "churnwatch_alert_sink_duplicate",
            "Alert transitions already in the store (redelivered or re-sent), skipped.",
            registry=registry,
        )
        self.invalid = Counter(
            "churnwatch_alert_sink_invalid",
            "Alert messages that did not decode or validate, by reason (logged, skipped).",
            ["reason"],
            registry=registry,
        )
        self.store_errors = Counter(
            "churnwatch_alert_sink_store_errors",
            "Failed alert store calls (opening or writing), retried with backoff.",
            registry=registry,
        )


def install(worker: Worker, store: TransitionRecorder | None = None) -> None:
    """Register the sink on the worker's app; `store` defaults to `settings.database_url`."""
    settings = worker.settings
    metrics = SinkMetrics(worker.registry)
    topic = worker.app.topic(
        settings.topics.alerts,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    opened: list[TransitionRecorder] = [] if store is None else [store]

    @worker.app.agent(topic, name="alert_sink")
    async def alert_sink(stream: Any) -> None:
        """Take transitions in batches; the store opens (and migrates) on the first start."""
        if not opened:
            opened.append(await until_done(partial(open_store, settings.database_url), metrics))
        recorder = opened[0]
        async for events in stream.take_events(
            settings.batch_max_events, within=settings.batch_within_seconds
        ):
            transitions = decode_batch([event.message for event in events], metrics)
            if transitions:
                written = await until_done(partial(recorder.record, transitions), metrics)
                metrics.written.inc(written)
                metrics.duplicate.inc(len(transitions) - written)

    worker.agents["alert_sink"] = alert_sink


def open_store(url: str) -> AlertStore:
    """The SQL alert store, its schema upgraded (blocking: runs in a thread)."""
    store = AlertStore(url)
    try:
        store.migrate()
    except SQLAlchemyError:
        store.close()
        raise
    return store


def decode_batch(messages: Sequence[Message], metrics: SinkMetrics) -> list[Transition]:
    """Valid transitions of a batch; the rest counted and logged once per batch."""
    transitions: list[Transition] = []
    invalid: Tally[str] = Tally()
    first: Message | None = None
    for message in messages:
        try:
            transitions.append(decode_transition(message.value))
        except InvalidAlertError as exc:
            metrics.invalid.labels(exc.reason).inc()
            invalid[exc.reason] += 1
            first = first or message
            log.debug("alert_message_invalid", reason=exc.reason, detail=exc.detail)
    if first is not None:
        log.warning(
            "alert_messages_invalid",
            count=invalid.total(),
            reasons=dict(invalid),
            topic=first.topic,
            partition=first.partition,
            first_offset=first.offset,
        )
    return transitions


async def until_done(call: Callable[[], T], metrics: SinkMetrics) -> T:
    """Run a blocking store call in a thread; on a database error, retry with backoff."""
    delay = RETRY_FIRST_SECONDS
    while True:
        try:
            return await asyncio.to_thread(call)
        except SQLAlchemyError as exc:
            metrics.store_errors.inc()
            log.warning(
                "alert_store_failed",
                retry_in_seconds=delay,
                error=str(exc).splitlines()[0][:300],
            )
        await asyncio.sleep(delay)
        delay = min(delay * 2, RETRY_MAX_SECONDS)
