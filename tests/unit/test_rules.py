"""The at-risk rules read whole days before the evaluated day, against the default thresholds."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY, DailyRing, ring_days_needed
from churnwatch.domain.rules import WEIGHTS, Reason, evaluate, inactive, risk_score, usage_drop
from config.settings import RuleSettings

LIMITS = RuleSettings()
RING_DAYS = ring_days_needed(LIMITS.recent_days + LIMITS.baseline_days, 3600)
DAY0 = 19_700  # 2023-12-09: any day works, a realistic one reads better in a failure
NOON = SECONDS_PER_DAY // 2


def _record(state: CustomerState, day: int, amount: float) -> None:
    """Apply one event at noon of `day`, keeping first_seen/last_seen as the engine does."""
    at = day * SECONDS_PER_DAY + NOON
    assert state.ring.add(day, amount)
    state.first_seen = min(state.first_seen, at)
    state.last_seen = max(state.last_seen, at)
    state.events += 1


def _customer(daily: Mapping[int, float]) -> CustomerState:
    """A customer whose first event is on the earliest day of `daily`."""
    first_day = min(daily)
    state = CustomerState.new("c-1", 0, first_day * SECONDS_PER_DAY + NOON, RING_DAYS)
    for day in sorted(daily):
        _record(state, day, daily[day])
    return state


def _steady_then(days: int, level: float, recent: list[float]) -> dict[int, float]:
    """`days` days at `level` from DAY0, then one day per entry of `recent`."""
    daily = {DAY0 + offset: level for offset in range(days)}
    daily.update({DAY0 + days + offset: amount for offset, amount in enumerate(recent)})
    return daily


# usage_drop


def test_usage_drop_fires_when_the_last_week_falls_below_half_the_baseline() -> None:
    state = _customer(_steady_then(35, 10.0, [2.0] * 7))
    as_of = DAY0 + 42

    reason = usage_drop(state, as_of, LIMITS)

    assert reason is not None
    assert (reason.code, reason.area) == ("usage_drop", "execution")
    assert (reason.observed, reason.baseline, reason.window_days) == (2.0, 10.0, 7)
    assert reason.strength == pytest.approx(0.8)


def test_usage_drop_baseline_is_the_28_days_before_the_recent_week() -> None:
    # Days outside the 35-day window (here: a huge first week) must not count.
    daily = _steady_then(35, 10.0, [4.0] * 7)
    daily.update({DAY0 + offset: 1000.0 for offset in range(7)})
    state = _customer(daily)

    reason = usage_drop(state, DAY0 + 42, LIMITS)

    assert reason is not None
    assert reason.baseline == pytest.approx(10.0)
    assert reason.observed == pytest.approx(4.0)


@pytest.mark.parametrize(("recent", "fires"), [(4.99, True), (5.0, False), (6.0, False)])
def test_usage_drop_threshold_is_strictly_below_the_ratio(recent: float, fires: bool) -> None:
    state = _customer(_steady_then(35, 10.0, [recent] * 7))

    assert (usage_drop(state, DAY0 + 42, LIMITS) is not None) is fires


@pytest.mark.parametrize(("history_days", "fires"), [(13, False), (14, True)])
def test_usage_drop_needs_min_baseline_days_of_history(history_days: int, fires: bool) -> None:
    state = _customer(_steady_then(history_days, 10.0, [0.0] * 7))
    as_of = DAY0 + history_days + 7

    reason = usage_drop(state, as_of, LIMITS)

    assert (reason is not None) is fires
    if reason is not None:
        assert reason.baseline == pytest.approx(10.0)  # the rate over the days it existed


def test_usage_drop_ignores_customers_below_min_baseline_daily() -> None:
    state = _customer(_steady_then(35, 0.9, [0.0] * 7))

    assert usage_drop(state, DAY0 + 42, LIMITS) is None
    assert usage_drop(state, DAY0 + 42, RuleSettings(min_baseline_daily=0.5)) is not None


# inactive


def test_inactive_fires_at_exactly_inactive_days_idle_whole_days() -> None:
    state = _customer({DAY0: 5.0})
    # Idle whole days before day X are DAY0+1 .. X-1.

    assert inactive(state, DAY0 + LIMITS.inactive_days, LIMITS) is None
    reason = inactive(state, DAY0 + LIMITS.inactive_days + 1, LIMITS)

    assert reason is not None
    assert reason.observed == LIMITS.inactive_days
    assert reason.baseline == LIMITS.inactive_days
    assert reason.strength == pytest.approx(0.5)


def test_inactive_strength_grows_to_one_at_twice_the_threshold() -> None:
    state = _customer({DAY0: 5.0})

    reason = inactive(state, DAY0 + 1 + 3 * LIMITS.inactive_days, LIMITS)

    assert reason is not None
    assert reason.observed == 3 * LIMITS.inactive_days
    assert reason.strength == 1.0


def test_inactive_counts_zero_volume_events_as_activity() -> None:
    state = _customer({DAY0: 5.0, DAY0 + 5: 0.0})

    assert inactive(state, DAY0 + LIMITS.inactive_days + 1, LIMITS) is None


def test_inactive_does_not_fire_before_the_customer_existed() -> None:
    state = _customer({DAY0: 5.0})

    assert inactive(state, DAY0, LIMITS) is None
    assert inactive(state, DAY0 - 30, LIMITS) is None


def test_inactive_behind_a_much_newer_event_counts_from_the_day_the_ring_forgot() -> None:
    # Evaluated behind a much newer event: the old activity has left the ring, which still
    # remembers its latest forgotten day, so the idle count is exact and does not depend on
    # how far ahead the newer event was.
    for newer in (40, 50, 70):
        state = _customer({DAY0: 5.0, DAY0 + newer: 5.0})
        as_of = DAY0 + 30
        assert state.ring.oldest_day > DAY0

        reason = inactive(state, as_of, LIMITS)

        assert reason is not None
        assert reason.observed == as_of - 1 - DAY0


def test_inactive_reads_an_old_record_without_a_forgotten_day_from_last_seen() -> None:
    state = _customer({DAY0: 5.0})
    state.ring = DailyRing(size=state.ring.size, head_day=DAY0 + 60)  # as written before `gone`

    reason = inactive(state, DAY0 + 70, LIMITS)

    assert reason is not None
    assert reason.observed == 70 - 1


# whole days before the evaluated day


@pytest.mark.parametrize(
    ("daily", "codes"),
    [
        pytest.param(_steady_then(35, 10.0, [2.0] * 7), ["usage_drop"], id="usage_drop"),
        pytest.param(_steady_then(30, 10.0, []), ["usage_drop", "inactive"], id="both"),
        pytest.param(_steady_then(42, 10.0, []), [], id="no_reason"),
    ],
)
def test_events_on_the_evaluated_day_do_not_change_the_evaluation(
    daily: dict[int, float], codes: list[str]
) -> None:
    state = _customer(daily)
    as_of = DAY0 + 42
    before = evaluate(state, as_of, LIMITS)
    assert [r.code for r in before] == codes

    _record(state, as_of, 500.0)
    _record(state, as_of + 1, 500.0)  # and one from the day after, also already in the ring

    assert evaluate(state, as_of, LIMITS) == before


def test_evaluate_returns_every_reason_in_rule_order() -> None:
    state = _customer(_steady_then(30, 10.0, []))
    as_of = DAY0 + 30 + 12  # 12 idle days after a 30-day steady history

    reasons = evaluate(state, as_of, LIMITS)

    assert [r.code for r in reasons] == ["usage_drop", "inactive"]
    assert risk_score(reasons) == 100


@given(
    level=st.floats(LIMITS.min_baseline_daily, 1e6),
    factors=st.lists(st.floats(0.8, 1.2), min_size=60, max_size=60),
)
def test_steady_usage_never_triggers_a_rule(level: float, factors: list[float]) -> None:
    state: CustomerState | None = None
    for offset, factor in enumerate(factors):
        day = DAY0 + offset
        if state is None:
            state = _customer({day: level * factor})
        else:
            _record(state, day, level * factor)
        # As the worker sees it: the watermark enters a day while that day's events arrive.
        assert evaluate(state, day, LIMITS) == ()
        assert evaluate(state, day + 1, LIMITS) == ()
    assert state is not None
    for as_of in range(DAY0 - 3, DAY0 + 1):
        assert evaluate(state, as_of, LIMITS) == ()


# risk_score

reasons_strategy = st.builds(
    Reason,
    code=st.sampled_from(sorted(WEIGHTS)),
    observed=st.floats(0, 1e6),
    baseline=st.floats(0, 1e6),
    window_days=st.integers(1, 90),
    strength=st.floats(0, 1),
)


@given(reasons=st.lists(reasons_strategy, max_size=4), extra=reasons_strategy)
def test_risk_score_is_bounded_and_monotone_in_reasons(
    reasons: list[Reason], extra: Reason
) -> None:
    score = risk_score(tuple(reasons))
    with_extra = risk_score((*reasons, extra))

    assert 0 <= score <= 100
    assert 0 <= with_extra <= 100
    assert with_extra >= score


def test_risk_score_weighs_reasons_by_strength() -> None:
    def reason(code: str, strength: float) -> Reason:
        return Reason(code, observed=0.0, baseline=0.0, window_days=7, strength=strength)

    assert risk_score(()) == 0
    assert risk_score((reason("usage_drop", 0.8),)) == 48
    assert risk_score((reason("usage_drop", 0.1),)) == 30  # strength counts as 0.5 at least
    assert risk_score((reason("inactive", 0.5),)) == 40
    assert risk_score((reason("usage_drop", 1.0), reason("inactive", 1.0))) == 100
