"""Per-segment thresholds: a segment's own rules decide its customers' reasons, not the base's."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pytest

from churnwatch.domain.billing import BillingEvent
from churnwatch.domain.engagement import day_of, ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import Item, PartitionClock, PartitionEngine
from config.settings import RuleSettings, SegmentRules
from tests.unit.test_partition import DictStore

DAY = 86_400.0
START = 1_577_836_800.0  # 2020-01-01
FIRST_DAY = day_of(START)
LATENESS = 3600.0
RULES = RuleSettings()  # no milestones: onboarding_stalled is off unless a segment names some

Reasons = dict[int, dict[str, set[str]]]  # day (from START) -> customer -> reason codes


def engine_with(segments: dict[str, dict[str, Any]], base: RuleSettings = RULES) -> PartitionEngine:
    """An engine over `base` where each plan named in `segments` overrides those rule fields."""
    entries = [SegmentRules(match={"plan": plan}, rules=rules) for plan, rules in segments.items()]
    return PartitionEngine(
        base,
        LATENESS,
        ring_days_needed(35, LATENESS),
        segment_by=("plan",),
        segment_thresholds=tuple(
            (tuple(sorted(entry.match.items())), entry.apply_to(base)) for entry in entries
        ),
    )


def subscribed(customer_id: str, plan: str) -> BillingEvent:
    return BillingEvent(
        f"{customer_id}-start",
        customer_id,
        START,
        "subscription.started",
        mrr_cents=4900,
        plan=plan,
        seats=1,
        currency="USD",
    )


def used(
    customer_id: str, day: int, quantity: float = 10.0, event_type: str = "page_view"
) -> UsageEvent:
    at = START + day * DAY + 3600 + len(event_type)  # event types of a day at distinct times
    return UsageEvent(
        f"{customer_id}-{day}-{event_type}", customer_id, at, event_type, quantity, "u1"
    )


def daily(customer_id: str, days: range, quantity: float = 10.0) -> list[UsageEvent]:
    return [used(customer_id, day, quantity) for day in days]


def reasons_by_day(
    engine: PartitionEngine, items: Sequence[UsageEvent | BillingEvent], days: int
) -> tuple[Reasons, DictStore]:
    """Feed one day at a time; every customer's reason codes as of each day evaluated."""
    store, clock = DictStore(), PartitionClock(0)
    ordered = sorted(items, key=lambda item: item.occurred_at)
    found: Reasons = {}
    offset = 0
    for day in range(days):
        todays: list[Item] = [i for i in ordered if day_of(i.occurred_at) == FIRST_DAY + day]
        todays.append(Heartbeat(START + (day + 1) * DAY + LATENESS + 1))
        result = engine.process(clock, list(enumerate(todays, start=offset)), store)
        offset += len(todays)
        as_of = clock.evaluated_day
        assert as_of is not None
        cutoffs = result.cutoffs or {}
        found[as_of - FIRST_DAY] = {
            customer_id: {
                reason.code
                for reason in engine.assess(
                    state, as_of, cutoffs.get(engine.segment_labels(state, as_of))
                )[0].reasons
            }
            for customer_id, state in store.states.items()
        }
    return found, store


def days_with(found: Reasons, customer_id: str, code: str) -> list[int]:
    return [day for day, reasons in found.items() if code in reasons.get(customer_id, set())]


def test_tracked_milestones_are_every_segments_with_the_largest_count() -> None:
    base = RuleSettings(milestones={"report_run": 1})
    engine = engine_with({"business": {"milestones": {"report_run": 2, "export": 1}}}, base)

    assert engine.tracked_milestones() == {"report_run": 2, "export": 1}
    assert engine_with({}, base).tracked_milestones() == {"report_run": 1}


def test_a_segments_own_milestones_are_recorded_and_end_onboarding_stalled() -> None:
    engine = engine_with({"business": {"milestones": {"report_run": 2}}})
    items: list[UsageEvent | BillingEvent] = [
        *(subscribed(customer, plan) for customer, plan in
          (("activated", "business"), ("stalled", "business"), ("starter", "starter"))),
        *daily("activated", range(20)),
        *daily("stalled", range(20)),
        *daily("starter", range(20)),
        used("activated", 1, event_type="report_run"),
        used("activated", 2, event_type="report_run"),
    ]  # fmt: skip

    found, store = reasons_by_day(engine, items, days=20)

    assert store.states["activated"].milestones == {
        "report_run": (used("activated", 1, 1.0, "report_run").occurred_at,
                       used("activated", 2, 1.0, "report_run").occurred_at),
    }  # fmt: skip
    assert days_with(found, "activated", "onboarding_stalled") == []
    # The segment's rule is on: a business customer without the milestones stalls on day 14.
    assert days_with(found, "stalled", "onboarding_stalled") == list(
        range(RULES.onboarding_days, 21)
    )
    assert days_with(found, "starter", "onboarding_stalled") == []  # the base names none


@pytest.mark.parametrize(
    "team_rules", [{"low_engagement_share": 0.0}, {"low_engagement_min_population": 26}]
)
def test_a_segment_with_low_engagement_off_is_not_ranked_while_another_is(
    team_rules: dict[str, Any],
) -> None:
    engine = engine_with({"team": team_rules})
    per_plan = 25  # above the base minimum population (20), below the team's 26
    items: list[UsageEvent | BillingEvent] = []
    for plan in ("starter", "team"):
        for number in range(per_plan):
            customer = f"{plan}-{number:02d}"
            items += [subscribed(customer, plan), *daily(customer, range(30), 10.0 + number)]

    found, _ = reasons_by_day(engine, items, days=30)

    flagged = {
        customer
        for reasons in found.values()
        for customer, codes in reasons.items()
        if "low_engagement" in codes
    }
    assert flagged, "the starter segment ranks its least engaged"
    assert all(customer.startswith("starter-0") for customer in flagged), flagged
    assert not any(customer.startswith("team-") for customer in flagged)


def test_a_segment_with_longer_inactive_days_waits_longer() -> None:
    engine = engine_with({"business": {"inactive_days": 14}})
    items: list[UsageEvent | BillingEvent] = [
        subscribed("starter", "starter"),
        subscribed("business", "business"),
        *daily("starter", range(20)),
        *daily("business", range(20)),
    ]

    found, _ = reasons_by_day(engine, items, days=40)

    # Last usage on day 19: inactive once the whole days since reach each segment's limit.
    assert days_with(found, "starter", "inactive")[0] == 20 + RULES.inactive_days
    assert days_with(found, "business", "inactive")[0] == 20 + 14
