"""The one-pass check of plain usage events agrees with the full validation, always."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from churnwatch.domain import events
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits

NOW = 1_709_647_632.0
LIMITS = EventLimits(max_id_length=12)

values = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([NOW, NOW - 10, NOW + 10**6, 946_684_799, 946_684_800, 1e9, 1e9 + 1]),
    st.text(max_size=16),
    st.sampled_from(["2024-03-05T14:07:12Z", "2024-03-05T14:07:12", "c-1", ""]),
    st.lists(st.integers(), max_size=2),
    st.dictionaries(st.text(max_size=3), st.integers(), max_size=2),
)
FIELDS = ("event_id", "customer_id", "event_type", "occurred_at", "quantity", "user_id")


@st.composite
def payloads(draw: st.DrawFn) -> dict[str, Any]:
    plain: dict[str, Any] = {
        "event_id": "e-1",
        "customer_id": "c-1",
        "event_type": "login",
        "occurred_at": NOW - 60,
        "quantity": 2.5,
    }
    for name in draw(st.lists(st.sampled_from((*FIELDS, "properties", "control")), max_size=3)):
        if draw(st.booleans()):
            plain.pop(name, None)
        else:
            plain[name] = draw(values)
    return plain


def full_check(payload: dict[str, Any], key: bytes | None) -> object:
    try:
        with_fast_path_off = events._plain_usage
        events._plain_usage = lambda *args: None  # type: ignore[assignment]
        try:
            return events.usage_from_payload(payload, key, now=NOW, limits=LIMITS)
        finally:
            events._plain_usage = with_fast_path_off
    except InvalidEventError as error:
        return error.reason


@settings(max_examples=600)
@given(payloads(), st.sampled_from([None, b"c-1", b"c-2"]))
def test_the_fast_path_accepts_only_what_the_full_checks_accept_and_reads_it_alike(
    payload: dict[str, Any], key: bytes | None
) -> None:
    fast = events._plain_usage(payload, key, NOW, LIMITS)
    if fast is not None:
        assert fast == full_check(payload, key)


def test_the_fast_path_takes_the_common_event() -> None:
    plain = {"event_id": "e", "customer_id": "c-1", "event_type": "t", "occurred_at": NOW}
    assert events._plain_usage(plain, b"c-1", NOW, LIMITS) == events.UsageEvent(
        "e", "c-1", NOW, "t", 1.0, None
    )
