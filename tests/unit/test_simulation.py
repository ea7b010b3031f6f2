"""The synthetic traffic is deterministic, and the rules find exactly its planted customers."""

from __future__ import annotations

from typing import Any
from unittest import mock

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch import simulation
from churnwatch.domain.alerts import AlertEvent, AlertPolicy
from churnwatch.domain.billing import parse_billing_message
from churnwatch.domain.churn import Figures
from churnwatch.domain.engagement import ring_days_needed
from churnwatch.domain.events import Heartbeat, parse_usage_message
from churnwatch.domain.partition import ClosedPeriod, Item, PartitionClock, PartitionEngine
from config.settings import EventLimits, RuleSettings
from tests.unit.test_partition import DictStore

LATENESS = 3600.0
DAY = 86_400.0


def test_same_seed_same_traffic() -> None:
    plan = simulation.Plan(customers=50, days=50, seed=11)
    first = list(simulation.events(plan, simulation.customers_for(plan)))
    second = list(simulation.events(plan, simulation.customers_for(plan)))
    assert first == second
    assert first != list(
        simulation.events(
            simulation.Plan(50, 50, seed=12), simulation.customers_for(simulation.Plan(50, 50, 12))
        )
    )


def test_events_come_in_event_time_order_with_the_planted_share() -> None:
    plan = simulation.Plan(customers=400, days=60, decay_fraction=0.05, stop_fraction=0.05)
    customers = simulation.customers_for(plan)
    assert sum(c.pattern == "decay" for c in customers) == 20
    assert sum(c.pattern == "stop" for c in customers) == 20
    times = [e["occurred_at"] for e in simulation.events(plan, customers)]
    assert times == sorted(times)
    assert plan.start <= times[0]
    assert times[-1] < plan.end
    estimate = simulation.event_count_estimate(plan)
    assert 0.8 * estimate < len(times) < 1.2 * estimate


EXPECTED_REASONS = {
    "decay": {"usage_drop"},
    "stop": {"usage_drop", "inactive", "cancel_scheduled"},
    "churn": {"cancel_scheduled"},
    "narrow": {"breadth_drop"},
    "stall": {"onboarding_stalled"},
    "dunning": {"payment_failed"},
    "downgrade": {"downgrade"},
    "recover": {"usage_drop"},
    "flap": {"usage_drop"},
}
RULES = RuleSettings(milestones=simulation.ACTIVATION)
RULES_COOLDOWN = AlertPolicy().cooldown_days


def run_simulation(plan: simulation.Plan) -> tuple[list[AlertEvent], list[ClosedPeriod]]:
    """The simulated traffic through the engine as one partition, in batches of 5,000."""
    customers = simulation.customers_for(plan)
    engine = PartitionEngine(RULES, LATENESS, ring_days_needed(35, LATENESS))
    store, clock = DictStore(), PartitionClock(0)
    limits, now = EventLimits(), plan.end + 86_400
    items: list[Item] = []
    for kind, event in simulation.merged(
        simulation.events(plan, customers), simulation.billing_events(plan, customers)
    ):
        raw = orjson.dumps(event)
        if kind == "usage":
            items.append(parse_usage_message(raw, None, now=now, limits=limits))
        else:
            items.append(
                parse_billing_message(
                    raw, None, now=now, limits=limits, segment_attributes=("plan", "channel")
                )
            )
    items.append(Heartbeat(plan.end + LATENESS + 1))  # the watermark passes the end
    numbered = list(enumerate(items))
    alerts: list[AlertEvent] = []
    closed: list[ClosedPeriod] = []
    for first in range(0, len(numbered), 5000):
        result = engine.process(clock, numbered[first : first + 5000], store)
        assert not result.late
        alerts.extend(result.alerts)
        closed.extend(result.closed)
    return alerts, closed


PLAN = simulation.Plan(
    customers=300,
    days=60,
    seed=5,
    decay_fraction=0.05,
    stop_fraction=0.05,
    churn_fraction=0.05,
    new_fraction=0.05,
    narrow_fraction=0.05,
    stall_fraction=0.05,
    dunning_fraction=0.04,
    downgrade_fraction=0.04,
    recover_fraction=0.04,
    flap_fraction=0.04,
)


def test_rules_alert_on_every_planted_customer_and_no_other() -> None:
    alerts, _ = run_simulation(PLAN)
    customers = {c.customer_id: c for c in simulation.customers_for(PLAN)}
    reasons: dict[str, set[str]] = {}
    statuses: dict[str, list[str]] = {}
    for alert in alerts:
        reasons.setdefault(alert.customer_id, set()).update(r.code for r in alert.reasons)
        statuses.setdefault(alert.customer_id, []).append(alert.status)
    planted = {cid for cid, c in customers.items() if c.pattern in simulation.PLANTED}
    assert planted <= set(reasons)
    for customer_id in planted:
        # Losing usage can also rank a customer among its segment's least engaged.
        found = reasons[customer_id] - {"low_engagement"}
        assert found == EXPECTED_REASONS[customers[customer_id].pattern], customer_id
        if customers[customer_id].pattern == "churn":
            assert statuses[customer_id][-1] == "churned", customer_id
        if customers[customer_id].pattern in ("recover", "flap"):
            assert "resolved" in statuses[customer_id], customer_id
    # No alert opens within the cooldown after one closed, flapping customers included.
    closed_on: dict[str, int] = {}
    for alert in alerts:
        if alert.status == "opened" and alert.customer_id in closed_on:
            assert alert.as_of_day - closed_on[alert.customer_id] >= RULES_COOLDOWN
        if alert.status in ("resolved", "churned"):
            closed_on[alert.customer_id] = alert.as_of_day
    # Anyone else alerted is among the least engaged of its segment, and only for that.
    others = set(reasons) - planted
    assert others, "the bottom tenth of the larger segments is flagged"
    for customer_id in others:
        assert reasons[customer_id] == {"low_engagement"}, customer_id
        customer = customers[customer_id]
        peers = sorted(
            c.daily_volume
            for c in customers.values()
            if (c.plan, c.channel) == (customer.plan, customer.channel) and c.pattern == "steady"
        )
        rank = peers.index(customer.daily_volume) if customer.pattern == "steady" else 0
        assert rank < 0.25 * len(peers), (customer_id, rank, len(peers))


def test_closed_period_figures_match_the_simulated_ground_truth() -> None:
    _, closed = run_simulation(PLAN)
    february = [c for c in closed if c.period.label == "2020-02"]
    assert len(february) == 1
    figures = Figures()
    for part in february[0].figures.values():
        figures.add(part)
    start, end = february[0].period.start, february[0].period.end
    customers = simulation.customers_for(PLAN)

    def started(c: simulation.Customer) -> float:
        return PLAN.start + c.first_day * DAY  # within the first hour of that day

    def ended(c: simulation.Customer) -> float:
        if c.pattern == "churn" and c.onset_day is not None:
            return PLAN.start + c.onset_day * DAY
        return float("inf")

    at_start = [c for c in customers if started(c) < start and ended(c) > start]
    churned = [c for c in at_start if ended(c) <= end]
    new = [c for c in customers if start <= started(c) < end and ended(c) > end]
    assert figures.start_customers == len(at_start)
    assert figures.churned_customers == len(churned) > 0
    assert figures.retained_customers == len(at_start) - len(churned)
    assert figures.new_customers == len(new) > 0
    assert figures.start_mrr_cents == round(100 * sum(c.mrr for c in at_start))
    assert figures.churned_mrr_cents == round(100 * sum(c.mrr for c in churned))
    assert figures.churned_involuntary_customers == 0
    assert set(february[0].figures) <= {
        (plan, channel) for plan, _, _ in simulation.PLANS for channel, _ in simulation.CHANNELS
    }


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0, "days": 60}, "at least 1"),
        ({"customers": 10, "days": 30}, r"decay needs 46, stop needs 46\)"),
        ({"customers": 10, "days": 45}, "decay needs 46"),
        ({"customers": 10, "days": 49, "flap_fraction": 0.1}, r"\(flap needs 50\)"),
        ({"customers": 10, "days": 60, "decay_fraction": 0.7, "stop_fraction": 0.4}, "exceed"),
        ({"customers": 10, "days": 60, "churn_fraction": -0.1}, "negative"),
        ({"customers": 10, "days": 60, "churn_fraction": float("nan")}, "finite"),
    ],
)
def test_impossible_plans_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulation.Plan(**kwargs)  # type: ignore[arg-type]


FRACTIONS = {f"{pattern}_fraction": pattern for pattern in (*simulation.PLANTED, "new")}


def change_days(customer: simulation.Customer) -> tuple[int, int]:
    """The first and last day on which a simulated customer's planted change shows."""
    onset = customer.onset_day
    if onset is None:
        return customer.first_day, customer.first_day
    if customer.pattern == "churn":
        return onset - simulation.CANCEL_NOTICE_DAYS, onset
    if customer.pattern == "recover":
        return onset, onset + simulation.DIP_DAYS - 1
    if customer.pattern == "flap":
        return onset, onset + 2 * simulation.DIP_DAYS + simulation.FLAP_GAP_DAYS - 1
    return onset, onset


@st.composite
def plan_fields(draw: st.DrawFn) -> dict[str, Any]:
    fraction = st.one_of(st.just(0.0), st.floats(0.001, 0.09))
    return {
        "customers": draw(st.integers(1, 150)),
        "days": draw(st.integers(1, 90)),
        "seed": draw(st.integers(0, 2**16)),
        **{name: draw(fraction) for name in FRACTIONS},
    }


@given(fields=plan_fields())
def test_every_plan_that_validates_builds_and_every_refusal_names_its_patterns(
    fields: dict[str, Any],
) -> None:
    days = fields["days"]
    short = {
        pattern
        for name, pattern in FRACTIONS.items()
        if fields[name] > 0 and days < simulation.min_days(pattern)
    }
    if short:
        with pytest.raises(ValueError, match=f"^{days} days are too few") as refused:
            simulation.Plan(**fields)
        for pattern in (*simulation.PLANTED, "new"):
            named = f"{pattern} needs {simulation.min_days(pattern)}" in str(refused.value)
            assert named is (pattern in short), pattern
    else:
        plan = simulation.Plan(**fields)
        for customer in simulation.customers_for(plan):
            first, last = change_days(customer)
            assert 0 <= customer.first_day < days
            assert 0 <= first <= last < days, customer


@pytest.mark.parametrize(
    "pattern", [pattern for pattern in simulation.PLANTED if simulation.min_days(pattern) > 1]
)
def test_one_day_short_of_min_days_a_planted_change_does_not_fit(
    pattern: simulation.Pattern,
) -> None:
    fields: dict[str, Any] = dict.fromkeys(FRACTIONS, 0.0) | {f"{pattern}_fraction": 1.0}
    days = simulation.min_days(pattern)
    at_minimum = simulation.customers_for(simulation.Plan(200, days, **fields))
    assert all(change_days(customer)[1] < days for customer in at_minimum)
    with mock.patch.object(simulation.Plan, "__post_init__", return_value=None):
        short = simulation.Plan(200, days - 1, **fields)
    try:
        customers = simulation.customers_for(short)
    except ValueError:
        return  # an empty range to draw the onset from
    assert any(change_days(customer)[1] >= days - 1 for customer in customers)
