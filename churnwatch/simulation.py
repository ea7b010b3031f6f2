"""Synthetic product usage: steady customers, and planted ones whose usage decays or stops.

Deterministic for a seed. Steady customers use the product every day at their own volume
(+-20%), so a correct monitor opens no alert for them; planted customers change at an onset day
late enough to have a full baseline before it and time to be detected after it.
"""

from __future__ import annotations

import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal

from churnwatch.domain.engagement import SECONDS_PER_DAY

Pattern = Literal["steady", "decay", "stop"]
DECAY_HALF_LIFE_DAYS = 3.0
EVENT_TYPES = ("page_view", "report_run", "api_call", "export", "login")


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    pattern: Pattern
    daily_volume: float
    first_day: int
    onset_day: int | None  # the day planted usage starts to decay or stops


@dataclass(frozen=True, slots=True)
class Plan:
    """What to simulate: `start` is the epoch second of day 0 (midnight UTC)."""

    customers: int
    days: int
    seed: int = 7
    decay_fraction: float = 0.025
    stop_fraction: float = 0.025
    start: float = 1_577_836_800.0  # 2020-01-01T00:00:00Z

    def __post_init__(self) -> None:
        if self.customers < 1 or self.days < 1:
            raise ValueError("customers and days must be at least 1")
        if self.decay_fraction < 0 or self.stop_fraction < 0:
            raise ValueError("fractions cannot be negative")
        if self.decay_fraction + self.stop_fraction > 1:
            raise ValueError("decay_fraction + stop_fraction cannot exceed 1")
        if self.days < 45 and self.decay_fraction + self.stop_fraction > 0:
            raise ValueError("planting drop-offs needs at least 45 days (baseline + detection)")

    @property
    def end(self) -> float:
        return self.start + self.days * SECONDS_PER_DAY


def customers_for(plan: Plan) -> list[Customer]:
    """The simulated customers; planted ones are spread evenly through the id range."""
    rng = random.Random(plan.seed)
    planted_decay = round(plan.customers * plan.decay_fraction)
    planted_stop = round(plan.customers * plan.stop_fraction)
    steady = plan.customers - planted_decay - planted_stop
    counts: dict[Pattern, int] = {"decay": planted_decay, "stop": planted_stop, "steady": steady}
    patterns = [pattern for pattern, count in counts.items() for _ in range(count)]
    rng.shuffle(patterns)
    earliest_onset = max(36, math.ceil(plan.days * 0.55))
    customers = []
    for number, pattern in enumerate(patterns):
        onset = None if pattern == "steady" else rng.randint(earliest_onset, plan.days - 10)
        customers.append(
            Customer(
                customer_id=f"cust-{number:06d}",
                pattern=pattern,
                daily_volume=rng.uniform(20, 200),
                first_day=rng.randint(0, min(3, plan.days - 1)),
                onset_day=onset,
            )
        )
    return customers


def volume_factor(customer: Customer, day: int) -> float:
    """Share of its usual volume the customer uses on `day`."""
    if customer.onset_day is None or day < customer.onset_day:
        return 1.0
    if customer.pattern == "stop":
        return 0.0
    return float(0.5 ** ((day - customer.onset_day + 1) / DECAY_HALF_LIFE_DAYS))


def events(plan: Plan, customers: list[Customer]) -> Iterator[dict[str, Any]]:
    """Usage events in event-time order, one UTC day at a time."""
    rng = random.Random(plan.seed + 1)
    for day in range(plan.days):
        day_start = plan.start + day * SECONDS_PER_DAY
        todays: list[dict[str, Any]] = []
        for customer in customers:
            if day < customer.first_day:
                continue
            factor = volume_factor(customer, day)
            if factor == 0.0:
                continue
            volume = customer.daily_volume * factor * rng.uniform(0.8, 1.2)
            count = 1 + min(_poisson(rng, 1.5), 6)
            for k in range(count):
                todays.append(
                    {
                        "event_id": f"{customer.customer_id}-{day}-{k}",
                        "customer_id": customer.customer_id,
                        "occurred_at": round(day_start + rng.uniform(0, SECONDS_PER_DAY - 1), 3),
                        "event_type": rng.choice(EVENT_TYPES),
                        "user_id": f"{customer.customer_id}-u{rng.randint(1, 5)}",
                        "quantity": round(volume / count, 3),
                    }
                )
        todays.sort(key=lambda event: event["occurred_at"])
        yield from todays


def event_count_estimate(plan: Plan) -> int:
    """Roughly how many events `events` yields (for progress bars)."""
    return round(plan.customers * plan.days * 2.5)


def _poisson(rng: random.Random, mean: float) -> int:
    """Knuth's method: fine for the small means used here."""
    limit, product, count = math.exp(-mean), rng.random(), 0
    while product > limit:
        product *= rng.random()
        count += 1
    return count
