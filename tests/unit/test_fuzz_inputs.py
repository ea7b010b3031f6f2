"""Fuzz the input parsers: whatever arrives is a valid event or an InvalidEventError, never more."""

from __future__ import annotations

import math
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from churnwatch.domain.billing import MAX_MRR_CENTS, BillingEvent, parse_billing_message
from churnwatch.domain.events import REASONS, Heartbeat, Snooze, UsageEvent, parse_usage_message
from churnwatch.exceptions import InvalidEventError
from config import EventLimits
from streams.deadletters import MAX_DETAIL_BYTES
from tests.hostile import (
    BILLING_FIELDS,
    KINDS,
    USAGE_FIELDS,
    HostileMix,
    deep,
    encode,
    json_values,
    keys,
    timestamps,
)

NOW = 1_767_225_600.0  # 2026-01-01
LIMITS = EventLimits()
FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
Parsed = UsageEvent | BillingEvent | Heartbeat | Snooze


def parse(topic: str, raw: bytes | None, key: bytes | None) -> Parsed | InvalidEventError:
    """Parse as the worker would; an InvalidEventError is returned, anything else raises."""
    try:
        if topic == "billing":
            return parse_billing_message(raw, key, now=NOW, limits=LIMITS)
        return parse_usage_message(raw, key, now=NOW, limits=LIMITS)
    except InvalidEventError as error:
        return error


def check(outcome: Parsed | InvalidEventError, key: bytes | None) -> None:
    """What every outcome must respect: known reasons, bounded details, values within Limits."""
    if isinstance(outcome, InvalidEventError):
        assert outcome.reason in REASONS
        assert len(outcome.detail.encode()) <= MAX_DETAIL_BYTES
        return
    if isinstance(outcome, Heartbeat):
        assert LIMITS.earliest_event_time <= outcome.occurred_at
        assert outcome.occurred_at <= NOW + LIMITS.max_future_skew_seconds
        return
    assert 1 <= len(outcome.customer_id) <= LIMITS.max_id_length
    assert key is None or key == outcome.customer_id.encode()
    if isinstance(outcome, Snooze):
        assert outcome.until is None or math.isfinite(outcome.until)
        return
    assert 1 <= len(outcome.event_id) <= LIMITS.max_id_length
    assert LIMITS.earliest_event_time <= outcome.occurred_at
    assert outcome.occurred_at <= NOW + LIMITS.max_future_skew_seconds
    if isinstance(outcome, UsageEvent):
        assert 1 <= len(outcome.event_type) <= LIMITS.max_id_length
        assert 0 <= outcome.quantity <= LIMITS.max_quantity
        assert outcome.user_id is None or 1 <= len(outcome.user_id) <= LIMITS.max_id_length
    else:
        assert outcome.mrr_cents is None or 0 <= outcome.mrr_cents <= MAX_MRR_CENTS
        assert outcome.effective_at is None or math.isfinite(outcome.effective_at)


@FUZZ
@given(st.sampled_from(["usage", "billing"]), st.binary(max_size=600), keys)
@example("usage", b"[" * 5000 + b"]" * 5000, None)
@example("usage", b'{"occurred_at": NaN}', None)
@example("billing", b'{"mrr": Infinity}', None)
@example("usage", None, b"k")  # a tombstone
def test_any_bytes_parse_or_are_refused_with_a_reason(
    topic: str, raw: bytes | None, key: bytes | None
) -> None:
    check(parse(topic, raw, key), key)


@FUZZ
@given(
    st.sampled_from(["usage", "billing"]),
    st.dictionaries(st.sampled_from((*USAGE_FIELDS, *BILLING_FIELDS, "control", "until",
                                     "user_id", "properties", "effective_at", "plan",
                                     "currency", "channel")), json_values, max_size=8),
    st.booleans(),
)  # fmt: skip
def test_any_json_shape_parses_or_is_refused_with_a_reason(
    topic: str, fields: dict[str, Any], keyed: bool
) -> None:
    good: dict[str, Any] = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "occurred_at": NOW - 60,
        "event_type": "login",
        "type": "subscription.started",
        "mrr": "49.50",
    }
    payload = good | fields
    customer = payload.get("customer_id")
    key = customer.encode() if keyed and isinstance(customer, str) else None
    check(parse(topic, encode(payload), key), key)


@FUZZ
@given(st.sampled_from(["usage", "billing"]), timestamps)
def test_timestamps_are_accepted_only_within_the_limits(topic: str, occurred_at: Any) -> None:
    payload = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "occurred_at": occurred_at,
        "event_type": "login",
        "type": "payment.failed",
    }
    outcome = parse(topic, encode(payload), b"c-1")
    check(outcome, b"c-1")
    if isinstance(outcome, InvalidEventError):
        assert outcome.reason in (
            "not_json",  # NaN and Infinity have no JSON literal
            "wrong_type",
            "invalid_value",
            "timestamp_out_of_range",
        )


@pytest.mark.parametrize(
    ("occurred_at", "reason"),
    [
        (NOW + 400 * 86_400, "timestamp_out_of_range"),
        (1e300, "timestamp_out_of_range"),
        (2**70, "timestamp_out_of_range"),
        (-1, "timestamp_out_of_range"),
        ("9999-12-31T23:59:59Z", "timestamp_out_of_range"),
        ("0001-01-01T00:00:00+01:00", "timestamp_out_of_range"),
        ("0000-01-01T00:00:00Z", "invalid_value"),
        ("2020-01-01T00:00:00", "invalid_value"),  # no offset
    ],
)
def test_far_future_and_far_past_times_are_out_of_range(occurred_at: Any, reason: str) -> None:
    payload = {"event_id": "e", "customer_id": "c", "occurred_at": occurred_at, "event_type": "x"}
    outcome = parse("usage", encode(payload), b"c")
    assert isinstance(outcome, InvalidEventError)
    assert outcome.reason == reason


def test_nan_and_infinity_are_refused_wherever_they_appear() -> None:
    for field in ("occurred_at", "quantity", "mrr"):
        for literal in (b"NaN", b"Infinity", b"-Infinity", b"1e400"):
            raw = b'{"customer_id": "c", "event_id": "e", "event_type": "x", "type": '
            raw += b'"subscription.started", "occurred_at": 1767225000, "' + field.encode()
            raw += b'": ' + literal + b"}"
            for topic in ("usage", "billing"):
                outcome = parse(topic, raw, b"c")
                assert isinstance(outcome, InvalidEventError), (topic, field, literal)
                assert outcome.reason == "not_json"


def test_deep_json_is_refused_or_harmless() -> None:
    too_deep = parse("usage", deep(2000), None)
    assert isinstance(too_deep, InvalidEventError)
    assert too_deep.reason == "not_json"
    payload = {"event_id": "e", "customer_id": "c", "occurred_at": NOW, "event_type": "x"}
    nested = parse(
        "usage", encode(payload)[:-1] + b', "properties": {"d": ' + deep(1000) + b"}}", b"c"
    )
    assert isinstance(nested, UsageEvent)  # properties are not kept


def test_huge_and_empty_ids_are_bounded() -> None:
    payload = {"event_id": "e", "customer_id": "c" * 257, "occurred_at": NOW, "event_type": "x"}
    outcome = parse("usage", encode(payload), None)
    assert isinstance(outcome, InvalidEventError)
    assert outcome.reason == "invalid_value"
    empty = parse("usage", encode(payload | {"customer_id": ""}), b"")
    assert isinstance(empty, InvalidEventError)
    assert empty.reason == "invalid_value"
    enormous_key = parse("billing", encode(payload | {"type": "payment.failed"}), b"k" * 10**5)
    assert isinstance(enormous_key, InvalidEventError)


@settings(max_examples=30, deadline=None)
@given(st.integers(min_value=0, max_value=2**32))
def test_every_kind_of_the_integration_mix_parses_or_is_refused(seed: int) -> None:
    mix = HostileMix(seed, now=NOW, first=NOW - 80 * 86_400)
    for kind in KINDS:
        message = mix.hostile(kind, NOW - 86_400)
        check(parse(message.topic, message.value, message.key), message.key)
    junk = mix.junk(NOW - 86_400)
    assert isinstance(parse("usage", junk.value, junk.key), UsageEvent)


@pytest.mark.parametrize("mrr", ["1e999990", "1e999999999", "9e99999", "1" * 41, 1e308])
def test_an_absurd_mrr_is_refused_at_once(mrr: Any) -> None:
    """Found by fuzzing: "1e999990" took a minute of CPU (a million-digit integer), and
    "1e999999999" raised decimal.Overflow, outside the InvalidEventError contract."""
    payload = {"event_id": "e", "customer_id": "c", "occurred_at": NOW, "type": "payment.failed"}
    started = time.perf_counter()
    outcome = parse("billing", encode(payload | {"mrr": mrr}), b"c")
    assert time.perf_counter() - started < 0.5
    assert isinstance(outcome, InvalidEventError)
    assert outcome.reason == "invalid_value"


money_strings = st.from_regex(r"[+-]?\d{0,4}(\.\d{0,4})?([eE][+-]?\d{1,10})?", fullmatch=True)


@FUZZ
@given(money_strings)
def test_mrr_strings_are_parsed_quickly_or_refused(mrr: str) -> None:
    payload = {"event_id": "e", "customer_id": "c", "occurred_at": NOW, "type": "payment.failed"}
    started = time.perf_counter()
    outcome = parse("billing", encode(payload | {"mrr": mrr}), b"c")
    assert time.perf_counter() - started < 0.5
    check(outcome, b"c")
