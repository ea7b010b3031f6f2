"""Engagement-shape reasons: breadth_drop, low_engagement (and its sketch), onboarding_stalled."""

from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.billing import BillingEvent, Timeline
from churnwatch.domain.cohort import QuantileSketch, low_engagement_cutoffs
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY, breadth_bit, ring_days_needed
from churnwatch.domain.rules import (
    activated_at,
    breadth_drop,
    engagement_rate,
    evaluate,
    low_engagement,
    onboarding_stalled,
)
from config.settings import RuleSettings

LIMITS = RuleSettings(milestones={"report_run": 1, "invite_sent": 2})
RING_DAYS = ring_days_needed(LIMITS.recent_days + LIMITS.baseline_days, 3600)
DAY0 = 19_700
NOON = SECONDS_PER_DAY // 2


def _use(state: CustomerState, day: int, users: int, kinds: int, amount: float = 10.0) -> None:
    """One event per (user, kind) pair on `day`, as the engine applies them."""
    for user in range(users):
        for kind in range(kinds):
            at = day * SECONDS_PER_DAY + NOON
            bits = breadth_bit(f"u{user}"), breadth_bit(f"type-{kind}")
            assert state.ring.add(day, amount / (users * kinds), *bits)
            state.first_seen = at if state.first_seen is None else min(state.first_seen, at)
            state.last_seen = at if state.last_seen is None else max(state.last_seen, at)


def _subscribed(state: CustomerState, since_day: int) -> CustomerState:
    state.billing = Timeline()
    state.billing.insert(
        BillingEvent("b1", state.customer_id, since_day * SECONDS_PER_DAY, "subscription.started",
                     mrr_cents=4900, plan="team")
    )  # fmt: skip
    return state


def _customer(
    days: int, users: int, kinds: int, then: tuple[int, int] | None = None
) -> CustomerState:
    """`days` days of usage from DAY0 by `users` users over `kinds` event types; then the last
    `recent_days` by `then` = (users, kinds)."""
    state = CustomerState.new("c-1", 0, None, RING_DAYS)
    for offset in range(days):
        shape = (users, kinds)
        if then is not None and offset >= days - LIMITS.recent_days:
            shape = then
        _use(state, DAY0 + offset, *shape)
    return state


AS_OF = DAY0 + 42

# breadth_drop


def test_breadth_drop_fires_when_users_shrink_to_a_fraction_of_the_baseline() -> None:
    reason = breadth_drop(_customer(42, users=6, kinds=3, then=(1, 3)), AS_OF, LIMITS)

    assert reason is not None
    assert reason.measure == "users"
    assert reason.observed == pytest.approx(1.0, abs=0.05)
    assert reason.baseline == pytest.approx(6.0, abs=1.0)
    assert reason.area == "execution"


def test_breadth_drop_watches_event_types_too() -> None:
    reason = breadth_drop(_customer(42, users=2, kinds=6, then=(2, 1)), AS_OF, LIMITS)

    assert reason is not None
    assert reason.measure == "event_types"


def test_breadth_drop_is_quiet_for_steady_breadth_and_small_accounts() -> None:
    assert breadth_drop(_customer(42, users=6, kinds=4), AS_OF, LIMITS) is None
    # Two users going to one is not a drop worth a page: below min_baseline_breadth.
    assert breadth_drop(_customer(42, users=2, kinds=2, then=(1, 1)), AS_OF, LIMITS) is None


def test_breadth_drop_leaves_silence_to_the_other_rules() -> None:
    state = _customer(42 - LIMITS.recent_days, users=6, kinds=3)
    _use(state, AS_OF - 1, users=1, kinds=1)  # one active day of seven

    assert breadth_drop(state, AS_OF, LIMITS) is None


def test_breadth_drop_needs_a_baseline() -> None:
    assert breadth_drop(_customer(10, users=6, kinds=3, then=(1, 1)), DAY0 + 10, LIMITS) is None


# low_engagement


def test_low_engagement_compares_the_rate_with_the_cutoff() -> None:
    state = _subscribed(_customer(42, users=1, kinds=1), DAY0)  # 10 per day

    assert low_engagement(state, AS_OF, LIMITS, cutoff=12.0) is not None
    assert low_engagement(state, AS_OF, LIMITS, cutoff=10.0) is None  # strictly below
    assert low_engagement(state, AS_OF, LIMITS, cutoff=None) is None


def test_engagement_rate_is_scaled_for_short_tenure_and_needs_a_subscription() -> None:
    state = _customer(20, users=1, kinds=1)  # 10 per day for 20 days
    assert engagement_rate(state, DAY0 + 20, LIMITS) is None  # not subscribed: not ranked
    _subscribed(state, DAY0)

    assert engagement_rate(state, DAY0 + 20, LIMITS) == pytest.approx(10.0)  # over 20 days
    assert engagement_rate(state, DAY0 + 40, LIMITS) == pytest.approx(80 / 28)  # days 12-39
    assert engagement_rate(state, DAY0 + 10, LIMITS) is None  # under 14 days: too new


@given(st.lists(st.floats(0, 1e6), min_size=1, max_size=300), st.floats(0, 1))
def test_sketch_quantiles_are_within_one_percent_of_the_exact_ones(
    values: list[float], q: float
) -> None:
    sketch = QuantileSketch()
    for value in values:
        sketch.add(value)

    exact = sorted(values)[math.floor(q * (len(values) - 1))]
    estimate = sketch.quantile(q)

    assert estimate is not None
    assert estimate == pytest.approx(exact, rel=0.0101, abs=1e-300)


@given(st.lists(st.floats(0, 1e6), max_size=100), st.lists(st.floats(0, 1e6), max_size=100))
def test_sketches_merge_into_the_sketch_of_all_values(
    left: list[float], right: list[float]
) -> None:
    a, b, both = QuantileSketch(), QuantileSketch(), QuantileSketch()
    for value in left:
        a.add(value)
        both.add(value)
    for value in right:
        b.add(value)
        both.add(value)

    a.merge(b)

    assert a == both


def test_cutoffs_need_a_population_and_split_by_segment() -> None:
    team, solo = (("plan", "team"),), (("plan", "solo"),)
    rates = [(team, float(rate)) for rate in range(1, 101)] + [(solo, 1.0)] * 5

    cutoffs = low_engagement_cutoffs(rates, share=0.1, min_population=20)

    assert set(cutoffs) == {team}
    assert cutoffs[team] == pytest.approx(10.0, rel=0.0101)  # the value at rank 9 of 0..99


def test_evaluate_passes_the_cutoff_to_low_engagement() -> None:
    state = _subscribed(_customer(42, users=4, kinds=4), DAY0)

    plain = RuleSettings()  # no milestones: onboarding_stalled is off
    assert [r.code for r in evaluate(state, AS_OF, plain, 100.0)] == ["low_engagement"]
    assert evaluate(state, AS_OF, plain) == ()


# onboarding_stalled


def _onboarding(day_events: dict[int, list[str]]) -> CustomerState:
    state = CustomerState.new("c-1", 0, None, RING_DAYS)
    for offset, kinds in sorted(day_events.items()):
        for kind in kinds:
            _use(state, DAY0 + offset, 1, 1)
            needed = LIMITS.milestones.get(kind)
            if needed:
                state.note_milestone(kind, (DAY0 + offset) * SECONDS_PER_DAY + NOON, needed)
    return state


def test_onboarding_stalls_when_milestones_are_missing_after_the_deadline() -> None:
    state = _onboarding({0: ["login"], 3: ["report_run"], 5: ["invite_sent"]})
    deadline = DAY0 + LIMITS.onboarding_days

    assert onboarding_stalled(state, deadline - 1, LIMITS) is None  # still within the days
    reason = onboarding_stalled(state, deadline, LIMITS)
    assert reason is not None
    assert (reason.observed, reason.baseline, reason.area) == (1.0, 2.0, "onboarding")


def test_onboarding_is_done_once_every_milestone_is_met() -> None:
    state = _onboarding({0: ["login"], 3: ["report_run"], 5: ["invite_sent"], 20: ["invite_sent"]})

    assert onboarding_stalled(state, DAY0 + 20, LIMITS) is not None  # second invite not yet
    assert onboarding_stalled(state, DAY0 + 21, LIMITS) is None
    assert onboarding_stalled(state, DAY0 + 21, RuleSettings()) is None  # no milestones: off


@given(st.permutations([1.0, 5.0, 3.0, 9.0, 2.0]))
def test_milestones_keep_the_earliest_times_whatever_the_arrival_order(
    times: list[float],
) -> None:
    state = CustomerState.new("c-1", 0, None, RING_DAYS)
    for at in times:
        state.note_milestone("invite_sent", at, needed=2)

    assert state.milestones["invite_sent"] == (1.0, 2.0)
    assert activated_at(state.milestones, {"invite_sent": 2}) == 2.0
    assert activated_at(state.milestones, {"invite_sent": 3}) is None
