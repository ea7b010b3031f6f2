"""Bounds on the state a partition keeps: expire customers long gone, cap how many are tracked.

Expiry runs in the daily sweep, in event time. A customer expires on a day when it is not
subscribed that day and nothing has happened to it for `retention_days`: no usage, no billing
change, no snooze ending. Its open alert, if any, closes as `churned` (it has gone, by the
activity-churn definition too). A customer coming back afterwards starts afresh, as a new one.

The retention must be long enough that no period figure still open or recountable needs an
expired customer: the previous period starts at most two periods before the sweep's day, and
activity at a period start looks back one activity window (`minimum_retention_days`).

The cap counts customers per partition, so which events it refuses does not depend on how the
partitions happen to be spread over workers.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final, Literal

from churnwatch.domain.alerts import AlertEvent, AlertPolicy, Assessment, next_transition
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.rules import last_usage_day

# The longest period of each granularity, in days.
PERIOD_DAYS: Final = {"week": 7, "month": 31, "quarter": 92}


@dataclass(frozen=True, slots=True)
class StateBounds:
    """How long idle customers are kept and how many customers one partition may track."""

    retention_days: int | None = None  # None: keep every customer forever
    max_customers: int | None = None  # per partition; None: no cap

    def full(self, tracked: Callable[[], int]) -> bool:
        """Whether a partition tracking `tracked()` customers may take no more (asked lazily)."""
        return self.max_customers is not None and tracked() >= self.max_customers


def minimum_retention_days(
    period: Literal["week", "month", "quarter"],
    activity_window_days: int,
    allowed_lateness_seconds: float,
) -> int:
    """The shortest retention that leaves every period figure unchanged."""
    lateness_days = math.ceil(allowed_lateness_seconds / SECONDS_PER_DAY)
    return 2 * PERIOD_DAYS[period] + activity_window_days + lateness_days + 1


def last_activity(state: CustomerState, before_day: int) -> float | None:
    """The latest time anything happened to the customer before a day (None: nothing did).

    Only what happened before the day counts, so the answer does not depend on how far the
    partition has read past it. Usage counts from the start of its last active day. A
    scheduled time (a cancellation's effective time, a snooze's end) counts as activity once
    it has been asked for.
    """
    day_start = before_day * SECONDS_PER_DAY
    times: list[float] = []
    used = last_usage_day(state, before_day)
    if used is not None:
        times.append(used * SECONDS_PER_DAY)
    if state.snoozed_until is not None:
        times.append(state.snoozed_until)
    if state.billing is not None:
        base = state.billing.base
        for moment in (base.subscribed_since, base.ended_at, base.cancel_at, base.failing_since):
            if moment is not None:
                times.append(moment)
        for event in state.billing.changes:
            if event.occurred_at >= day_start:
                continue
            times.append(event.occurred_at)
            if event.effective_at is not None:
                times.append(event.effective_at)
    return max(times, default=None)


def is_expired(state: CustomerState, as_of_day: int, retention_days: int) -> bool:
    """Not subscribed on the day, idle for longer than the retention before it, and holding
    no event from the day on: events up to the allowed lateness past midnight are applied
    before the day is swept, and expiring the record would drop them."""
    day_start = as_of_day * SECONDS_PER_DAY
    if state.billing is not None and state.billing.at(day_start).subscribed:
        return False
    if _holds_events_from(state, day_start):
        return False
    last = last_activity(state, as_of_day)
    return last is None or last < day_start - retention_days * SECONDS_PER_DAY


def _holds_events_from(state: CustomerState, moment: float) -> bool:
    if state.last_seen is not None and state.last_seen >= moment:
        return True
    changes = state.billing.changes if state.billing is not None else []
    return bool(changes) and changes[-1].occurred_at >= moment


def closing_alert(state: CustomerState, as_of_day: int, policy: AlertPolicy) -> AlertEvent | None:
    """The event closing an expired customer's open alert as churned (None: none open)."""
    if state.alert is None:
        return None
    _, event = next_transition(
        state.customer_id, state.alert, Assessment(), as_of_day, policy, churned=True
    )
    return event
