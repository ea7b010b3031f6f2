"""One alert per customer at a time: opened, escalated, quietly updated and resolved by day."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.alerts import (
    ESCALATION_STEP,
    SCHEMA,
    AlertEvent,
    OpenAlert,
    alert_id_for,
    next_transition,
)
from churnwatch.domain.rules import Reason, risk_score

DAY = 19_791  # 2024-03-09


def _drop(strength: float = 0.8) -> Reason:
    return Reason("usage_drop", observed=2.0, baseline=10.0, window_days=7, strength=strength)


def _idle(strength: float = 0.5) -> Reason:
    return Reason("inactive", observed=7.0, baseline=7.0, window_days=7, strength=strength)


def _opened(*reasons: Reason, day: int = DAY) -> OpenAlert:
    alert, event = next_transition("c-1", None, reasons, day)
    assert alert is not None
    assert event is not None
    return alert


def test_nothing_happens_without_reasons() -> None:
    assert next_transition("c-1", None, (), DAY) == (None, None)


def test_reasons_open_an_alert() -> None:
    reasons = (_drop(0.8),)

    alert, event = next_transition("c-1", None, reasons, DAY)

    assert alert == OpenAlert(alert_id_for("c-1", DAY), DAY, ("usage_drop",), 48)
    assert event == AlertEvent(
        alert_id=alert_id_for("c-1", DAY),
        customer_id="c-1",
        status="opened",
        reasons=reasons,
        risk_score=48,
        as_of_day=DAY,
        opened_day=DAY,
    )


def test_alert_ids_are_deterministic_uuids() -> None:
    alert_id = alert_id_for("c-1", DAY)

    assert uuid.UUID(alert_id).version == 5
    assert alert_id_for("c-1", DAY) == alert_id
    assert alert_id_for("c-1", DAY + 1) != alert_id
    assert alert_id_for("c-2", DAY) != alert_id
    assert _opened(_drop(), day=DAY).alert_id == _opened(_idle(), day=DAY).alert_id
    assert _opened(_drop(), day=DAY).alert_id != _opened(_drop(), day=DAY + 1).alert_id


def test_unchanged_reasons_publish_nothing() -> None:
    current = _opened(_drop(0.8))

    assert next_transition("c-1", current, (_drop(0.8),), DAY + 1) == (current, None)


def test_a_new_reason_escalates() -> None:
    current = _opened(_drop(0.8))
    reasons = (_drop(0.8), _idle(0.5))

    alert, event = next_transition("c-1", current, reasons, DAY + 3)

    assert alert == OpenAlert(current.alert_id, DAY, ("usage_drop", "inactive"), 88)
    assert event is not None
    assert event.status == "escalated"
    assert event.alert_id == current.alert_id
    assert event.opened_day == DAY
    assert event.as_of_day == DAY + 3
    assert event.risk_score == 88
    assert event.reasons == reasons


def test_a_score_rise_of_one_step_escalates() -> None:
    current = _opened(_idle(0.5))  # 40
    higher = (_idle(0.75),)  # 60
    assert risk_score(higher) == current.risk_score + ESCALATION_STEP

    alert, event = next_transition("c-1", current, higher, DAY + 1)

    assert event is not None
    assert event.status == "escalated"
    assert alert == OpenAlert(current.alert_id, DAY, ("inactive",), 60)


def test_a_smaller_rise_is_not_news_and_does_not_move_the_published_score() -> None:
    current = _opened(_idle(0.5))  # 40
    creeping = (_idle(0.7),)  # 56
    assert risk_score(creeping) < current.risk_score + ESCALATION_STEP

    alert, event = next_transition("c-1", current, creeping, DAY + 1)

    assert (alert, event) == (current, None)
    # 60 is one step over the last *published* score, however it crept up.
    _, event = next_transition("c-1", current, (_idle(0.75),), DAY + 2)
    assert event is not None
    assert event.status == "escalated"


def test_a_cleared_reason_is_remembered_quietly_while_another_holds() -> None:
    current, _ = next_transition("c-1", None, (_drop(0.8), _idle(0.5)), DAY)
    assert current is not None

    alert, event = next_transition("c-1", current, (_idle(0.5),), DAY + 1)

    assert event is None
    assert alert == OpenAlert(current.alert_id, DAY, ("inactive",), current.risk_score)
    # The cleared reason coming back is news again.
    _, event = next_transition("c-1", alert, (_drop(0.8), _idle(0.5)), DAY + 2)
    assert event is not None
    assert event.status == "escalated"


def test_no_reason_left_resolves_with_the_opened_id() -> None:
    current = _opened(_drop(0.8))

    alert, event = next_transition("c-1", current, (), DAY + 5)

    assert alert is None
    assert event == AlertEvent(
        alert_id=current.alert_id,
        customer_id="c-1",
        status="resolved",
        reasons=(),
        risk_score=0,
        as_of_day=DAY + 5,
        opened_day=DAY,
    )


def test_json_form_has_the_documented_keys_and_iso_times() -> None:
    _, event = next_transition("c-1", None, (_drop(0.8), _idle(0.5)), DAY)
    assert event is not None
    emitted_at = datetime(2024, 3, 9, 1, 0, 3, 412_907, tzinfo=UTC).timestamp()

    wire = event.to_json_dict(emitted_at)

    assert set(wire) == {
        "schema",
        "alert_id",
        "customer_id",
        "status",
        "risk_score",
        "reasons",
        "opened_at",
        "event_time",
        "emitted_at",
    }
    assert wire["schema"] == SCHEMA == "churnwatch.alert/1"
    assert wire["alert_id"] == alert_id_for("c-1", DAY)
    assert wire["status"] == "opened"
    assert wire["risk_score"] == 88
    assert wire["reasons"] == [
        {"code": "usage_drop", "area": "execution", "observed": 2.0, "baseline": 10.0,
         "window_days": 7},
        {"code": "inactive", "area": "execution", "observed": 7.0, "baseline": 7.0,
         "window_days": 7},
    ]  # fmt: skip
    assert wire["opened_at"] == "2024-03-09T00:00:00+00:00"
    assert wire["event_time"] == "2024-03-09T00:00:00+00:00"
    assert datetime.fromisoformat(wire["emitted_at"]) == datetime.fromtimestamp(emitted_at, UTC)
    assert wire["emitted_at"].endswith("+00:00")


def test_json_form_of_a_later_transition_keeps_the_opening_day() -> None:
    current = _opened(_drop(0.8))
    _, event = next_transition("c-1", current, (), DAY + 2)
    assert event is not None

    wire = event.to_json_dict(0.0)

    assert wire["opened_at"] == "2024-03-09T00:00:00+00:00"
    assert wire["event_time"] == "2024-03-11T00:00:00+00:00"
    assert wire["reasons"] == []
    assert wire["emitted_at"] == "1970-01-01T00:00:00+00:00"


# Reasons as the rules produce them: each code at most once, in rule order.
reason_sets = st.tuples(
    st.none() | st.floats(0.5, 1.0).map(_drop),
    st.none() | st.floats(0.5, 1.0).map(_idle),
).map(lambda pair: tuple(r for r in pair if r is not None))


@given(st.lists(reason_sets, max_size=40))
def test_lifecycle_over_any_sequence_of_reason_sets(sequence: list[tuple[Reason, ...]]) -> None:
    current: OpenAlert | None = None
    open_id: str | None = None  # the alert the published events say is open
    for day, reasons in enumerate(sequence, start=DAY):
        current, event = next_transition("c-1", current, reasons, day)

        assert (current is None) == (not reasons)
        if event is not None:
            assert event.reasons == reasons
            assert event.alert_id == alert_id_for("c-1", event.opened_day)
            if event.status == "opened":
                assert open_id is None
                assert event.opened_day == day
                open_id = event.alert_id
            elif event.status == "escalated":
                assert event.alert_id == open_id
            else:
                assert event.status == "resolved"
                assert event.alert_id == open_id
                open_id = None
        # No alert opens or closes without an event saying so.
        assert (None if current is None else current.alert_id) == open_id
