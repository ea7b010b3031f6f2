"""Churn figures of a period, as numerators and denominators that add up across workers.

For a period [a, b), with S(t) the customers subscribed at t (start <= t < end):
  churned = S(a) minus S(b); retained = S(a) and S(b); new = S(b) minus S(a), never subscribed
  before a; reactivated = S(b) minus S(a), subscribed some time before a.
  churn rate = churned / S(a); MRR churn rate = (MRR(a) of churned + downsell of retained) /
  MRR(a) of S(a); net MRR retention = MRR(b) of retained / MRR(a) of S(a).
Activity churn uses "active at t" (a usage event in the `activity_window_days` whole days before
t) in place of "subscribed at t". Money is in integer cents, so sums are exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Protocol

from churnwatch.domain.billing import Account, Timeline
from churnwatch.domain.engagement import SECONDS_PER_DAY

UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class ChurnPolicy:
    """The choices vendors disagree on (docs/churn.md)."""

    count_intra_period: bool = False  # count customers who join and leave inside the period
    involuntary_after_days: float | None = None  # failing this long counts as churned
    activity_window_days: int = 14


@dataclass(slots=True)
class Figures:
    """Additive counts and MRR sums (cents) of one period and segment."""

    start_customers: int = 0
    end_customers: int = 0
    retained_customers: int = 0
    churned_customers: int = 0
    churned_involuntary_customers: int = 0
    new_customers: int = 0
    reactivated_customers: int = 0
    start_mrr_cents: int = 0
    end_mrr_cents: int = 0
    churned_mrr_cents: int = 0
    downsell_mrr_cents: int = 0
    expansion_mrr_cents: int = 0
    new_mrr_cents: int = 0
    reactivation_mrr_cents: int = 0
    retained_end_mrr_cents: int = 0
    start_active_customers: int = 0
    churned_active_customers: int = 0

    def add(self, other: Figures) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    # Ratios for reports; Prometheus computes them from the sums (deploy/prometheus/rules).
    @property
    def churn_rate(self) -> float | None:
        return _ratio(self.churned_customers, self.start_customers)

    @property
    def retention_rate(self) -> float | None:
        rate = self.churn_rate
        return None if rate is None else 1.0 - rate

    @property
    def gross_mrr_churn_rate(self) -> float | None:
        return _ratio(self.churned_mrr_cents + self.downsell_mrr_cents, self.start_mrr_cents)

    @property
    def net_mrr_churn_rate(self) -> float | None:
        lost = self.churned_mrr_cents + self.downsell_mrr_cents
        won = self.expansion_mrr_cents + self.reactivation_mrr_cents
        return _ratio(lost - won, self.start_mrr_cents)

    @property
    def net_mrr_retention(self) -> float | None:
        return _ratio(self.retained_end_mrr_cents, self.start_mrr_cents)

    @property
    def quick_ratio(self) -> float | None:
        gained = self.new_mrr_cents + self.expansion_mrr_cents + self.reactivation_mrr_cents
        return _ratio(gained, self.churned_mrr_cents + self.downsell_mrr_cents)

    @property
    def activity_churn_rate(self) -> float | None:
        return _ratio(self.churned_active_customers, self.start_active_customers)


def _ratio(numerator: int, denominator: int) -> float | None:
    return None if denominator == 0 else numerator / denominator


class CustomerHistory(Protocol):
    """What figures read of one customer (CustomerState has it)."""

    @property
    def billing(self) -> Timeline | None: ...

    def active_at(self, boundary: float, window_days: int) -> bool:
        """A usage event in the `window_days` whole days before the boundary's day."""


Segment = tuple[str, ...]


def period_figures(
    customers: Iterable[CustomerHistory],
    start: float,
    end: float,
    policy: ChurnPolicy,
    segment_by: Sequence[str],
) -> dict[Segment, Figures]:
    """Figures of [start, end) per segment (values of `segment_by`, `unknown` when missing)."""
    tally = PeriodTally(start, end, policy, segment_by)
    for customer in customers:
        tally.add(customer)
    return tally.figures


class PeriodTally:
    """`period_figures`, a customer at a time: a partition's records are read one by one."""

    def __init__(
        self, start: float, end: float, policy: ChurnPolicy, segment_by: Sequence[str]
    ) -> None:
        self._start, self._end = start, end
        self._policy, self._segment_by = policy, segment_by
        self.figures: dict[Segment, Figures] = {}

    def add(self, customer: CustomerHistory) -> None:
        contribution = _contribution(
            customer, self._start, self._end, self._policy, self._segment_by
        )
        if contribution is not None:
            segment, figures = contribution
            if segment in self.figures:
                self.figures[segment].add(figures)
            else:
                self.figures[segment] = figures


def merge(parts: Iterable[Mapping[Segment, Figures]]) -> dict[Segment, Figures]:
    """Add figures of several partitions (or workers) segment by segment."""
    total: dict[Segment, Figures] = {}
    for part in parts:
        for segment, figures in part.items():
            total.setdefault(segment, Figures()).add(figures)
    return total


def subscribed(account: Account, at: float, policy: ChurnPolicy) -> bool:
    """Subscribed at `at`, treating a payment failing too long as churned when so configured."""
    if not account.subscribed:
        return False
    limit = policy.involuntary_after_days
    failing = account.failing_since
    return limit is None or failing is None or at - failing < limit * SECONDS_PER_DAY


def _contribution(
    customer: CustomerHistory,
    start: float,
    end: float,
    policy: ChurnPolicy,
    segment_by: Sequence[str],
) -> tuple[Segment, Figures] | None:
    figures = Figures()
    window = policy.activity_window_days
    active_start = customer.active_at(start, window)
    active_end = customer.active_at(end, window)
    if active_start:
        figures.start_active_customers = 1
        figures.churned_active_customers = int(not active_end)
    timeline = customer.billing
    if timeline is None:
        return ((UNKNOWN,) * len(segment_by), figures) if active_start else None
    at_start, at_end = timeline.at(start), timeline.at(end)
    in_start, in_end = subscribed(at_start, start, policy), subscribed(at_end, end, policy)
    segment_account = at_start if in_start else at_end
    if in_start:
        _count_start(figures, at_start, at_end, in_end, end, policy)
    elif in_end:
        if at_start.was_subscribed:
            figures.reactivated_customers = 1
            figures.reactivation_mrr_cents = at_end.mrr_cents
        else:
            figures.new_customers = 1
            figures.new_mrr_cents = at_end.mrr_cents
    elif policy.count_intra_period:
        joined = [
            account
            for at, account in timeline.changes_between(start, end)
            if subscribed(account, at, policy)
        ]
        if not joined:
            return _only_activity(figures, segment_of(at_end, segment_by))
        # Joined and left inside the period: in the denominator and among the churned.
        figures.start_customers = figures.churned_customers = 1
        figures.start_mrr_cents = figures.churned_mrr_cents = joined[0].mrr_cents
        figures.churned_involuntary_customers = int(_involuntary(at_end, end, policy))
        segment_account = joined[0]
    else:
        return _only_activity(figures, segment_of(at_end, segment_by))
    if in_end:
        figures.end_customers = 1
        figures.end_mrr_cents = at_end.mrr_cents
    return segment_of(segment_account, segment_by), figures


def _count_start(
    figures: Figures,
    at_start: Account,
    at_end: Account,
    in_end: bool,
    end: float,
    policy: ChurnPolicy,
) -> None:
    figures.start_customers = 1
    figures.start_mrr_cents = at_start.mrr_cents
    if in_end:
        figures.retained_customers = 1
        figures.retained_end_mrr_cents = at_end.mrr_cents
        change = at_end.mrr_cents - at_start.mrr_cents
        figures.downsell_mrr_cents = max(0, -change)
        figures.expansion_mrr_cents = max(0, change)
        return
    figures.churned_customers = 1
    figures.churned_mrr_cents = at_start.mrr_cents
    figures.churned_involuntary_customers = int(_involuntary(at_end, end, policy))


def _involuntary(at_end: Account, end: float, policy: ChurnPolicy) -> bool:
    """Left because payment failed: still failing past the limit, or ended while failing."""
    still_on_but_failing = at_end.subscribed and not subscribed(at_end, end, policy)
    return still_on_but_failing or at_end.ended_while_failing


def _only_activity(figures: Figures, segment: Segment) -> tuple[Segment, Figures] | None:
    """A customer outside the subscription counts, still counted for activity churn."""
    return (segment, figures) if figures.start_active_customers else None


def segment_of(account: Account, segment_by: Sequence[str]) -> Segment:
    """The segment values of an account (`plan` is the plan; others come from attributes)."""
    attributes = dict(account.attributes)
    if account.plan is not None:
        attributes["plan"] = account.plan
    return tuple(attributes.get(name, UNKNOWN) for name in segment_by)
