"""Churn figures of the streaming engine against a reference computed in SQL from the definitions.

For a period [a, b) a customer is subscribed at t when it has a subscription with start <= t < end
(design.md, "Churn figures"; docs/churn.md): of its `subscription.started`, `.renewed`,
`.changed` and `.ended` events at or before t, in (occurred_at, event_id) order, the latest is
not an end (a renewal or change starts a subscription when none is running). A cancellation
request changes nothing: the customer stays subscribed until `subscription.ended`. MRR at t is
the latest amount given, an end giving 0; the segment is the plan at a when subscribed at a,
else the plan at b. Involuntary churn: the subscription ended while a payment was failing (its
latest payment event inside that subscription is `payment.failed`).

The reference loads the events into an in-memory SQLite database, reads every customer's status,
MRR and plan at each period boundary with window functions, and classifies the customers with
set arithmetic. The engine must agree exactly, whether events arrive in event-time order or
shuffled within the allowed lateness.
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, create_engine, insert, text

from churnwatch.domain.billing import BillingEvent, BillingType
from churnwatch.domain.churn import ChurnPolicy, Figures
from churnwatch.domain.engagement import ring_days_needed
from churnwatch.domain.events import Heartbeat
from churnwatch.domain.partition import PartitionClock, PartitionEngine
from config.settings import RuleSettings
from tests.unit.test_partition import DictStore

DAY = 86_400.0
HOUR = 3_600.0


def _utc(year: int, month: int, day: int = 1, hour: int = 0) -> float:
    return datetime(year, month, day, hour, tzinfo=UTC).timestamp()


DEC, JAN, FEB, MAR, APR, MAY = (_utc(2020, 12), *(_utc(2021, m) for m in (1, 2, 3, 4, 5)))
BOUNDARIES = (DEC, JAN, FEB, MAR, APR, MAY)  # period starts (and the last end)
LABELS = ("2020-12", "2021-01", "2021-02", "2021-03", "2021-04")
PLANS = ("basic", "pro", "team")

STARTED: BillingType = "subscription.started"
RENEWED: BillingType = "subscription.renewed"
CHANGED: BillingType = "subscription.changed"
CANCELED: BillingType = "subscription.canceled"
ENDED: BillingType = "subscription.ended"
FAILED: BillingType = "payment.failed"
SUCCEEDED: BillingType = "payment.succeeded"

Item = BillingEvent | Heartbeat
Segment = tuple[str, ...]
FigureMap = dict[Segment, dict[str, int]]
FIELDS = tuple(Figures().as_dict())
DEFAULT = ChurnPolicy()


# --- driving the engine -------------------------------------------------------------------


def beat(at: float) -> Heartbeat:
    """A heartbeat of the billing input: the only input these partitions have."""
    return Heartbeat(at, kind="billing")


@cache
def engine_for(lateness: float, policy: ChurnPolicy = DEFAULT) -> PartitionEngine:
    return PartitionEngine(
        thresholds=RuleSettings(),
        allowed_lateness=lateness,
        ring_days=ring_days_needed(35, lateness),
        granularity="month",
        policy=policy,
        segment_by=("plan",),
    )


@dataclass
class Run:
    closed: dict[str, FigureMap]  # period label -> segment -> figures
    late: list[int]  # arrival positions dead-lettered as late


def run(
    items: Sequence[Item],
    *,
    lateness: float = HOUR,
    policy: ChurnPolicy = DEFAULT,
    cuts: Iterable[int] = (),
) -> Run:
    """Feed items (offset = arrival position) in batches cut at `cuts`, all of one input."""
    engine, store, clock = engine_for(lateness, policy), DictStore(), PartitionClock(0)
    closed: dict[str, FigureMap] = {}
    late: list[int] = []
    bounds = [0, *sorted({c for c in cuts if 0 < c < len(items)}), len(items)]
    for first, last in itertools.pairwise(bounds):
        batch = [(offset, items[offset]) for offset in range(first, last)]
        backlog = frozenset({"billing"}) if last < len(items) else frozenset()
        result = engine.process(clock, batch, store, backlog)
        late.extend(first + position for position in result.late)
        for period in result.closed:
            assert period.partition == 0
            assert period.period.label not in closed, f"{period.period.label} closed twice"
            closed[period.period.label] = {
                segment: figures.as_dict() for segment, figures in period.figures.items()
            }
    return Run(closed, late)


def total(by_segment: FigureMap) -> dict[str, int]:
    summed = dict.fromkeys(FIELDS, 0)
    for figures in by_segment.values():
        for name, value in figures.items():
            summed[name] += value
    return summed


def in_event_order(events: Iterable[BillingEvent]) -> list[BillingEvent]:
    return sorted(events, key=lambda e: (e.occurred_at, e.event_id))


# --- the reference ------------------------------------------------------------------------

_METADATA = MetaData()
_EVENTS = Table(
    "billing_events",
    _METADATA,
    Column("event_id", String, primary_key=True),
    Column("customer_id", String, nullable=False),
    Column("occurred_at", Float, nullable=False),
    Column("type", String, nullable=False),
    Column("mrr_cents", Integer),
    Column("plan", String),
)
_INSTANTS = Table("instants", _METADATA, Column("at", Float, primary_key=True))

# Each customer's standing at each instant: subscribed, MRR, plan, whether it was subscribed at
# some moment before, and whether its latest subscription ended while a payment was failing.
_SNAPSHOTS = text(
    """
WITH ordered AS (
    SELECT customer_id, event_id, occurred_at, type, mrr_cents, plan,
           ROW_NUMBER() OVER (PARTITION BY customer_id ORDER BY occurred_at, event_id) AS seq
    FROM billing_events
),
status_changes AS (
    SELECT * FROM ordered
    WHERE type IN ('subscription.started', 'subscription.renewed', 'subscription.changed',
                   'subscription.ended')
),
opening AS (
    -- the first status change after an end (or ever) opens a subscription
    SELECT * FROM (
        SELECT customer_id, type, seq AS start_seq, occurred_at AS start_at,
               LAG(type) OVER (PARTITION BY customer_id ORDER BY seq) AS previous_type
        FROM status_changes
    )
    WHERE type <> 'subscription.ended'
      AND (previous_type IS NULL OR previous_type = 'subscription.ended')
),
subscriptions AS (
    -- [start_at, end_at), closed by the next end (NULL: still open)
    SELECT o.customer_id, o.start_seq, o.start_at, e.seq AS end_seq, e.occurred_at AS end_at
    FROM opening AS o
    LEFT JOIN status_changes AS e ON e.seq = (
        SELECT MIN(x.seq) FROM status_changes AS x
        WHERE x.customer_id = o.customer_id
          AND x.type = 'subscription.ended' AND x.seq > o.start_seq
    ) AND e.customer_id = o.customer_id
),
grid AS (
    SELECT i.at, c.customer_id
    FROM instants AS i CROSS JOIN (SELECT DISTINCT customer_id FROM billing_events) AS c
),
last_change AS (
    SELECT g.at, g.customer_id, s.type, s.seq,
           ROW_NUMBER() OVER (PARTITION BY g.at, g.customer_id ORDER BY s.seq DESC) AS rn
    FROM grid AS g
    JOIN status_changes AS s ON s.customer_id = g.customer_id AND s.occurred_at <= g.at
),
last_mrr AS (
    SELECT g.at, g.customer_id,
           CASE WHEN o.type = 'subscription.ended' THEN 0 ELSE o.mrr_cents END AS mrr_cents,
           ROW_NUMBER() OVER (PARTITION BY g.at, g.customer_id ORDER BY o.seq DESC) AS rn
    FROM grid AS g
    JOIN ordered AS o ON o.customer_id = g.customer_id AND o.occurred_at <= g.at
    WHERE o.mrr_cents IS NOT NULL OR o.type = 'subscription.ended'
),
last_plan AS (
    SELECT g.at, g.customer_id, o.plan,
           ROW_NUMBER() OVER (PARTITION BY g.at, g.customer_id ORDER BY o.seq DESC) AS rn
    FROM grid AS g
    JOIN ordered AS o ON o.customer_id = g.customer_id AND o.occurred_at <= g.at
    WHERE o.plan IS NOT NULL
)
SELECT g.at, g.customer_id,
       COALESCE(lc.type <> 'subscription.ended', 0) AS subscribed,
       COALESCE(lm.mrr_cents, 0) AS mrr_cents,
       lp.plan,
       EXISTS (
           SELECT 1 FROM subscriptions AS u
           WHERE u.customer_id = g.customer_id
             AND u.start_at < g.at
             AND (u.end_at IS NULL OR u.end_at > u.start_at)
       ) AS subscribed_before,
       COALESCE(lc.type = 'subscription.ended' AND (
           SELECT p.type
           FROM ordered AS p
           JOIN subscriptions AS u ON u.customer_id = p.customer_id AND u.end_seq = lc.seq
           WHERE p.customer_id = g.customer_id
             AND p.type IN ('payment.failed', 'payment.succeeded')
             AND p.seq > u.start_seq AND p.seq < lc.seq
           ORDER BY p.seq DESC
           LIMIT 1
       ) = 'payment.failed', 0) AS ended_while_failing
FROM grid AS g
LEFT JOIN last_change AS lc ON lc.at = g.at AND lc.customer_id = g.customer_id AND lc.rn = 1
LEFT JOIN last_mrr AS lm ON lm.at = g.at AND lm.customer_id = g.customer_id AND lm.rn = 1
LEFT JOIN last_plan AS lp ON lp.at = g.at AND lp.customer_id = g.customer_id AND lp.rn = 1
"""
)


@dataclass(frozen=True)
class Standing:
    subscribed: bool
    mrr_cents: int  # 0 when not subscribed
    plan: str | None
    subscribed_before: bool  # subscribed at some moment strictly before the instant
    ended_while_failing: bool


def snapshots(
    events: Sequence[BillingEvent], instants: Sequence[float]
) -> dict[float, dict[str, Standing]]:
    """Every customer's standing at each instant, from SQL."""
    database = create_engine("sqlite://")
    try:
        with database.begin() as connection:
            _METADATA.create_all(connection)
            if events:
                connection.execute(
                    insert(_EVENTS),
                    [
                        {
                            "event_id": e.event_id,
                            "customer_id": e.customer_id,
                            "occurred_at": e.occurred_at,
                            "type": e.type,
                            "mrr_cents": e.mrr_cents,
                            "plan": e.plan,
                        }
                        for e in events
                    ],
                )
            connection.execute(insert(_INSTANTS), [{"at": at} for at in instants])
            rows = connection.execute(_SNAPSHOTS).mappings().all()
    finally:
        database.dispose()
    found: dict[float, dict[str, Standing]] = {at: {} for at in instants}
    for row in rows:
        subscribed = bool(row["subscribed"])
        found[row["at"]][row["customer_id"]] = Standing(
            subscribed=subscribed,
            mrr_cents=row["mrr_cents"] if subscribed else 0,
            plan=row["plan"],
            subscribed_before=bool(row["subscribed_before"]),
            ended_while_failing=bool(row["ended_while_failing"]),
        )
    return found


def reference_figures(
    events: Sequence[BillingEvent], periods: dict[str, tuple[float, float]]
) -> dict[str, FigureMap]:
    """Figures of each period [a, b), per plan, under the default policy.

    Billing events only: no customer has usage, so none is active (activity figures stay 0).
    """
    instants = sorted({at for bounds in periods.values() for at in bounds})
    standing = snapshots(events, instants)
    result: dict[str, FigureMap] = {}
    for label, (a, b) in periods.items():
        at_a, at_b = standing[a], standing[b]
        s_a = {c for c, s in at_a.items() if s.subscribed}
        s_b = {c for c, s in at_b.items() if s.subscribed}
        churned, retained, joined = s_a - s_b, s_a & s_b, s_b - s_a
        new = {c for c in joined if not at_a[c].subscribed_before}
        reactivated = joined - new
        by_segment: FigureMap = {}
        for customer in s_a | s_b:
            plan = at_a[customer].plan if customer in s_a else at_b[customer].plan
            figures = by_segment.setdefault((plan or "unknown",), dict.fromkeys(FIELDS, 0))
            mrr_a, mrr_b = at_a[customer].mrr_cents, at_b[customer].mrr_cents
            counts = {
                "start_customers": customer in s_a,
                "end_customers": customer in s_b,
                "retained_customers": customer in retained,
                "churned_customers": customer in churned,
                # involuntary: the subscription ended while a payment was failing
                "churned_involuntary_customers": (
                    customer in churned and at_b[customer].ended_while_failing
                ),
                "new_customers": customer in new,
                "reactivated_customers": customer in reactivated,
            }
            money = {
                "start_mrr_cents": mrr_a,
                "end_mrr_cents": mrr_b,
                "churned_mrr_cents": mrr_a if customer in churned else 0,
                "downsell_mrr_cents": max(0, mrr_a - mrr_b) if customer in retained else 0,
                "expansion_mrr_cents": max(0, mrr_b - mrr_a) if customer in retained else 0,
                "new_mrr_cents": mrr_b if customer in new else 0,
                "reactivation_mrr_cents": mrr_b if customer in reactivated else 0,
                "retained_end_mrr_cents": mrr_b if customer in retained else 0,
            }
            for name, value in {**counts, **money}.items():
                figures[name] += int(value)
        result[label] = by_segment
    return result


PERIODS = {label: (BOUNDARIES[i], BOUNDARIES[i + 1]) for i, label in enumerate(LABELS)}


# --- random histories ---------------------------------------------------------------------

_T0, _T1 = int(JAN), int(MAY)
_NEAR_BOUNDARY = st.builds(
    lambda at, shift: at + shift,
    st.sampled_from(BOUNDARIES[1:]),
    st.integers(-3 * int(DAY), 3 * int(DAY)),
)
_ANYWHERE = st.integers(_T0, _T1)
_INSTANT = st.one_of(
    st.sampled_from(BOUNDARIES[1:]),  # exactly midnight at a period start
    _NEAR_BOUNDARY,
    _NEAR_BOUNDARY,
    _ANYWHERE,
    _ANYWHERE,
).map(lambda at: float(min(max(at, _T0), _T1)))
_MAYBE_PLAN = st.one_of(st.none(), st.sampled_from(PLANS))
_MRR = st.one_of(st.just(0), st.sampled_from([900, 2_500, 9_900, 49_900]), st.integers(1, 200_000))


@st.composite
def customer_history(draw: st.DrawFn, customer: str) -> list[BillingEvent]:
    """One customer's valid billing events, in (time, id) order."""
    times = draw(st.lists(_INSTANT, min_size=1, max_size=9))
    times += draw(st.lists(st.sampled_from(times), max_size=3))  # several events at one instant
    steps: list[dict[str, Any]] = []
    started_at: float | None = None  # the open subscription's start
    for at in sorted(times):
        if started_at is None:  # start, or restart by a renewal or change (docs/churn.md)
            kind = draw(st.sampled_from([STARTED, STARTED, STARTED, STARTED, RENEWED, CHANGED]))
            mrr = draw(_MRR if kind != RENEWED else st.one_of(st.none(), _MRR))
            plan = draw(st.sampled_from(PLANS) if kind == STARTED else _MAYBE_PLAN)
            steps.append({"type": kind, "at": at, "mrr": mrr, "plan": plan})
            started_at = at
            continue
        kinds = [CHANGED, CHANGED, RENEWED, CANCELED, FAILED, SUCCEEDED]
        if at > started_at:  # no empty subscription [t, t)
            kinds += [ENDED, ENDED, ENDED]
        kind = draw(st.sampled_from(kinds))
        step: dict[str, Any] = {"type": kind, "at": at, "mrr": None, "plan": None}
        if kind == CHANGED:
            step["mrr"] = draw(_MRR)
            step["plan"] = draw(_MAYBE_PLAN)
        elif kind == RENEWED:
            step["mrr"] = draw(st.one_of(st.none(), _MRR))
        elif kind == CANCELED:
            step["effective"] = draw(st.one_of(st.none(), st.just(at + 10 * DAY)))
        elif kind == ENDED:
            started_at = None
        steps.append(step)
    # ids sorted as strings ("12" < "9") so that ties in time keep the sequence's order
    numbers = draw(
        st.lists(st.integers(0, 10_000), min_size=len(steps), max_size=len(steps), unique=True)
    )
    ids = sorted(str(n) for n in numbers)
    return [
        BillingEvent(
            event_id=f"{customer}-{ids[i]}",
            customer_id=customer,
            occurred_at=step["at"],
            type=step["type"],
            mrr_cents=step["mrr"],
            plan=step["plan"],
            effective_at=step.get("effective"),
        )
        for i, step in enumerate(steps)
    ]


@dataclass(frozen=True)
class Scenario:
    lateness: float
    events: tuple[BillingEvent, ...]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    lateness = draw(st.sampled_from([HOUR, 6 * HOUR, 2 * DAY]))
    customers = draw(st.integers(1, 25))
    events: list[BillingEvent] = []
    for number in range(customers):
        events += draw(customer_history(f"c{number}"))
    return Scenario(lateness, tuple(events))


def items_of(events: Sequence[BillingEvent], lateness: float) -> list[Item]:
    """Heartbeats around the events: the clock starts at JAN and ends closing April."""
    return [beat(JAN), *events, beat(MAY + lateness + 1)]  # the watermark passes May 1


def with_clock(events: Sequence[BillingEvent], lateness: float, rng: random.Random) -> list[Item]:
    """Add heartbeats: after about half the events, one at its time or up to 3 days earlier."""
    items: list[Item] = [beat(JAN)]
    for billing_event in events:
        items.append(billing_event)
        if rng.random() < 0.5:
            lag = rng.choice([0.0, rng.uniform(0, 3 * DAY)])
            items.append(beat(billing_event.occurred_at - lag))
    items.append(beat(MAY + lateness + 1))
    return items


def within_lateness(
    events: Sequence[BillingEvent], lateness: float, rng: random.Random
) -> list[BillingEvent]:
    """Arrival order in which no event comes after one more than 0.9 x lateness newer."""
    keyed = [(e.occurred_at + rng.uniform(0, 0.9 * lateness), e) for e in events]
    return [e for _, e in sorted(keyed, key=lambda pair: pair[0])]


# --- property -----------------------------------------------------------------------------


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(scenario=scenarios(), rng=st.randoms(use_true_random=False))
def test_engine_figures_equal_reference_in_order_and_shuffled(
    scenario: Scenario, rng: random.Random
) -> None:
    lateness, events = scenario.lateness, scenario.events
    expected = reference_figures(events, PERIODS)

    ordered_items = with_clock(in_event_order(events), lateness, rng)
    in_order = run(ordered_items, lateness=lateness, cuts=rng.sample(range(len(ordered_items)), 3))
    assert in_order.late == []
    assert sorted(in_order.closed) == list(LABELS)
    for label in LABELS:
        assert total(in_order.closed[label]) == total(expected[label]), label
        assert in_order.closed[label] == expected[label], label

    shuffled_items = with_clock(within_lateness(events, lateness, rng), lateness, rng)
    cuts = rng.sample(range(len(shuffled_items)), min(6, len(shuffled_items)))
    shuffled = run(shuffled_items, lateness=lateness, cuts=cuts)
    assert shuffled.late == []
    assert shuffled.closed == in_order.closed


# --- examples -----------------------------------------------------------------------------


def event(
    customer: str,
    kind: BillingType,
    at: float,
    *,
    mrr: int | None = None,
    plan: str | None = None,
    event_id: str | None = None,
    effective_at: float | None = None,
) -> BillingEvent:
    if kind == STARTED:
        mrr = 5_000 if mrr is None else mrr
        plan = plan or "basic"
    return BillingEvent(
        event_id=event_id or f"{customer}:{kind}:{at}",
        customer_id=customer,
        occurred_at=at,
        type=kind,
        mrr_cents=mrr,
        plan=plan,
        effective_at=effective_at,
    )


def march(
    events: Sequence[BillingEvent],
    policy: ChurnPolicy = DEFAULT,
) -> dict[str, int]:
    """March 2021 totals from the engine, in order; checked against the reference by default."""
    outcome = run(items_of(in_event_order(events), HOUR), policy=policy)
    assert outcome.late == []
    if policy == DEFAULT:
        assert outcome.closed == reference_figures(events, PERIODS)
    return total(outcome.closed["2021-03"])


def changed(figures: dict[str, int]) -> dict[str, int]:
    return {name: value for name, value in figures.items() if value}


def test_textbook_example_154_subscribed_18_end() -> None:
    """docs/churn.md: 154 on 1 March, 18 leave, 30 join, one ends on the 10th and restarts."""
    customers = [f"c{n:03d}" for n in range(154)]
    events = [event(c, STARTED, FEB + 9 * DAY) for c in customers]
    events += [event(c, ENDED, MAR + 14 * DAY) for c in customers[:18]]
    events += [event(f"n{n:02d}", STARTED, MAR + (n + 1) * HOUR) for n in range(30)]
    events += [event("c153", ENDED, MAR + 9 * DAY), event("c153", STARTED, MAR + 19 * DAY)]
    figures = march(events)
    assert figures["start_customers"] == 154
    assert figures["churned_customers"] == 18
    assert figures["retained_customers"] == 136
    assert figures["new_customers"] == 30
    assert figures["end_customers"] == 166
    ratios = Figures(**figures)
    assert ratios.churn_rate is not None
    assert ratios.retention_rate is not None
    assert round(ratios.churn_rate, 4) == 0.1169
    assert round(ratios.retention_rate, 4) == 0.8831
    assert ratios.gross_mrr_churn_rate == pytest.approx(18 / 154)
    assert ratios.net_mrr_retention == pytest.approx(136 / 154)


def test_end_and_restart_inside_the_period_is_not_churn() -> None:
    events = [
        event("c1", STARTED, FEB, mrr=5_000),
        event("c1", ENDED, MAR + 9 * DAY),
        event("c1", STARTED, MAR + 19 * DAY, mrr=3_000),
    ]
    assert changed(march(events)) == {
        "start_customers": 1,
        "end_customers": 1,
        "retained_customers": 1,
        "start_mrr_cents": 5_000,
        "end_mrr_cents": 3_000,
        "downsell_mrr_cents": 2_000,
        "retained_end_mrr_cents": 3_000,
    }


def test_a_start_inside_the_period_is_not_in_the_denominator() -> None:
    events = [event("c1", STARTED, FEB), event("c2", STARTED, MAR + 4 * DAY, mrr=7_000)]
    figures = march(events)
    assert figures["start_customers"] == 1
    assert figures["churned_customers"] == 0
    assert figures["new_customers"] == 1
    assert figures["new_mrr_cents"] == 7_000
    assert figures["end_customers"] == 2


def test_exact_midnight_boundaries() -> None:
    """Subscribed at t when start <= t < end."""
    events = [
        event("starts_at_a", STARTED, MAR),
        event("ends_at_a", STARTED, FEB),
        event("ends_at_a", ENDED, MAR),
        event("ends_at_b", STARTED, FEB),
        event("ends_at_b", ENDED, APR),
        event("starts_at_b", STARTED, APR),
    ]
    figures = march(events)
    assert figures["start_customers"] == 2  # starts_at_a, ends_at_b
    assert figures["churned_customers"] == 1  # ends_at_b
    assert figures["retained_customers"] == 1  # starts_at_a
    assert figures["new_customers"] == 1  # starts_at_b


def test_ties_in_time_are_ordered_by_event_id() -> None:
    """An end and a restart at one instant: the one with the larger id is the latest."""
    events = [
        event("restarts", STARTED, FEB),
        event("restarts", ENDED, MAR + DAY, event_id="r-1"),
        event("restarts", STARTED, MAR + DAY, mrr=8_000, event_id="r-2"),
        event("ends", STARTED, FEB),
        event("ends", STARTED, MAR + DAY, event_id="e-1"),  # a no-op restart ...
        event("ends", ENDED, MAR + DAY, event_id="e-2"),  # ... then the end
    ]
    figures = march(events)
    assert figures["retained_customers"] == 1
    assert figures["churned_customers"] == 1
    assert figures["expansion_mrr_cents"] == 3_000


def test_a_cancellation_request_alone_is_not_churn() -> None:
    events = [
        event("c1", STARTED, FEB),
        event("c1", CANCELED, MAR + 9 * DAY, effective_at=APR + 14 * DAY),
    ]
    figures = march(events)
    assert figures["retained_customers"] == 1
    assert figures["churned_customers"] == 0


def test_a_renewal_after_an_end_restarts_the_subscription() -> None:
    events = [
        event("c1", STARTED, JAN, mrr=9_000),
        event("c1", ENDED, FEB + 9 * DAY),
        event("c1", RENEWED, MAR + 4 * DAY),  # no amount: MRR 0 since the end
        event("c2", STARTED, JAN, mrr=9_000),
        event("c2", ENDED, FEB + 9 * DAY),
        event("c2", CHANGED, MAR + 4 * DAY, mrr=4_000, plan="pro"),
    ]
    figures = march(events)
    assert figures["reactivated_customers"] == 2
    assert figures["reactivation_mrr_cents"] == 4_000


def test_reactivation_is_a_return_after_an_earlier_subscription() -> None:
    events = [
        event("back", STARTED, JAN + 4 * DAY),
        event("back", ENDED, FEB + 4 * DAY),
        event("back", STARTED, MAR + 4 * DAY, mrr=6_000),
    ]
    figures = march(events)
    assert figures["reactivated_customers"] == 1
    assert figures["reactivation_mrr_cents"] == 6_000
    assert figures["new_customers"] == 0


def test_an_empty_subscription_is_no_earlier_subscription() -> None:
    """Started and ended at one instant: never subscribed at any t, so a later start is new."""
    events = [
        event("c1", STARTED, JAN + 9 * DAY, event_id="c1-1"),
        event("c1", ENDED, JAN + 9 * DAY, event_id="c1-2"),
        event("c1", STARTED, MAR + 9 * DAY, event_id="c1-3"),
    ]
    figures = march(events)
    assert figures["new_customers"] == 1
    assert figures["reactivated_customers"] == 0


def test_count_intra_period_puts_a_join_and_leave_in_start_and_churned() -> None:
    events = [
        event("steady", STARTED, FEB, plan="pro"),
        event("brief", STARTED, MAR + 4 * DAY, mrr=2_500, plan="basic"),
        event("brief", ENDED, MAR + 19 * DAY),
    ]
    assert march(events)["start_customers"] == 1
    outcome = run(
        items_of(in_event_order(events), HOUR), policy=ChurnPolicy(count_intra_period=True)
    )
    assert outcome.late == []
    by_plan = outcome.closed["2021-03"]
    assert changed(by_plan[("basic",)]) == {
        "start_customers": 1,
        "churned_customers": 1,
        "start_mrr_cents": 2_500,
        "churned_mrr_cents": 2_500,
    }
    assert changed(by_plan[("pro",)])["retained_customers"] == 1


def test_a_payment_failing_past_the_setting_is_involuntary_churn() -> None:
    policy = ChurnPolicy(involuntary_after_days=7)
    events = [
        event("steady", STARTED, JAN),
        event("failing", STARTED, JAN),
        event("failing", FAILED, MAR + 9 * DAY),  # 22 days by April 1
        event("recovers", STARTED, JAN),
        event("recovers", FAILED, MAR + 9 * DAY),
        event("recovers", SUCCEEDED, MAR + 13 * DAY),  # 4 days
        event("late_failure", STARTED, JAN),
        event("late_failure", FAILED, MAR + 27 * DAY),  # 4 days by April 1
        event("failed_in_feb", STARTED, JAN),
        event("failed_in_feb", FAILED, FEB + 19 * DAY),  # 9 days by March 1
        event("exactly_seven", STARTED, JAN),
        event("exactly_seven", FAILED, APR - 7 * DAY),  # failing for 7 days at April 1
    ]
    outcome = run(items_of(in_event_order(events), HOUR), policy=policy)
    assert outcome.late == []
    february, figures = total(outcome.closed["2021-02"]), total(outcome.closed["2021-03"])
    assert february["churned_customers"] == february["churned_involuntary_customers"] == 1
    assert figures["start_customers"] == 5  # failed_in_feb already churned
    assert figures["churned_customers"] == 2  # failing, exactly_seven
    assert figures["churned_involuntary_customers"] == 2
    assert figures["retained_customers"] == 3


def test_a_payment_failure_alone_never_churns() -> None:
    events = [
        event("failing", STARTED, JAN),
        event("failing", FAILED, FEB + 2 * DAY),
        event("failing", FAILED, MAR + 2 * DAY),
    ]
    figures = march(events)
    assert figures["retained_customers"] == 1
    assert figures["churned_customers"] == figures["churned_involuntary_customers"] == 0


def test_an_end_while_a_payment_is_failing_is_involuntary() -> None:
    events = [
        event("unpaid", STARTED, JAN),
        event("unpaid", FAILED, MAR + 2 * DAY),
        event("unpaid", ENDED, MAR + 20 * DAY),
        event("left", STARTED, JAN),
        event("left", FAILED, MAR + 2 * DAY),
        event("left", SUCCEEDED, MAR + 3 * DAY),
        event("left", ENDED, MAR + 20 * DAY),
    ]
    figures = march(events)
    assert figures["churned_customers"] == 2
    assert figures["churned_involuntary_customers"] == 1


def test_an_event_later_than_the_allowed_lateness_is_refused() -> None:
    on_time: list[Item] = [
        beat(JAN),
        event("c1", STARTED, FEB),
        event("c2", STARTED, FEB),
        beat(APR + HOUR + 1),  # closes March
    ]
    closing: list[Item] = [beat(MAY + HOUR + 1)]
    too_late = event("c2", ENDED, MAR + 14 * DAY)
    with_late = run([*on_time, too_late, *closing])
    without = run([*on_time, *closing])
    assert with_late.late == [len(on_time)]
    assert without.late == []
    assert with_late.closed == without.closed
    april = total(with_late.closed["2021-04"])
    assert april["start_customers"] == april["retained_customers"] == 2


def test_an_event_at_the_period_end_is_refused_or_counted() -> None:
    """An event exactly at b, `lateness` behind the newest: late, or counted in S(b) of [a, b)."""
    items: list[Item] = [
        beat(JAN),
        event("c1", STARTED, FEB),
        beat(APR + HOUR),  # watermark = APR: March closes only once it is past
        event("c2", STARTED, APR),  # exactly at the watermark, so not late
        beat(MAY + HOUR + 1),
    ]
    outcome = run(items)
    march_figures = total(outcome.closed["2021-03"])
    april = total(outcome.closed["2021-04"])
    if 3 in outcome.late:
        assert april["start_customers"] == 1
    else:
        assert march_figures["new_customers"] == 1
    assert march_figures["end_customers"] == april["start_customers"]
