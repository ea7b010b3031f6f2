"""Envelopes: many events of one customer in one message, each event judged on its own."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from churnwatch.domain.customer import CustomerState
from churnwatch.domain.envelopes import Envelope, EnvelopeError, decode_message
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits
from streams.app import Worker
from tests.unit.test_usage_agent import START, ListEmitter, Msg, plain_worker, sample_sum

LIMITS = EventLimits()


def event(customer: str, at: float, n: int = 0, **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"{customer}-{n}",
        "customer_id": customer,
        "occurred_at": at,
        "event_type": "api_call",
        "quantity": 2.0,
    } | extra


def envelope(customer: str, events: list[Any], **extra: Any) -> bytes:
    return orjson.dumps({"envelope": 1, "customer_id": customer, "events": events} | extra)


def test_a_single_event_decodes_to_its_object() -> None:
    raw = orjson.dumps(event("c-1", START))
    assert decode_message(raw, b"c-1", LIMITS) == event("c-1", START)


def test_an_envelope_decodes_with_its_events_unvalidated() -> None:
    decoded = decode_message(envelope("c-1", [event("c-1", START), 7]), b"c-1", LIMITS)
    assert decoded == Envelope("c-1", [event("c-1", START), 7])


@pytest.mark.parametrize(
    ("payload", "key", "reason", "events"),
    [
        ({"envelope": 2, "customer_id": "c-1", "events": [{}]}, b"c-1", "invalid_value", 1),
        ({"envelope": 1, "events": [{}, {}]}, b"c-1", "missing_field", 2),
        ({"envelope": 1, "customer_id": 5, "events": [{}]}, b"c-1", "wrong_type", 1),
        ({"envelope": 1, "customer_id": "c-1", "events": [{}, {}, {}]}, b"c-2", "key_mismatch", 3),
        ({"envelope": 1, "customer_id": "c-1"}, b"c-1", "missing_field", 1),
        ({"envelope": 1, "customer_id": "c-1", "events": {"a": 1}}, b"c-1", "wrong_type", 1),
        ({"envelope": 1, "customer_id": "c-1", "events": []}, b"c-1", "invalid_value", 1),
    ],
)
def test_an_unreadable_envelope_is_refused_whole_counting_its_events(
    payload: dict[str, Any], key: bytes, reason: str, events: int
) -> None:
    with pytest.raises(EnvelopeError) as refused:
        decode_message(orjson.dumps(payload), key, LIMITS)
    assert (refused.value.reason, refused.value.events) == (reason, events)


def test_envelopes_are_capped_by_count_and_bytes_single_events_by_their_own_limit() -> None:
    limits = EventLimits(max_envelope_events=3, max_envelope_bytes=4096, max_payload_bytes=512)
    with pytest.raises(EnvelopeError, match="4 events > limit 3"):
        decode_message(envelope("c-1", [{}] * 4), b"c-1", limits)
    with pytest.raises(InvalidEventError, match="limit 4096"):
        decode_message(envelope("c-1", [{"pad": "x" * 5000}]), b"c-1", limits)
    big_single = orjson.dumps(event("c-1", START, pad="x" * 600))
    with pytest.raises(InvalidEventError, match="limit 512"):
        decode_message(big_single, b"c-1", limits)
    assert isinstance(decode_message(envelope("c-1", [{"pad": "x" * 600}]), None, limits), Envelope)


def test_every_event_of_an_envelope_applies_and_a_bad_one_is_dead_lettered_alone(
    tmp_path: Path,
) -> None:
    emitter = ListEmitter()
    worker = plain_worker(tmp_path, emitter)
    topic = worker.settings.topics.usage
    events = [
        event("c-1", START, 0),
        event("c-1", START + 60, 1, quantity="lots"),  # wrong type
        event("c-2", START + 90, 2),  # another customer's event: key mismatch
        {"control": "heartbeat", "occurred_at": START},
        event("c-1", START + 120, 3),
    ]
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", envelope("c-1", events))]))

    state = worker.customer("c-1")
    assert state.events == 2
    assert state.usage_offset == 0
    dead = emitter.on(worker.settings.topics.dead_letters)
    found = [
        (
            dict(h or [])["churnwatch.source.index"],
            dict(h or [])["churnwatch.reason"],
            orjson.loads(v),
        )
        for _, v, h in dead
    ]
    assert found == [
        (b"1", b"wrong_type", events[1]),
        (b"2", b"key_mismatch", events[2]),
        (b"3", b"invalid_value", events[3]),
    ]
    assert sample_sum(worker, "churnwatch_events_processed_total") == 2
    assert sample_sum(worker, "churnwatch_events_dead_lettered_total") == 3
    assert sample_sum(worker, "churnwatch_envelopes_total") == 1


def test_a_refused_envelope_counts_every_event_it_held(tmp_path: Path) -> None:
    emitter = ListEmitter()
    worker = plain_worker(tmp_path, emitter)
    topic = worker.settings.topics.usage
    raw = envelope("c-1", [event("c-1", START, n) for n in range(4)])
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-9", raw)]))

    dead = emitter.on(worker.settings.topics.dead_letters)
    assert [value for _, value, _ in dead] == [raw]  # one dead letter: the message as sent
    assert sample_sum(worker, "churnwatch_events_dead_lettered_total") == 4
    assert sample_sum(worker, "churnwatch_events_processed_total") == 0


def test_a_redelivered_envelope_changes_nothing(tmp_path: Path) -> None:
    worker = plain_worker(tmp_path, ListEmitter())
    topic = worker.settings.topics.usage
    raw = envelope("c-1", [event("c-1", START + n, n) for n in range(5)])
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", raw)]))
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", raw)]))  # redelivered

    assert worker.customer("c-1").events == 5
    assert sample_sum(worker, "churnwatch_events_redelivered_total") == 5
    assert sample_sum(worker, "churnwatch_events_processed_total") == 10


def test_a_late_event_in_an_envelope_is_dead_lettered_on_its_own(tmp_path: Path) -> None:
    emitter = ListEmitter()
    worker = plain_worker(tmp_path, emitter)
    topic = worker.settings.topics.usage
    first = envelope("c-1", [event("c-1", START + 10 * 3600, 0)])
    second = envelope("c-2", [event("c-2", START, 1), event("c-2", START + 10 * 3600, 2)])
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", first)]))
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 1, b"c-2", second)]))

    dead = emitter.on(worker.settings.topics.dead_letters)
    assert [dict(h or [])["churnwatch.reason"] for _, _, h in dead] == [b"late"]
    assert dict(dead[0][2] or [])["churnwatch.source.index"] == b"0"
    assert worker.customer("c-2").events == 1
    assert sample_sum(worker, "churnwatch_events_late_total") == 1


@st.composite
def customer_events(draw: st.DrawFn) -> list[dict[str, Any]]:
    """Events of a few customers over a few days, each customer's in time order."""
    times = draw(st.lists(st.integers(0, 6 * 86_400), min_size=1, max_size=60))
    customers = draw(
        st.lists(st.sampled_from(["a", "b", "c"]), min_size=len(times), max_size=len(times))
    )
    repeats = draw(st.lists(st.booleans(), min_size=len(times), max_size=len(times)))
    out = []
    for n, (at, customer, repeat) in enumerate(zip(sorted(times), customers, repeats, strict=True)):
        out.append(event(customer, START + at, n))
        if repeat:  # a producer's retry: the same event again
            out.append(event(customer, START + at, n))
    return out


@settings(max_examples=40, deadline=None)
@given(events=customer_events(), size=st.integers(1, 7))
def test_envelopes_and_single_events_give_the_same_state(
    tmp_path_factory: pytest.TempPathFactory, events: list[dict[str, Any]], size: int
) -> None:
    singles = plain_worker(tmp_path_factory.mktemp("s"), ListEmitter())
    enveloped = plain_worker(tmp_path_factory.mktemp("e"), ListEmitter())
    topic = singles.settings.topics.usage
    one_by_one = [
        Msg(topic, 0, n, e["customer_id"].encode(), orjson.dumps(e)) for n, e in enumerate(events)
    ]
    # A producer buffering per customer, flushing `size` events (or when time moves on).
    grouped: list[Msg] = []
    buffer: list[dict[str, Any]] = []
    for e in [*events, {"customer_id": None}]:
        if buffer and (e["customer_id"] != buffer[0]["customer_id"] or len(buffer) == size):
            cid = buffer[0]["customer_id"]
            grouped.append(Msg(topic, 0, len(grouped), cid.encode(), envelope(cid, buffer)))
            buffer = []
        buffer.append(e)
    asyncio.run(singles.ingest.handle(one_by_one))
    asyncio.run(enveloped.ingest.handle(grouped))

    def summary(worker: Worker) -> dict[str, Any]:
        return {
            cid: (
                s.events,
                s.first_seen,
                s.last_seen,
                s.ring.volume.tolist(),
                s.ring.users.tolist(),
            )
            for cid, s in worker.customers.data.items()
            if isinstance(s, CustomerState)
        }

    assert summary(enveloped) == summary(singles)
    for name in ("processed", "duplicate"):
        sample = f"churnwatch_events_{name}_total"
        assert sample_sum(enveloped, sample) == sample_sum(singles, sample)
    assert sample_sum(singles, "churnwatch_events_duplicate_total") == len(events) - len(
        {e["event_id"] for e in events}
    )
