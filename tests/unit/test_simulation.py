"""The synthetic traffic is deterministic, and the rules find exactly its planted customers."""

from __future__ import annotations

import pytest

from churnwatch import simulation
from churnwatch.domain.engagement import ring_days_needed
from churnwatch.domain.events import Heartbeat, UsageEvent
from churnwatch.domain.partition import PartitionClock, PartitionEngine
from config.settings import RuleSettings
from tests.unit.test_partition import DictStore

LATENESS = 3600.0


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


def test_rules_alert_on_every_planted_customer_and_no_steady_one() -> None:
    plan = simulation.Plan(customers=300, days=60, seed=5, decay_fraction=0.05, stop_fraction=0.05)
    customers = simulation.customers_for(plan)
    rules = RuleSettings()
    engine = PartitionEngine(rules, LATENESS, ring_days_needed(35, LATENESS))
    store, clock = DictStore(), PartitionClock(0)
    items: list[UsageEvent | Heartbeat] = [
        UsageEvent(
            e["event_id"], e["customer_id"], e["occurred_at"], e["event_type"], e["quantity"]
        )
        for e in simulation.events(plan, customers)
    ]
    items.append(Heartbeat(plan.end + LATENESS))
    opened: dict[str, set[str]] = {}
    numbered = list(enumerate(items))
    for first in range(0, len(numbered), 5000):
        for alert in engine.process(clock, numbered[first : first + 5000], store).alerts:
            opened.setdefault(alert.customer_id, set()).update(r.code for r in alert.reasons)
    planted = {c.customer_id: c.pattern for c in customers if c.pattern != "steady"}
    assert set(opened) == set(planted)
    for customer_id, pattern in planted.items():
        expected = {"usage_drop", "inactive"} if pattern == "stop" else {"usage_drop"}
        assert opened[customer_id] == expected, customer_id


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"customers": 0, "days": 60}, "at least 1"),
        ({"customers": 10, "days": 30}, "45 days"),
        ({"customers": 10, "days": 60, "decay_fraction": 0.7, "stop_fraction": 0.4}, "exceed"),
    ],
)
def test_impossible_plans_are_refused(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        simulation.Plan(**kwargs)  # type: ignore[arg-type]
