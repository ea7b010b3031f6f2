"""One alert per customer at a time: opened, escalated, resolved after a quiet spell, cooled."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.alerts import (
    SCHEMA,
    AlertEvent,
    AlertPolicy,
    Assessment,
    OpenAlert,
    alert_id_for,
    assess,
    next_transition,
    severity_of,
)
from churnwatch.domain.rules import Reason, risk_score

DAY = 19_791  # 2024-03-09
POLICY = AlertPolicy(resolve_after_days=0, cooldown_days=0)  # the bare lifecycle
PATIENT = AlertPolicy(resolve_after_days=3, cooldown_days=7)


def _drop(strength: float = 0.8) -> Reason:
    return Reason("usage_drop", observed=2.0, baseline=10.0, window_days=7, strength=strength)


def _idle(strength: float = 0.5) -> Reason:
    return Reason("inactive", observed=7.0, baseline=7.0, window_days=7, strength=strength)


def _found(*reasons: Reason, mrr: float = 0.0, policy: AlertPolicy = POLICY) -> Assessment:
    return assess(reasons, policy, mrr_at_stake=mrr, segment=(("plan", "pro"),))


def _step(
    current: OpenAlert | None,
    *reasons: Reason,
    day: int = DAY,
    policy: AlertPolicy = POLICY,
    **kwargs: object,
) -> tuple[OpenAlert | None, AlertEvent | None]:
    return next_transition("c-1", current, _found(*reasons, policy=policy), day, policy, **kwargs)  # type: ignore[arg-type]


def _opened(*reasons: Reason, day: int = DAY) -> OpenAlert:
    alert, event = _step(None, *reasons, day=day)
    assert alert is not None
    assert event is not None
    return alert


def test_nothing_happens_without_reasons() -> None:
    assert _step(None) == (None, None)


def test_reasons_open_an_alert_with_score_severity_and_money_at_stake() -> None:
    reasons = (_drop(0.8),)
    found = _found(*reasons, mrr=129.0)

    alert, event = next_transition("c-1", None, found, DAY, POLICY)

    assert alert == OpenAlert(alert_id_for("c-1", DAY), DAY, ("usage_drop",), 48, "warning")
    assert event == AlertEvent(
        alert_id=alert_id_for("c-1", DAY),
        customer_id="c-1",
        status="opened",
        reasons=reasons,
        risk_score=48,
        as_of_day=DAY,
        opened_day=DAY,
        severity="warning",
        mrr_at_stake=129.0,
        segment=(("plan", "pro"),),
    )


def test_severity_follows_the_score_and_rises_one_step_for_much_revenue() -> None:
    policy = AlertPolicy(warning_score=40, critical_score=70, high_mrr=1000.0)
    assert severity_of(0, 5000.0, policy) == "info"
    assert severity_of(30, 0.0, policy) == "info"
    assert severity_of(40, 0.0, policy) == "warning"
    assert severity_of(70, 0.0, policy) == "critical"
    assert severity_of(30, 1000.0, policy) == "warning"
    assert severity_of(40, 1000.0, policy) == "critical"
    assert severity_of(90, 1000.0, policy) == "critical"


@given(st.integers(0, 100), st.integers(0, 100), st.floats(0, 1e6), st.floats(0, 1e6))
def test_severity_never_falls_as_score_or_revenue_rises(
    score_a: int, score_b: int, mrr_a: float, mrr_b: float
) -> None:
    order = ("info", "warning", "critical")
    low = severity_of(min(score_a, score_b), min(mrr_a, mrr_b), PATIENT)
    high = severity_of(max(score_a, score_b), max(mrr_a, mrr_b), PATIENT)
    assert order.index(low) <= order.index(high)


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

    assert _step(current, _drop(0.8), day=DAY + 1) == (current, None)


def test_a_new_reason_escalates() -> None:
    current = _opened(_drop(0.8))
    reasons = (_drop(0.8), _idle(0.5))

    alert, event = _step(current, *reasons, day=DAY + 3)

    assert alert == OpenAlert(current.alert_id, DAY, ("usage_drop", "inactive"), 88, "critical")
    assert event is not None
    assert (event.status, event.alert_id, event.opened_day) == ("escalated", current.alert_id, DAY)
    assert (event.as_of_day, event.risk_score, event.reasons) == (DAY + 3, 88, reasons)


def test_a_score_rise_of_one_step_escalates() -> None:
    current = _opened(_idle(0.5))  # 40
    higher = (_idle(0.75),)  # 60
    assert risk_score(higher) == current.risk_score + POLICY.escalation_step

    alert, event = _step(current, *higher, day=DAY + 1)

    assert event is not None
    assert event.status == "escalated"
    assert alert == OpenAlert(current.alert_id, DAY, ("inactive",), 60, "warning")


def test_a_smaller_rise_is_not_news_and_does_not_move_the_published_score() -> None:
    current = _opened(_idle(0.5))  # 40
    creeping = (_idle(0.7),)  # 56
    assert risk_score(creeping) < current.risk_score + POLICY.escalation_step

    alert, event = _step(current, *creeping, day=DAY + 1)

    assert (alert, event) == (current, None)
    # 60 is one step over the last *published* score, however it crept up.
    _, event = _step(current, _idle(0.75), day=DAY + 2)
    assert event is not None
    assert event.status == "escalated"


def test_a_severity_rise_escalates_even_when_the_score_stays() -> None:
    current = _opened(_idle(0.5))  # 40, warning
    found = _found(_idle(0.5), mrr=5000.0)  # same score, critical for the revenue at stake

    alert, event = next_transition("c-1", current, found, DAY + 1, POLICY)

    assert event is not None
    assert (event.status, event.severity) == ("escalated", "critical")
    assert alert is not None
    assert alert.severity == "critical"


def test_a_cleared_reason_is_remembered_quietly_while_another_holds() -> None:
    current, _ = _step(None, _drop(0.8), _idle(0.5))
    assert current is not None

    alert, event = _step(current, _idle(0.5), day=DAY + 1)

    assert event is None
    assert alert == OpenAlert(current.alert_id, DAY, ("inactive",), 88, "critical")
    # The cleared reason coming back is news again.
    _, event = _step(alert, _drop(0.8), _idle(0.5), day=DAY + 2)
    assert event is not None
    assert event.status == "escalated"


def test_no_reason_left_resolves_with_the_opened_id() -> None:
    current = _opened(_drop(0.8))

    alert, event = _step(current, day=DAY + 5)

    assert alert is None
    assert event == AlertEvent(
        alert_id=current.alert_id,
        customer_id="c-1",
        status="resolved",
        reasons=(),
        risk_score=0,
        as_of_day=DAY + 5,
        opened_day=DAY,
        severity="info",
        segment=(("plan", "pro"),),
    )


def test_an_alert_resolves_only_after_the_signals_stay_clear_long_enough() -> None:
    current, _ = _step(None, _drop(), policy=PATIENT)
    assert current is not None
    for day in (DAY + 1, DAY + 2, DAY + 3):
        current, event = _step(current, day=day, policy=PATIENT)
        assert current is not None
        assert event is None
    # A reason coming back restarts the quiet spell.
    current, event = _step(current, _drop(), day=DAY + 4, policy=PATIENT)
    assert current is not None
    assert current.clear_since_day is None
    assert event is None
    for day in (DAY + 5, DAY + 6, DAY + 7):
        current, event = _step(current, day=day, policy=PATIENT)
        assert event is None
    current, event = _step(current, day=DAY + 8, policy=PATIENT)
    assert current is None
    assert event is not None
    assert event.status == "resolved"


def test_no_new_alert_opens_within_the_cooldown_after_a_close() -> None:
    closed = DAY + 10
    for day in range(closed, closed + PATIENT.cooldown_days):
        assert _step(None, _drop(), day=day, policy=PATIENT, closed_day=closed) == (None, None)

    alert, event = _step(None, _drop(), day=closed + 7, policy=PATIENT, closed_day=closed)

    assert event is not None
    assert event.status == "opened"
    assert alert is not None
    assert alert.alert_id == alert_id_for("c-1", closed + 7)


def test_a_snoozed_customer_gets_no_new_alert_but_an_open_one_still_closes() -> None:
    assert _step(None, _drop(), snoozed=True) == (None, None)
    current = _opened(_drop())
    assert _step(current, _drop(), day=DAY + 1, snoozed=True) == (current, None)
    alert, event = _step(current, day=DAY + 1, snoozed=True)
    assert alert is None
    assert event is not None
    assert event.status == "resolved"


def test_an_ended_subscription_closes_the_alert_as_churned_and_opens_none() -> None:
    current = _opened(_drop())

    alert, event = _step(current, _drop(), day=DAY + 2, churned=True)

    assert alert is None
    assert event is not None
    assert (event.status, event.alert_id, event.reasons) == ("churned", current.alert_id, ())
    assert _step(None, _drop(), day=DAY + 3, churned=True) == (None, None)


def test_json_form_has_the_documented_keys_and_iso_times() -> None:
    _, event = next_transition(
        "c-1", None, assess((_drop(0.8), _idle(0.5)), POLICY, None, 129.5, "EUR"), DAY, POLICY
    )
    assert event is not None
    emitted_at = datetime(2024, 3, 9, 1, 0, 3, 412_907, tzinfo=UTC).timestamp()

    wire = event.to_json_dict(emitted_at)

    assert set(wire) == {
        "schema", "alert_id", "customer_id", "status", "risk_score", "severity", "mrr_at_stake",
        "currency", "segment", "reasons", "opened_at", "event_time", "emitted_at",
    }  # fmt: skip
    assert wire["schema"] == SCHEMA == "churnwatch.alert/1"
    assert wire["alert_id"] == alert_id_for("c-1", DAY)
    assert (wire["status"], wire["risk_score"], wire["severity"]) == ("opened", 88, "critical")
    assert (wire["mrr_at_stake"], wire["currency"], wire["segment"]) == (129.5, "EUR", {})
    assert wire["reasons"] == [
        {"code": "usage_drop", "area": "execution", "observed": 2.0, "baseline": 10.0,
         "window_days": 7},
        {"code": "inactive", "area": "execution", "observed": 7.0, "baseline": 7.0,
         "window_days": 7},
    ]  # fmt: skip
    assert wire["opened_at"] == "2024-03-09T00:00:00+00:00"
    assert wire["event_time"] == "2024-03-09T00:00:00+00:00"
    assert datetime.fromisoformat(wire["emitted_at"]) == datetime.fromtimestamp(emitted_at, UTC)


def test_json_form_of_a_later_transition_keeps_the_opening_day() -> None:
    current = _opened(_drop(0.8))
    _, event = _step(current, day=DAY + 2)
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


@given(
    st.lists(st.tuples(reason_sets, st.booleans()), max_size=40),
    st.integers(0, 4),
    st.integers(0, 10),
)
def test_lifecycle_over_any_sequence_of_reason_sets(
    sequence: list[tuple[tuple[Reason, ...], bool]], resolve_after: int, cooldown: int
) -> None:
    policy = AlertPolicy(resolve_after_days=resolve_after, cooldown_days=cooldown)
    current: OpenAlert | None = None
    open_id: str | None = None  # the alert the published events say is open
    closed_day: int | None = None
    for day, (reasons, snoozed) in enumerate(sequence, start=DAY):
        had = current
        current, event = _step(
            current, *reasons, day=day, policy=policy, closed_day=closed_day, snoozed=snoozed
        )
        if reasons and had is not None:
            assert current is not None  # reasons never close an alert
        if not reasons and had is None:
            assert current is None
            assert event is None
        if event is not None:
            assert event.reasons == (() if event.status == "resolved" else reasons)
            assert event.alert_id == alert_id_for("c-1", event.opened_day)
            if event.status == "opened":
                assert open_id is None
                assert not snoozed
                assert closed_day is None or day - closed_day >= cooldown
                assert event.opened_day == day
                open_id = event.alert_id
            elif event.status == "escalated":
                assert event.alert_id == open_id
            else:
                assert event.status == "resolved"
                assert event.alert_id == open_id
                open_id = None
                closed_day = day
        # No alert opens or closes without an event saying so.
        assert (None if current is None else current.alert_id) == open_id
