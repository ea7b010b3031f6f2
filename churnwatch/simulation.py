"""Synthetic usage and billing: steady customers, and planted ones who drift away or leave.

Deterministic for a seed. Every customer subscribes on its first day (plan, channel, MRR) and
renews monthly. Steady and new customers use the product every day at their own volume (+-20%),
with up to five users and every event type (both activation milestones on their first day), so
a correct monitor opens no alert for them other
than `low_engagement` for the least engaged tenth of a segment. Planted customers change at an
onset day late enough to have a full baseline before it and time to be detected after it:
`decay` customers' usage halves every few days; `stop` customers stop using the product and ask
to cancel at a date after the simulation; `churn` customers cancel and, five days later, their
subscription ends and their usage stops; `narrow` customers keep their volume but shrink to
one user and one event type; `stall` customers never reach the activation milestones
(`ACTIVATION`: set them as `rules.milestones`); `dunning` customers' payment fails and is never
recovered; `downgrade` customers move to half their MRR; `recover` customers use a tenth of
their volume for `DIP_DAYS` days, then return to normal; `flap` customers do that twice,
`FLAP_GAP_DAYS` apart.
"""

from __future__ import annotations

import heapq
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, TypeVar

from churnwatch.domain.engagement import SECONDS_PER_DAY

T = TypeVar("T")
Pattern = Literal[
    "steady", "new", "decay", "stop", "churn", "narrow", "stall", "dunning", "downgrade",
    "recover", "flap",
]  # fmt: skip
PLANTED: tuple[Pattern, ...] = (
    "decay", "stop", "churn", "narrow", "stall", "dunning", "downgrade", "recover", "flap",
)  # fmt: skip
DIP_DAYS = 8
FLAP_GAP_DAYS = 6
DECAY_HALF_LIFE_DAYS = 3.0
CANCEL_NOTICE_DAYS = 5
EVENT_TYPES = ("page_view", "report_run", "api_call", "export", "login")
# Activation milestones the simulation is built for (event type -> events needed).
ACTIVATION = {"report_run": 1, "export": 1}
STALLED_EVENT_TYPES = tuple(t for t in EVENT_TYPES if t not in ACTIVATION)
PLANS = (("starter", 49.0, 0.6), ("team", 199.0, 0.3), ("business", 799.0, 0.1))
CHANNELS = (("self-serve", 0.7), ("sales", 0.2), ("partner", 0.1))


@dataclass(frozen=True, slots=True)
class Customer:
    customer_id: str
    pattern: Pattern
    daily_volume: float
    first_day: int
    onset_day: int | None  # planted: the day usage starts to decay, stops, or the sub ends
    plan: str = "starter"
    channel: str = "self-serve"
    mrr: float = 49.0


@dataclass(frozen=True, slots=True)
class Plan:
    """What to simulate: `start` is the epoch second of day 0 (midnight UTC)."""

    customers: int
    days: int
    seed: int = 7
    decay_fraction: float = 0.025
    stop_fraction: float = 0.025
    churn_fraction: float = 0.0
    new_fraction: float = 0.0
    narrow_fraction: float = 0.0
    stall_fraction: float = 0.0
    dunning_fraction: float = 0.0
    downgrade_fraction: float = 0.0
    recover_fraction: float = 0.0
    flap_fraction: float = 0.0
    start: float = 1_577_836_800.0  # 2020-01-01T00:00:00Z

    def __post_init__(self) -> None:
        fractions: dict[Pattern, float] = {
            "decay": self.decay_fraction,
            "stop": self.stop_fraction,
            "churn": self.churn_fraction,
            "new": self.new_fraction,
            "narrow": self.narrow_fraction,
            "stall": self.stall_fraction,
            "dunning": self.dunning_fraction,
            "downgrade": self.downgrade_fraction,
            "recover": self.recover_fraction,
            "flap": self.flap_fraction,
        }
        if self.customers < 1 or self.days < 1:
            raise ValueError("customers and days must be at least 1")
        if min(fractions.values()) < 0:
            raise ValueError("fractions cannot be negative")
        if not all(math.isfinite(fraction) for fraction in fractions.values()):
            raise ValueError("fractions must be finite numbers")
        if sum(fractions.values()) > 1:
            raise ValueError("the fractions of planted and new customers cannot exceed 1")
        too_short = [
            f"{pattern} needs {min_days(pattern)}"
            for pattern, fraction in fractions.items()
            if fraction > 0 and self.days < min_days(pattern)
        ]
        if too_short:
            raise ValueError(
                f"{self.days} days are too few to plant every pattern asked for "
                f"({', '.join(too_short)}): add days or set those fractions to 0"
            )

    @property
    def end(self) -> float:
        return self.start + self.days * SECONDS_PER_DAY


def min_days(pattern: Pattern) -> int:
    """The fewest days in which every onset `customers_for` can draw falls inside the plan."""
    if pattern in ("decay", "stop", "narrow", "dunning", "downgrade"):
        return 46  # onset from max(36, ceil(days * 0.55)) to days - 10: else an empty range
    if pattern == "churn":
        return 31  # subscription ends from max(26, ceil(days * 0.55) - 10) to days - 5
    # Onset up to max(28, days - room): below this the dips can run past the last day.
    if pattern == "recover":
        return 28 + DIP_DAYS
    if pattern == "flap":
        return 28 + DIP_DAYS + FLAP_GAP_DAYS + DIP_DAYS
    return 1  # `new` joins from day days // 3 to days - 20; steady and stall draw no onset


def customers_for(plan: Plan) -> list[Customer]:
    """The simulated customers; planted ones are spread evenly through the id range."""
    rng = random.Random(plan.seed)
    counts: dict[Pattern, int] = {
        "decay": round(plan.customers * plan.decay_fraction),
        "stop": round(plan.customers * plan.stop_fraction),
        "churn": round(plan.customers * plan.churn_fraction),
        "new": round(plan.customers * plan.new_fraction),
        "narrow": round(plan.customers * plan.narrow_fraction),
        "stall": round(plan.customers * plan.stall_fraction),
        "dunning": round(plan.customers * plan.dunning_fraction),
        "downgrade": round(plan.customers * plan.downgrade_fraction),
        "recover": round(plan.customers * plan.recover_fraction),
        "flap": round(plan.customers * plan.flap_fraction),
    }
    counts["steady"] = plan.customers - sum(counts.values())
    patterns = [pattern for pattern, count in counts.items() for _ in range(count)]
    rng.shuffle(patterns)
    earliest_onset = max(36, math.ceil(plan.days * 0.55))
    customers = []
    for number, pattern in enumerate(patterns):
        first_day = rng.randint(0, min(3, plan.days - 1))
        onset = None
        if pattern in ("decay", "stop", "narrow", "dunning", "downgrade"):
            onset = rng.randint(earliest_onset, plan.days - 10)
        elif pattern in ("recover", "flap"):  # room for the dip(s), the return and the resolve
            room = DIP_DAYS + 12 + (FLAP_GAP_DAYS + DIP_DAYS if pattern == "flap" else 0)
            onset = rng.randint(min(28, plan.days - room), max(28, plan.days - room))
        elif pattern == "churn":
            onset = rng.randint(earliest_onset - 10, plan.days - 5)
        elif pattern == "new":
            first_day = rng.randint(plan.days // 3, max(plan.days // 3, plan.days - 20))
        plan_name, price = _pick(rng, [(name, (name, price), w) for name, price, w in PLANS])
        channel = _pick(rng, [(name, name, weight) for name, weight in CHANNELS])
        volume = rng.uniform(20, 200)
        if pattern in ("recover", "flap"):  # engaged customers: a dip, not a low rank, is news
            volume = 100 + (volume - 20) * 100 / 180
        customers.append(
            Customer(
                customer_id=f"cust-{number:06d}",
                pattern=pattern,
                daily_volume=volume,
                first_day=first_day,
                onset_day=onset,
                plan=plan_name,
                channel=channel,
                mrr=price,
            )
        )
    return customers


def _pick(rng: random.Random, choices: list[tuple[str, T, float]]) -> T:
    """Weighted choice that draws the same number of random values whatever the weights."""
    point = rng.random() * sum(weight for _, _, weight in choices)
    for _, value, weight in choices:
        point -= weight
        if point < 0:
            return value
    return choices[-1][1]


def volume_factor(customer: Customer, day: int) -> float:
    """Share of its usual volume the customer uses on `day`."""
    if customer.onset_day is None or day < customer.onset_day:
        return 1.0
    if customer.pattern in ("stop", "churn"):
        return 0.0
    if customer.pattern in ("narrow", "dunning", "downgrade"):
        return 1.0
    if customer.pattern in ("recover", "flap"):
        into = day - customer.onset_day
        dips = [0] if customer.pattern == "recover" else [0, DIP_DAYS + FLAP_GAP_DAYS]
        return 0.1 if any(start <= into < start + DIP_DAYS for start in dips) else 1.0
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
            narrowed = customer.pattern == "narrow" and day >= (customer.onset_day or 0)
            kinds = STALLED_EVENT_TYPES if customer.pattern == "stall" else EVENT_TYPES
            onboarding = day == customer.first_day and customer.pattern != "stall"
            if onboarding:  # everyone but `stall` reaches the milestones on the first day
                count = max(count, len(ACTIVATION))
            for k in range(count):
                event_type, user = rng.choice(kinds), rng.randint(1, 5)
                if onboarding and k < len(ACTIVATION):
                    event_type = list(ACTIVATION)[k]
                if narrowed:
                    event_type, user = "page_view", 1
                todays.append(
                    {
                        "event_id": f"{customer.customer_id}-{day}-{k}",
                        "customer_id": customer.customer_id,
                        "occurred_at": round(day_start + rng.uniform(0, SECONDS_PER_DAY - 1), 3),
                        "event_type": event_type,
                        "user_id": f"{customer.customer_id}-u{user}",
                        "quantity": round(volume / count, 3),
                    }
                )
        todays.sort(key=lambda event: event["occurred_at"])
        yield from todays


def billing_events(plan: Plan, customers: list[Customer]) -> Iterator[dict[str, Any]]:
    """Subscription lifecycle events, in event-time order."""
    rng = random.Random(plan.seed + 2)
    pending: list[dict[str, Any]] = []
    for customer in customers:
        started = plan.start + customer.first_day * SECONDS_PER_DAY + rng.uniform(0, 3600)
        details = {
            "plan": customer.plan,
            "mrr": customer.mrr,
            "currency": "USD",
            "seats": 1,
            "channel": customer.channel,
        }
        lifecycle: list[tuple[float, str, dict[str, Any]]] = [
            (started, "subscription.started", details)
        ]
        renewal = started + 30 * SECONDS_PER_DAY
        renewals_until = plan.end  # no renewal once a cancellation is requested
        changed_at, changed_details = float("inf"), details
        if customer.pattern == "churn" and customer.onset_day is not None:
            ends = plan.start + customer.onset_day * SECONDS_PER_DAY
            renewals_until = ends - CANCEL_NOTICE_DAYS * SECONDS_PER_DAY + 60
            lifecycle.append((renewals_until, "subscription.canceled", {"effective_at": ends}))
            lifecycle.append((ends, "subscription.ended", {}))
        elif customer.pattern == "dunning" and customer.onset_day is not None:
            failed = plan.start + customer.onset_day * SECONDS_PER_DAY + 7200
            renewals_until = failed
            lifecycle.append((failed, "payment.failed", {}))
        elif customer.pattern == "downgrade" and customer.onset_day is not None:
            changed_details = {**details, "plan": "starter", "mrr": round(customer.mrr / 2, 2)}
            changed_at = plan.start + customer.onset_day * SECONDS_PER_DAY + 7200
            lifecycle.append((changed_at, "subscription.changed", changed_details))
        elif customer.pattern == "stop" and customer.onset_day is not None:
            renewals_until = plan.start + (customer.onset_day + 2) * SECONDS_PER_DAY + 3600
            lifecycle.append(
                (
                    renewals_until,
                    "subscription.canceled",
                    {"effective_at": plan.end + 14 * SECONDS_PER_DAY},
                )
            )
        while renewal < renewals_until:
            terms = details if renewal < changed_at else changed_details
            lifecycle.append((renewal, "subscription.renewed", terms))
            renewal += 30 * SECONDS_PER_DAY
        for number, (at, kind, fields) in enumerate(sorted(lifecycle, key=lambda e: e[0])):
            if at < plan.end:
                pending.append(
                    {
                        "event_id": f"{customer.customer_id}-b{number}",
                        "customer_id": customer.customer_id,
                        "occurred_at": round(at, 3),
                        "type": kind,
                        **fields,
                    }
                )
    yield from sorted(pending, key=lambda event: (event["occurred_at"], event["event_id"]))


def merged(
    usage: Iterator[dict[str, Any]], billing: Iterator[dict[str, Any]]
) -> Iterator[tuple[str, dict[str, Any]]]:
    """Usage and billing events as ("usage" | "billing", event), in event-time order."""
    yield from heapq.merge(
        (("usage", event) for event in usage),
        (("billing", event) for event in billing),
        key=lambda item: float(item[1]["occurred_at"]),
    )


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
