"""At-risk rules: pure functions of a customer's engagement as of a day.

"As of day X" reads only whole days before X. Events of day X or later may already be in the
ring (they arrive before the watermark passes X), so reading whole earlier days is what makes an
evaluation the same whether history is replayed fast or lived through.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final, Protocol

from churnwatch.domain.billing import Timeline
from churnwatch.domain.engagement import SECONDS_PER_DAY, DailyRing, day_of

# Root-cause area of each reason: where a customer-success team would look first.
AREAS: Final = {
    "usage_drop": "execution",
    "inactive": "execution",
    "low_engagement": "product-market fit",
    "breadth_drop": "execution",
    "onboarding_stalled": "onboarding",
    "payment_failed": "billing",
    "downgrade": "product-market fit",
    "cancel_scheduled": "communication",
}

# Default weight of each reason in the 0-100 risk score; its strength (0.5..1) scales it.
WEIGHTS: Final = {
    "usage_drop": 60.0,
    "inactive": 80.0,
    "low_engagement": 30.0,
    "breadth_drop": 40.0,
    "onboarding_stalled": 50.0,
    "payment_failed": 50.0,
    "downgrade": 40.0,
    "cancel_scheduled": 70.0,
}


class Thresholds(Protocol):
    """Rule thresholds (config.RuleSettings)."""

    @property
    def recent_days(self) -> int: ...
    @property
    def baseline_days(self) -> int: ...
    @property
    def drop_ratio(self) -> float: ...
    @property
    def min_baseline_daily(self) -> float: ...
    @property
    def min_baseline_days(self) -> int: ...
    @property
    def inactive_days(self) -> int: ...
    @property
    def payment_grace_days(self) -> int: ...
    @property
    def downgrade_window_days(self) -> int: ...
    @property
    def breadth_drop_ratio(self) -> float: ...
    @property
    def min_baseline_breadth(self) -> float: ...
    @property
    def low_engagement_share(self) -> float: ...
    @property
    def low_engagement_window_days(self) -> int: ...
    @property
    def low_engagement_min_tenure_days(self) -> int: ...
    @property
    def low_engagement_min_population(self) -> int: ...
    @property
    def onboarding_days(self) -> int: ...
    @property
    def milestones(self) -> Mapping[str, int]: ...


@dataclass(frozen=True, slots=True)
class Reason:
    """Why a customer is at risk: what was observed against what was expected."""

    code: str
    observed: float
    baseline: float
    window_days: int
    strength: float  # 0..1, how far past the threshold; scales the reason's weight
    measure: str = ""  # what `observed` counts, where a rule watches more than one thing

    @property
    def area(self) -> str:
        return AREAS[self.code]


class Engagement(Protocol):
    """What the rules read of a customer (CustomerState has it)."""

    @property
    def ring(self) -> DailyRing: ...
    @property
    def first_seen(self) -> float | None: ...
    @property
    def last_seen(self) -> float | None: ...
    @property
    def events(self) -> int: ...
    @property
    def billing(self) -> Timeline | None: ...
    @property
    def milestones(self) -> Mapping[str, tuple[float, ...]]: ...


def usage_drop(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """Recent daily usage below `drop_ratio` of the customer's own baseline daily usage."""
    if engagement.first_seen is None:
        return None  # no usage yet
    recent_first = as_of_day - limits.recent_days
    baseline_first = max(recent_first - limits.baseline_days, day_of(engagement.first_seen))
    baseline_span = recent_first - baseline_first
    if baseline_span < limits.min_baseline_days:
        return None
    baseline_rate = engagement.ring.total(baseline_first, recent_first - 1) / baseline_span
    if baseline_rate <= 0 or baseline_rate < limits.min_baseline_daily:
        return None
    recent_rate = engagement.ring.total(recent_first, as_of_day - 1) / limits.recent_days
    if recent_rate >= limits.drop_ratio * baseline_rate:
        return None
    return Reason(
        code="usage_drop",
        observed=round(recent_rate, 6),
        baseline=round(baseline_rate, 6),
        window_days=limits.recent_days,
        strength=1.0 - recent_rate / baseline_rate,
    )


def last_usage_day(engagement: Engagement, before_day: int) -> int | None:
    """The latest day before `before_day` with any usage (None: no usage before it)."""
    last_day = engagement.ring.last_active_day(before_day)
    if last_day is None and engagement.last_seen is not None:
        seen_day = day_of(engagement.last_seen)
        if seen_day < before_day:  # a record written before the ring kept its `gone` day
            return seen_day
    return last_day


def inactive(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """No usage at all for `inactive_days` whole days before the evaluated day."""
    last_day = last_usage_day(engagement, as_of_day)
    if last_day is None:
        return None  # no usage before the evaluated day: onboarding, not silence
    idle_days = as_of_day - 1 - last_day
    if idle_days < limits.inactive_days:
        return None
    return Reason(
        code="inactive",
        observed=float(idle_days),
        baseline=float(limits.inactive_days),
        window_days=limits.inactive_days,
        strength=min(1.0, idle_days / (2 * limits.inactive_days)),
    )


def breadth_drop(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """Fewer distinct users, or event types, in the recent window than in the baseline's.

    The baseline is the mean over windows as long as the recent one, so both count alike.
    Silence is left to `inactive` and `usage_drop`: usage on at least half the recent days.
    """
    if engagement.first_seen is None:
        return None
    ring, span = engagement.ring, limits.recent_days
    recent_first = as_of_day - span
    baseline_first = max(recent_first - limits.baseline_days, day_of(engagement.first_seen))
    blocks = (recent_first - baseline_first) // span
    if blocks * span < limits.min_baseline_days:
        return None
    if 2 * ring.active_days(recent_first, as_of_day - 1) < span:
        return None
    recent = ring.breadth_between(recent_first, as_of_day - 1)
    earlier = [
        ring.breadth_between(recent_first - (k + 1) * span, recent_first - k * span - 1)
        for k in range(blocks)
    ]
    for index, measure in enumerate(("users", "event_types")):
        baseline = sum(window[index] for window in earlier) / blocks
        observed = recent[index]
        if baseline >= limits.min_baseline_breadth and observed < (
            limits.breadth_drop_ratio * baseline
        ):
            return Reason(
                code="breadth_drop",
                observed=round(observed, 3),
                baseline=round(baseline, 3),
                window_days=span,
                strength=1.0 - observed / baseline,
                measure=measure,
            )
    return None


def tenure_start(engagement: Engagement, as_of_day: int) -> float | None:
    """When the customer's life with the product began: first usage or subscription start."""
    starts = [engagement.first_seen]
    if engagement.billing is not None:
        starts.append(engagement.billing.at(as_of_day * SECONDS_PER_DAY).subscribed_since)
    known = [start for start in starts if start is not None]
    return min(known) if known else None


def engagement_rate(engagement: Engagement, as_of_day: int, limits: Thresholds) -> float | None:
    """Daily usage over the low-engagement window, over fewer days for a short tenure.

    None for customers outside the population: not subscribed, or too new to judge.
    """
    if (
        engagement.billing is None
        or not engagement.billing.at(as_of_day * SECONDS_PER_DAY).subscribed
    ):
        return None
    start = tenure_start(engagement, as_of_day)
    if start is None:
        return None
    tenure_days = as_of_day - day_of(start)
    if tenure_days < limits.low_engagement_min_tenure_days:
        return None
    days = min(limits.low_engagement_window_days, tenure_days)
    return engagement.ring.total(as_of_day - days, as_of_day - 1) / days


def low_engagement(
    engagement: Engagement, as_of_day: int, limits: Thresholds, cutoff: float | None
) -> Reason | None:
    """Usage rate below `cutoff`: the bottom share of the customer's segment (see `Cohort`)."""
    if cutoff is None or cutoff <= 0:
        return None
    rate = engagement_rate(engagement, as_of_day, limits)
    if rate is None or rate >= cutoff:
        return None
    return Reason(
        code="low_engagement",
        observed=round(rate, 6),
        baseline=round(cutoff, 6),
        window_days=limits.low_engagement_window_days,
        strength=1.0 - rate / cutoff,
    )


def activated_at(
    reached: Mapping[str, tuple[float, ...]], required: Mapping[str, int]
) -> float | None:
    """When the last activation milestone was met (each needs `count` events of its type)."""
    times = []
    for event_type, count in required.items():
        seen = reached.get(event_type, ())
        if len(seen) < count:
            return None
        times.append(seen[count - 1])
    return max(times, default=None)


def onboarding_stalled(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """Activation milestones not all met `onboarding_days` after the customer's start."""
    if not limits.milestones:
        return None
    start = tenure_start(engagement, as_of_day)
    if start is None or as_of_day < day_of(start) + limits.onboarding_days:
        return None
    activated = activated_at(engagement.milestones, limits.milestones)
    if activated is not None and activated < as_of_day * SECONDS_PER_DAY:
        return None
    cutoff = as_of_day * SECONDS_PER_DAY
    met = sum(
        1
        for event_type, count in limits.milestones.items()
        if sum(1 for t in engagement.milestones.get(event_type, ()) if t < cutoff) >= count
    )
    return Reason(
        code="onboarding_stalled",
        observed=float(met),
        baseline=float(len(limits.milestones)),
        window_days=limits.onboarding_days,
        strength=1.0 - met / len(limits.milestones),
        measure="milestones",
    )


def payment_failed(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """A payment failing, and not recovered within `payment_grace_days`."""
    if engagement.billing is None:
        return None
    account = engagement.billing.at(as_of_day * SECONDS_PER_DAY)
    if not account.subscribed or account.failing_since is None:
        return None
    failing_days = (as_of_day * SECONDS_PER_DAY - account.failing_since) / SECONDS_PER_DAY
    if failing_days < limits.payment_grace_days:
        return None
    return Reason(
        code="payment_failed",
        observed=round(failing_days, 3),
        baseline=float(limits.payment_grace_days),
        window_days=limits.payment_grace_days,
        strength=min(1.0, failing_days / (2 * limits.payment_grace_days))
        if limits.payment_grace_days
        else 1.0,
    )


def downgrade(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """MRR lower than `downgrade_window_days` ago, or else fewer seats than then."""
    if engagement.billing is None:
        return None
    now = engagement.billing.at(as_of_day * SECONDS_PER_DAY)
    then = engagement.billing.at((as_of_day - limits.downgrade_window_days) * SECONDS_PER_DAY)
    if not (now.subscribed and then.subscribed):
        return None
    if now.mrr_cents < then.mrr_cents:
        observed, baseline = now.mrr_cents / 100, then.mrr_cents / 100
    elif now.seats is not None and then.seats is not None and now.seats < then.seats:
        observed, baseline = float(now.seats), float(then.seats)
    else:
        return None
    return Reason(
        code="downgrade",
        observed=observed,
        baseline=baseline,
        window_days=limits.downgrade_window_days,
        strength=1.0 - observed / baseline,
    )


def cancel_scheduled(engagement: Engagement, as_of_day: int, limits: Thresholds) -> Reason | None:
    """Cancellation requested, taking effect later: the last chance to talk to the customer."""
    if engagement.billing is None:
        return None
    at = as_of_day * SECONDS_PER_DAY
    account = engagement.billing.at(at)
    if not account.subscribed or account.cancel_at is None:
        return None
    return Reason(
        code="cancel_scheduled",
        observed=round(max(0.0, account.cancel_at - at) / SECONDS_PER_DAY, 3),
        baseline=0.0,
        window_days=0,
        strength=1.0,
    )


RULES: Final = (
    usage_drop,
    inactive,
    breadth_drop,
    onboarding_stalled,
    payment_failed,
    downgrade,
    cancel_scheduled,
)


def evaluate(
    engagement: Engagement,
    as_of_day: int,
    limits: Thresholds,
    low_engagement_cutoff: float | None = None,
) -> tuple[Reason, ...]:
    """Every reason that holds as of `as_of_day`, in a stable order."""
    found = [rule(engagement, as_of_day, limits) for rule in RULES]
    found.insert(2, low_engagement(engagement, as_of_day, limits, low_engagement_cutoff))
    return tuple(reason for reason in found if reason is not None)


def has_churned(engagement: Engagement, as_of_day: int) -> bool:
    """Had a subscription, and it has ended: the alert closes as `churned`, no new ones open."""
    if engagement.billing is None:
        return False
    account = engagement.billing.at(as_of_day * SECONDS_PER_DAY)
    return account.was_subscribed and not account.subscribed


def risk_score(reasons: tuple[Reason, ...], weights: Mapping[str, float] | None = None) -> int:
    """0-100: each reason's weight scaled by its strength (at least half), summed and capped."""
    table = WEIGHTS if weights is None else weights
    return min(100, round(sum(table[r.code] * max(r.strength, 0.5) for r in reasons)))
