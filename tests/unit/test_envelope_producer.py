"""The producer helper: envelopes hold every event once, in order, and never make one late."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import orjson
from hypothesis import given
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from churnwatch.domain.envelopes import Envelope, decode_message
from churnwatch.produce import Record
from config.settings import EventLimits
from streams.envelopes import EnvelopeBuffer, envelope_value, enveloped

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[2] / "docs/schemas/envelope.schema.json").read_text()
)


def unpack(record: Record) -> list[dict[str, Any]]:
    decoded = decode_message(record[2], record[1], EventLimits())
    return decoded.events if isinstance(decoded, Envelope) else [decoded]


@st.composite
def streams(draw: st.DrawFn) -> list[Record]:
    """Events of a few customers (and a few unkeyed lines), in event-time order."""
    times = sorted(draw(st.lists(st.floats(0, 10_000), min_size=1, max_size=120)))
    out: list[Record] = []
    for n, at in enumerate(times):
        customer = draw(st.sampled_from(["a", "b", "c", None]))
        kind = draw(st.sampled_from(["usage", "billing"]))
        event = {"event_id": f"e{n}", "customer_id": customer, "occurred_at": at}
        key = None if customer is None else customer.encode()
        out.append((kind, key, orjson.dumps(event), at))
    return out


@given(streams(), st.integers(1, 8), st.floats(0, 3000))
def test_every_event_goes_out_once_in_its_customers_order_within_the_caps(
    records: list[Record], size: int, wait: float
) -> None:
    sent = list(enveloped(records, size, wait))
    events = [
        (kind, event) for kind, key, value, at in sent for event in unpack((kind, key, value, at))
    ]
    expected = [(kind, orjson.loads(value)) for kind, _, value, _ in records]
    assert sorted(map(repr, events)) == sorted(map(repr, expected))
    for customer in ("a", "b", "c"):
        for kind in ("usage", "billing"):
            mine = [e["event_id"] for k, e in events if k == kind and e["customer_id"] == customer]
            want = [
                e["event_id"] for k, e in expected if k == kind and e["customer_id"] == customer
            ]
            assert mine == want
    for record in sent:
        held = unpack(record)
        assert len(held) <= size
        assert {e["customer_id"] for e in held} == {
            None if record[1] is None else record[1].decode()
        }
        assert max(e["occurred_at"] for e in held) - min(e["occurred_at"] for e in held) <= wait


@given(streams(), st.integers(2, 8), st.floats(0, 3000))
def test_with_a_wait_within_the_lateness_no_event_arrives_behind_the_watermark(
    records: list[Record], size: int, wait: float
) -> None:
    lateness = wait  # the CLI holds envelopes half the allowed lateness: this is the edge
    newest = float("-inf")
    for record in enveloped(records, size, wait):
        held = unpack(record)
        assert min(e["occurred_at"] for e in held) >= newest - lateness
        newest = max(newest, *(e["occurred_at"] for e in held))


def test_the_envelope_value_matches_its_schema_and_keeps_event_bytes() -> None:
    events = [b'{"event_id":"e1","customer_id":"c-1","occurred_at":1}', b'{"customer_id":"c-1"}']
    value = envelope_value(b"c-1", events)
    Draft202012Validator(SCHEMA).validate(orjson.loads(value))
    assert value == b'{"envelope":1,"customer_id":"c-1","events":[' + b",".join(events) + b"]}"
    bad = {"envelope": 1, "customer_id": "c-1", "events": [{"control": "heartbeat"}]}
    assert not Draft202012Validator(SCHEMA).is_valid(bad)


def test_a_buffer_flushes_by_count_by_time_and_on_drain() -> None:
    buffer = EnvelopeBuffer(max_events=2, max_wait=10)
    assert buffer.add("usage", b"a", b'{"customer_id":"a"}', 0) == []
    assert len(buffer.add("usage", b"a", b'{"customer_id":"a"}', 1)) == 1  # count
    assert buffer.add("usage", b"b", b'{"customer_id":"b"}', 2) == []
    assert len(buffer) == 1
    assert [r[1] for r in buffer.due(12)] == [b"b"]  # time
    buffer.add("usage", b"c", b'{"customer_id":"c"}', 20)
    assert [r[2] for r in buffer.drain()] == [b'{"customer_id":"c"}']  # alone: sent as is
