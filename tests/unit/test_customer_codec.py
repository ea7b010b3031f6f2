"""A customer record survives its plain form and the Faust codec bytes unchanged."""

from __future__ import annotations

import orjson
import pytest
from faust.serializers import codecs
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.alerts import OpenAlert, alert_id_for
from churnwatch.domain.customer import RECORD_VERSION, CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY, day_of, ring_days_needed
from churnwatch.domain.events import parse_usage_message
from churnwatch.domain.partition import PartitionClock
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits, RuleSettings
from streams.codecs import (
    CUSTOMER_CODEC,
    CustomerCodec,
    decode_customer,
    encode_customer,
    is_customer,
    partition_of,
    register_codecs,
)
from streams.state import clock_key

EARLIEST = 946_684_800.0  # 2000-01-01, EventLimits' default
CODEC = CustomerCodec()

amounts = st.integers(0, 10**9).map(lambda thousandths: thousandths / 1000)
alerts = st.builds(
    OpenAlert,
    alert_id=st.uuids().map(str),
    opened_day=st.integers(0, 50_000),
    reason_codes=st.lists(st.sampled_from(["usage_drop", "inactive"]), unique=True).map(tuple),
    risk_score=st.integers(0, 100),
    severity=st.sampled_from(["info", "warning", "critical"]),
    clear_since_day=st.none() | st.integers(0, 50_000),
)
words = st.text(min_size=1, max_size=12)


@st.composite
def customer_states(draw: st.DrawFn, max_ring_days: int) -> CustomerState:
    """A customer built as the engine builds one: created by an event, then fed more."""
    ring_days = draw(st.integers(1, max_ring_days))
    first_at = draw(st.floats(EARLIEST, 4e9))
    state = CustomerState.new(
        draw(st.text(min_size=1, max_size=20)), draw(st.integers(0, 1023)), first_at, ring_days
    )
    offsets = st.floats(-ring_days * SECONDS_PER_DAY, 3 * ring_days * SECONDS_PER_DAY)
    bits = st.integers(0, 63).map(lambda bit: 1 << bit)
    events = st.tuples(offsets, amounts, bits, bits)
    for offset, amount, user, kind in draw(st.lists(events, max_size=3 * ring_days)):
        at = first_at + offset
        if state.ring.add(day_of(at), amount, user, kind):
            state.first_seen = min(state.first_seen, at)
            state.last_seen = max(state.last_seen, at)
            state.events += 1
    state.usage_offset = draw(st.integers(-1, 2**63 - 1))
    state.alert = draw(st.none() | alerts)
    for name in draw(st.lists(words, max_size=3, unique=True)):
        for at in draw(st.lists(st.floats(EARLIEST, 4e9), min_size=1, max_size=3)):
            state.note_milestone(name, at, needed=2)
    state.closed_day = draw(st.none() | st.integers(0, 50_000))
    state.snoozed_until = draw(st.none() | st.floats(EARLIEST, 4e9))
    state.health_digest = draw(st.integers(0, 2**32 - 1))
    return state


# Every ring the settings allow: recent_days + baseline_days up to 118, lateness up to 7 days.
LARGEST_RING = ring_days_needed(28 + 90, 7 * SECONDS_PER_DAY)


@given(customer_states(max_ring_days=LARGEST_RING))
def test_plain_round_trip(state: CustomerState) -> None:
    plain = state.to_plain()

    assert plain["v"] == RECORD_VERSION
    assert CustomerState.from_plain(plain) == state


# The active bitmask has one bit per ring day and the codec writes it as a JSON integer, which
@given(customer_states(max_ring_days=LARGEST_RING))
def test_codec_bytes_round_trip(state: CustomerState) -> None:
    raw = encode_customer(state)

    assert decode_customer(raw) == state
    assert encode_customer(decode_customer(raw)) == raw
    # The table holds the record encoded: the codec passes it through both ways.
    assert CODEC.loads(raw) == raw
    assert CODEC.dumps(raw) == raw
    assert is_customer(CODEC.loads(raw))
    assert partition_of(raw) == state.partition  # read without decoding, any id


def _daily_customer(ring_days: int) -> CustomerState:
    state = CustomerState.new("c-1", 3, EARLIEST, ring_days)
    for day in range(day_of(EARLIEST), day_of(EARLIEST) + ring_days):
        state.ring.add(day, 1.5)
        state.last_seen = day * SECONDS_PER_DAY
        state.events += 1
    state.usage_offset = 41
    state.alert = OpenAlert(alert_id_for("c-1", 11_000), 11_000, ("inactive",), 40)
    return state


def test_codec_round_trip_of_a_full_default_ring() -> None:
    state = _daily_customer(ring_days_needed(35, 3600))

    assert decode_customer(encode_customer(state)) == state


def test_codec_round_trip_of_a_ring_the_settings_allow_beyond_64_days() -> None:
    rules = RuleSettings(baseline_days=60)
    ring_days = ring_days_needed(rules.recent_days + rules.baseline_days, 3600)
    assert ring_days > 64
    state = _daily_customer(ring_days)

    assert decode_customer(encode_customer(state)) == state


def test_registered_codec_is_found_by_name() -> None:
    register_codecs()
    register_codecs()  # idempotent
    state = _daily_customer(7)

    raw = codecs.dumps(CUSTOMER_CODEC, encode_customer(state))

    assert decode_customer(codecs.loads(CUSTOMER_CODEC, raw)) == state


@pytest.mark.parametrize("version", [None, 0, RECORD_VERSION + 1, "1"])
def test_unknown_record_version_is_refused(version: object) -> None:
    plain = _daily_customer(7).to_plain()
    if version is None:
        del plain["v"]
    else:
        plain["v"] = version

    with pytest.raises(ValueError, match="unknown customer record version"):
        CustomerState.from_plain(plain)
    with pytest.raises(ValueError, match="unknown customer record version"):
        decode_customer(orjson.dumps(plain))


def _version_1_plain(state: CustomerState) -> dict[str, object]:
    """The plain form release 1 wrote: every day of the ring, zeros included."""
    plain = state.to_plain()
    plain.pop("sz", None)
    plain.update(
        v=1,
        vol=state.ring.volume.tolist(),
        us=state.ring.users.tolist(),
        ks=state.ring.kinds.tolist(),
    )
    return plain


@given(customer_states(max_ring_days=LARGEST_RING))
def test_version_1_records_still_read(state: CustomerState) -> None:
    assert CustomerState.from_plain(_version_1_plain(state)) == state


def test_a_record_keeps_the_active_days_of_its_ring_only() -> None:
    state = CustomerState.new("c-1", 0, EARLIEST, 38)
    state.ring.add(day_of(EARLIEST) + 3, 2.5, 1 << 5, 1 << 9)

    plain = state.to_plain()

    assert (plain["vol"], plain["us"], plain["ks"], plain["sz"]) == ([2500], [32], [512], 38)
    assert len(encode_customer(state)) < len(orjson.dumps(_version_1_plain(state))) - 200
    assert decode_customer(encode_customer(state)) == state


def test_a_full_ring_is_written_whole_without_its_size() -> None:
    state = _daily_customer(10)

    plain = state.to_plain()

    assert "sz" not in plain
    assert plain["vol"] == state.ring.volume.tolist()
    assert CustomerState.from_plain(plain) == state


def test_a_ring_whose_values_do_not_match_its_active_days_is_refused() -> None:
    state = CustomerState.new("c-1", 0, EARLIEST, 38)
    state.ring.add(day_of(EARLIEST), 1.0)
    plain = state.to_plain()
    plain["act"] = "3"  # two active days, one value

    with pytest.raises(ValueError, match="ring of 2 active days holds 1 values"):
        CustomerState.from_plain(plain)


def test_records_written_before_breadth_and_severity_were_kept_still_read() -> None:
    state = _daily_customer(10)
    plain = _version_1_plain(state)
    del plain["us"], plain["ks"]
    plain["alert"] = plain["alert"][:4]

    read = CustomerState.from_plain(plain)

    assert read.ring.volume == state.ring.volume
    assert read.ring.breadth_between(0, 10**6) == (0.0, 0.0)
    assert read.alert is not None
    assert (read.alert.severity, read.alert.clear_since_day) == ("warning", None)


def test_a_partition_clock_rides_in_the_customers_table_codec() -> None:
    clock = PartitionClock(3, {"usage": 10.5}, 5.0, 19796, {"usage-events": 42})
    codec = CustomerCodec()
    assert codec._loads(codec._dumps(clock)) == clock
    assert not is_customer(clock)
    assert partition_of(clock) == 3


def test_the_partition_of_a_record_written_in_another_key_order_is_still_read() -> None:
    plain = _daily_customer(7).to_plain()
    reordered = {"p": plain.pop("p"), **plain}

    assert partition_of(orjson.dumps(reordered)) == 3


def test_no_customer_id_can_take_a_clocks_key() -> None:
    event = {"event_id": "e", "customer_id": clock_key(0), "occurred_at": 1e9, "event_type": "t"}
    with pytest.raises(InvalidEventError, match="NUL"):
        parse_usage_message(orjson.dumps(event), None, now=1e9, limits=EventLimits())
