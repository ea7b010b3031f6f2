"""Fold one partition's messages into customer state, in offset order, in event time.

Each partition keeps its own event-time clock. Its watermark follows the slowest input that
still has unread messages: the newest event time (or heartbeat) read from that input, less the
allowed lateness; when every input is read to its end, the newest event time of any. The usage
and billing topics are read in chunks at different paces (the small billing topic runs ahead),
so a clock driven by whichever input happened to be read first would call the other's events
late. An event older than the watermark is late. Whenever the watermark enters a new UTC
day, every customer of the partition is evaluated as of that day: that is how silence is found,
since no event arrives to say that nothing happened. When the day starts a new period, the
period that ended is closed: its figures are final for this partition. Days are closed before
the event that moves the clock is applied, so no record runs ahead of the day being evaluated.
Partitions never wait on each other, so how a consumer interleaves them changes no result.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from churnwatch.domain.alerts import AlertEvent, AlertPolicy, Assessment, assess, next_transition
from churnwatch.domain.billing import BillingEvent, Timeline
from churnwatch.domain.churn import ChurnPolicy, Figures, PeriodTally, Segment, segment_of
from churnwatch.domain.cohort import low_engagement_cutoffs
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.dedupe import RecentIds
from churnwatch.domain.engagement import (
    SECONDS_PER_DAY,
    breadth_bit,
    day_of,
    last_closed_day,
    ring_days_needed,
)
from churnwatch.domain.events import Heartbeat, Snooze, UsageEvent
from churnwatch.domain.health import CustomerHealth, health_digest, health_of
from churnwatch.domain.periods import Granularity, Period, period_of
from churnwatch.domain.retention import StateBounds, closing_alert, is_expired
from churnwatch.domain.rules import Thresholds, engagement_rate, evaluate, has_churned

# Segment attributes as (name, value) pairs: what segment-specific thresholds match on.
Labels = tuple[tuple[str, str], ...]

Item = UsageEvent | BillingEvent | Heartbeat | Snooze


class CustomerStore(Protocol):
    """Where customer records live for the length of a batch."""

    def get(self, customer_id: str) -> CustomerState | None: ...

    def put(self, state: CustomerState) -> None:
        """Record a changed customer: written once at the end of the batch."""

    def in_partition(self, partition: int) -> Iterable[CustomerState]:
        """Every record of the partition (read once or twice per day evaluated). A record got
        before is got again after: a store may set aside (encode) what the batch changed when
        a sweep starts, and what the reader changed when it moves on."""

    def tracked(self, partition: int) -> int:
        """How many customers the partition holds (for the cap; only asked when one is set)."""

    def delete(self, state: CustomerState) -> None:
        """Forget an expired customer (only asked when a retention is set)."""


KINDS: tuple[str, ...] = ("billing", "usage")  # within a batch, billing first: it is sparse
_NEVER = float("-inf")


@dataclass(slots=True)
class PartitionClock:
    """Event-time progress of one partition; persisted so a restart resumes where it was.

    `next_offsets` (per topic) is the plumbing's: where reading resumes, to tell whether an
    input still has unread messages. `earliest` is the oldest event time read before the
    first watermark: the first day evaluated is its day's next, however much was read before.
    """

    partition: int
    latest: dict[str, float] = field(default_factory=dict)  # newest event time per input kind
    watermark: float | None = None
    evaluated_day: int | None = None
    next_offsets: dict[str, int] = field(default_factory=dict)
    earliest: float | None = None

    def copy(self) -> PartitionClock:
        return PartitionClock(
            self.partition,
            dict(self.latest),
            self.watermark,
            self.evaluated_day,
            dict(self.next_offsets),
            self.earliest,
        )

    def to_plain(self) -> dict[str, Any]:
        return {
            "clock": 1,
            "p": self.partition,
            "latest": self.latest,
            "watermark": self.watermark,
            "evaluated_day": self.evaluated_day,
            "next": self.next_offsets,
            "earliest": self.earliest,
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> PartitionClock:
        return cls(
            plain["p"],
            dict(plain["latest"]),
            plain["watermark"],
            plain["evaluated_day"],
            dict(plain["next"]),
            plain.get("earliest"),
        )


@dataclass(frozen=True, slots=True)
class ClosedPeriod:
    """A period whose figures are final for one partition."""

    partition: int
    period: Period
    figures: dict[Segment, Figures]


@dataclass(slots=True)
class BatchResult:
    """What a batch did; the lists hold positions (in the input) of messages."""

    applied: int = 0
    redelivered: list[int] = field(default_factory=list)
    heartbeats: int = 0
    late: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    forgotten_ids: int = 0  # event ids dropped to keep within `dedupe_max_ids`
    rejected: list[int] = field(default_factory=list)  # new customers beyond the cap
    expired: list[str] = field(default_factory=list)  # customer ids forgotten (retention)
    alerts: list[AlertEvent] = field(default_factory=list)
    closed: list[ClosedPeriod] = field(default_factory=list)
    health: list[CustomerHealth] = field(default_factory=list)
    # Low-engagement cutoff rate per segment on the last day evaluated (None: no day was).
    cutoffs: dict[Labels, float] | None = None


@dataclass(frozen=True, slots=True)
class PartitionEngine:
    """The rules, time and churn settings every partition of a worker shares."""

    thresholds: Thresholds
    allowed_lateness: float
    ring_days: int
    granularity: Granularity = "month"
    policy: ChurnPolicy = field(default_factory=ChurnPolicy)
    segment_by: tuple[str, ...] = ("plan", "channel")
    alert_policy: AlertPolicy = field(default_factory=AlertPolicy)
    weights: Mapping[str, float] | None = None  # of the risk score; None: rules.WEIGHTS
    # Thresholds for segments: the first whose every (name, value) the customer has applies.
    segment_thresholds: tuple[tuple[Labels, Thresholds], ...] = ()
    # A usage event_id seen again within this much event time is a duplicate (0: off).
    dedupe_horizon: float = 0.0
    dedupe_max_ids: int = 4096
    bounds: StateBounds = field(default_factory=StateBounds)  # retention and cap (retention.py)
    # Customers of a partition a day's evaluation keeps decoded from its first read to its
    # second; a bigger partition is read twice, one decoded record at a time.
    sweep_decoded_max: int = 20_000
    # Days before an evaluated day its rules read: the ring less its slack for lateness.
    window_days: int = field(init=False)

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "window_days", self.ring_days - ring_days_needed(0, self.allowed_lateness)
        )

    def tracked_milestones(self) -> dict[str, int]:
        """Milestone event types any segment's thresholds name, each with the largest count."""
        needed = dict(self.thresholds.milestones)
        for _, limits in self.segment_thresholds:
            for event_type, count in limits.milestones.items():
                needed[event_type] = max(count, needed.get(event_type, 0))
        return needed

    def thresholds_for(self, labels: Labels) -> Thresholds:
        have = set(labels)
        for match, thresholds in self.segment_thresholds:
            if have.issuperset(match):
                return thresholds
        return self.thresholds

    def process(
        self,
        clock: PartitionClock,
        messages: Sequence[tuple[int, Item]],
        store: CustomerStore,
        backlog: frozenset[str] = frozenset(),
    ) -> BatchResult:
        """Apply `(offset, item)` pairs of `clock.partition`, each topic in offset order.

        The events of one envelope share its offset and follow each other. `backlog` names
        the inputs with unread messages beyond this batch.
        """
        offsets = [offset for offset, _ in messages]
        return self.process_items(clock, offsets, [item for _, item in messages], store, backlog)

    def process_items(
        self,
        clock: PartitionClock,
        offsets: Sequence[int],
        items: Sequence[Item],
        store: CustomerStore,
        backlog: frozenset[str] = frozenset(),
    ) -> BatchResult:
        """`process`, with each item's offset in a list beside it: no pair per event to keep
        until the batch ends (such objects bring the garbage collector's full passes sooner)."""
        result = BatchResult()
        milestones = self.tracked_milestones()
        kinds = [_kind(item) for item in items]
        order = sorted(range(len(items)), key=kinds.__getitem__)  # "billing" < "usage"
        remaining = Counter(kinds)
        # (customer, kind) -> the offset applied in this batch: the rest of its envelope.
        applying: dict[tuple[str, str], int] = {}
        for position in order:
            offset, item = offsets[position], items[position]
            kind = kinds[position]
            remaining[kind] -= 1
            if type(item) is Heartbeat:
                result.heartbeats += 1
                self._observe(clock, kind, item.occurred_at, remaining, backlog, store, result)
                continue
            assert not isinstance(item, Heartbeat)
            customer_id = item.customer_id
            state = store.get(customer_id)
            if (
                state is not None
                and offset <= (state.billing_offset if kind == "billing" else state.usage_offset)
                and applying.get((customer_id, kind)) != offset
            ):
                result.redelivered.append(position)
                continue
            if type(item) is Snooze:  # an operator's command: applies now, moves no clock
                if state is None and self._full(clock, store):
                    result.rejected.append(position)
                    continue
                if state is None:
                    state = CustomerState.new(customer_id, clock.partition, None, self.ring_days)
                state.snoozed_until, state.usage_offset = item.until, offset
                result.applied += 1
                store.put(state)
                continue
            assert not isinstance(item, Snooze)
            at = item.occurred_at
            watermark = clock.watermark
            if watermark is not None and at < watermark:
                result.late.append(position)
                continue
            if state is None and self._full(clock, store):
                result.rejected.append(position)  # changes nothing, not even the clock
                continue
            if watermark is None and (clock.earliest is None or at < clock.earliest):
                clock.earliest = at
            # Close the days this event's time completes before applying it, so no record
            # runs ahead of the day being evaluated.
            if at > clock.latest.get(kind, _NEVER) or not remaining[kind]:
                self._observe(clock, kind, at, remaining, backlog, store, result)
                state = store.get(customer_id)  # the days just closed may have expired it
            if state is None:
                state = CustomerState.new(customer_id, clock.partition, None, self.ring_days)
            applying[customer_id, kind] = offset
            if type(item) is BillingEvent:
                applied = _apply_billing(state, offset, item, self._billing_fold(clock))
            else:
                assert isinstance(item, UsageEvent)
                applied = self._apply_usage(state, offset, item, milestones, clock, result)
            if applied:
                result.applied += 1
            else:
                result.duplicates.append(position)
            store.put(state)
        return result

    def _apply_usage(
        self,
        state: CustomerState,
        offset: int,
        event: UsageEvent,
        milestones: Mapping[str, int],
        clock: PartitionClock,
        result: BatchResult,
    ) -> bool:
        """Apply one on-time usage event; False when it duplicates one already applied."""
        state.usage_offset = offset
        at = event.occurred_at
        if self.dedupe_horizon > 0:
            recent = state.recent_ids
            if recent is None:
                recent = state.recent_ids = RecentIds()
            new, forgotten = recent.admit(
                event.event_id, at, self.dedupe_horizon, self.dedupe_max_ids
            )
            result.forgotten_ids += forgotten
            if not new:
                return False
        day = day_of(at)
        ring = state.ring
        keep_from = None
        if day > ring.head_day:  # only a newer day makes the ring forget: asked only then
            keep_from = self._keep_from(clock, state)
            self._keep_activity(state, ring.oldest_after_add(day, keep_from))
        if not ring.add(
            day,
            event.quantity,
            breadth_bit(event.user_id),
            breadth_bit(event.event_type),
            keep_from,
        ):
            return False
        needed = milestones.get(event.event_type)
        if needed:
            state.note_milestone(event.event_type, at, needed)
        first, last = state.first_seen, state.last_seen
        if first is None or at < first:
            state.first_seen = at
        if last is None or at > last:
            state.last_seen = at
        state.events += 1
        return True

    def _billing_fold(self, clock: PartitionClock) -> float | None:
        """Where billing timelines fold their history (None: no day evaluated yet)."""
        if clock.evaluated_day is None:
            return None
        return _billing_fold_horizon(
            clock.evaluated_day, self.granularity, self.thresholds.downgrade_window_days
        )

    def _keep_activity(self, state: CustomerState, oldest: int) -> None:
        """Before its ring forgets the days before `oldest`: keep the activity at period
        starts that the figures of a period still to close read."""
        state.keep_activity_before(oldest, self.granularity, self.policy.activity_window_days)

    def _keep_from(self, clock: PartitionClock, state: CustomerState) -> int | None:
        """The oldest day of the customer's ring that a day still to evaluate reads."""
        if clock.evaluated_day is not None:
            return clock.evaluated_day + 1 - self.window_days
        # The first day to evaluate is not known yet: keep all.
        return None if state.first_seen is None else day_of(state.first_seen)

    def _observe(
        self,
        clock: PartitionClock,
        kind: str,
        event_time: float,
        remaining: Counter[str],
        backlog: frozenset[str],
        store: CustomerStore,
        result: BatchResult,
    ) -> None:
        """Note an input's event time; move the watermark and close the days it passes."""
        latest = clock.latest
        if event_time > latest.get(kind, _NEVER):
            latest[kind] = event_time
        unread = [k for k in KINDS if remaining[k] > 0 or k in backlog]
        if unread:
            if any(k not in latest for k in unread):
                return  # an input with unread messages has not been read at all yet
            frontier = min(latest[k] for k in unread)
        else:
            frontier = max(latest.values())
        watermark = frontier - self.allowed_lateness
        if clock.watermark is not None and watermark <= clock.watermark:
            return
        clock.watermark = watermark
        today = last_closed_day(watermark)
        if clock.evaluated_day is None:
            clock.evaluated_day = today if clock.earliest is None else day_of(clock.earliest)
        for as_of_day in range(clock.evaluated_day + 1, today + 1):
            self._evaluate_day(clock.partition, as_of_day, store, result)
            clock.evaluated_day = as_of_day

    def _evaluate_day(
        self, partition: int, as_of_day: int, store: CustomerStore, result: BatchResult
    ) -> None:
        """Evaluate the partition's customers as of a day, in two passes: the first gathers
        what needs them all (the figures of a period that ended, the low-engagement cutoffs),
        the second acts on each. Up to `sweep_decoded_max` customers, the second pass takes
        the records the first decoded; a bigger partition is read again, so that one decoded
        record at a time is held (~3 KB each: a million would need gigabytes).

        Records ahead of the clock (see CustomerState.evaluated_day) were evaluated for this
        day already, and its outputs sent; customers whose every event is later did not exist
        yet. Both count in the day's figures and cutoffs (with nothing before the day, they
        add nothing), but nothing is done to them: they are not due.
        """
        day_start = as_of_day * SECONDS_PER_DAY
        period = period_of(day_start, self.granularity)
        ended = period.previous() if period.start == day_start else None
        tally = (
            None
            if ended is None
            else PeriodTally(ended.start, ended.end, self.policy, self.segment_by)
        )
        rates: dict[Labels, list[tuple[Labels, float]]] = {}
        expiring: set[str] = set()
        held: list[CustomerState] | None = []
        for state in store.in_partition(partition):
            if held is not None and len(held) < self.sweep_decoded_max:
                held.append(state)
            else:
                held = None  # too many to keep: the second pass reads them again
            if tally is not None:
                tally.add(state)
            if self._expires(state, as_of_day):
                expiring.add(state.customer_id)
                continue  # forgotten below, before the cutoffs would have counted it
            segment = self.segment_labels(state, as_of_day)
            limits = self.thresholds_for(segment)
            if limits.low_engagement_share > 0:
                rate = engagement_rate(state, as_of_day, limits)
                if rate is not None:
                    rates.setdefault(segment, []).append((segment, rate))
        if ended is not None and tally is not None:
            result.closed.append(ClosedPeriod(partition, ended, tally.figures))
        cutoffs = self._low_engagement_cutoffs(rates)
        for state in store.in_partition(partition) if held is None else held:
            if not _due(state, as_of_day, day_start):
                continue
            if state.customer_id in expiring:
                self._expire(state, as_of_day, store, result)
                continue
            segment = self.segment_labels(state, as_of_day)
            self._evaluate(state, as_of_day, segment, cutoffs.get(segment), store, result)
            state.evaluated_day = as_of_day  # written with the record's next change
            if state.ring.size > self.ring_days:
                keep_from = as_of_day + 1 - self.window_days
                self._keep_activity(state, state.ring.oldest_after_fit(self.ring_days, keep_from))
                if state.ring.fit(self.ring_days, keep_from):
                    store.put(state)
        result.cutoffs = cutoffs

    def _full(self, clock: PartitionClock, store: CustomerStore) -> bool:
        """The partition tracks as many customers as the cap allows: no new one fits."""
        return self.bounds.full(lambda: store.tracked(clock.partition))

    def _expires(self, state: CustomerState, as_of_day: int) -> bool:
        """Due on the day and idle past the retention (when one is set)."""
        retention = self.bounds.retention_days
        return (
            retention is not None
            and _due(state, as_of_day, as_of_day * SECONDS_PER_DAY)
            and is_expired(state, as_of_day, retention)
        )

    def _expire(
        self, state: CustomerState, as_of_day: int, store: CustomerStore, result: BatchResult
    ) -> None:
        """Forget a customer idle past the retention (after figures close); close its alert."""
        store.delete(state)
        result.expired.append(state.customer_id)
        closing = closing_alert(state, as_of_day, self.alert_policy)
        if closing is not None:
            result.alerts.append(closing)

    def segment_labels(self, state: CustomerState, as_of_day: int) -> Labels:
        """The customer's segment attributes as of a day (() without billing)."""
        if state.billing is None:
            return ()
        account = state.billing.at(as_of_day * SECONDS_PER_DAY)
        return tuple(zip(self.segment_by, segment_of(account, self.segment_by), strict=True))

    def _low_engagement_cutoffs(
        self, rates: Mapping[Labels, list[tuple[Labels, float]]]
    ) -> dict[Labels, float]:
        """Each segment's bottom-share usage rate among this partition's subscribed customers."""
        cutoffs: dict[Labels, float] = {}
        for segment, ranked in rates.items():
            limits = self.thresholds_for(segment)
            cutoffs |= low_engagement_cutoffs(
                ranked, limits.low_engagement_share, limits.low_engagement_min_population
            )
        return cutoffs

    def assess(
        self,
        state: CustomerState,
        as_of_day: int,
        cutoff: float | None = None,
        segment: Labels | None = None,
    ) -> tuple[Assessment, bool]:
        """What the rules find about a customer as of a day, and whether it has churned.

        `cutoff` is its segment's low-engagement rate that day (`BatchResult.cutoffs`);
        `segment` its labels that day, when the caller has them already.
        """
        if segment is None:
            segment = self.segment_labels(state, as_of_day)
        churned = has_churned(state, as_of_day)
        limits = self.thresholds_for(segment)
        reasons = () if churned else evaluate(state, as_of_day, limits, cutoff)
        account = None if state.billing is None else state.billing.at(as_of_day * SECONDS_PER_DAY)
        subscribed = account is not None and account.subscribed
        found = assess(
            reasons,
            self.alert_policy,
            self.weights,
            mrr_at_stake=account.mrr_cents / 100 if account is not None and subscribed else 0.0,
            currency=None if account is None else account.currency,
            segment=segment,
        )
        return found, churned

    def health(
        self, state: CustomerState, as_of_day: int, cutoff: float | None = None
    ) -> CustomerHealth:
        """The customer's health as of a day, changing nothing (for queries)."""
        found, churned = self.assess(state, as_of_day, cutoff)
        return health_of(state, as_of_day, found, churned, self.thresholds_for(found.segment))

    def _evaluate(
        self,
        state: CustomerState,
        as_of_day: int,
        segment: Labels,
        cutoff: float | None,
        store: CustomerStore,
        result: BatchResult,
    ) -> None:
        found, churned = self.assess(state, as_of_day, cutoff, segment)
        snoozed = state.snoozed_until is not None and as_of_day * SECONDS_PER_DAY < (
            state.snoozed_until
        )
        alert, event = next_transition(
            state.customer_id,
            state.alert,
            found,
            as_of_day,
            self.alert_policy,
            churned=churned,
            closed_day=state.closed_day,
            snoozed=snoozed,
        )
        if alert != state.alert:
            if alert is None:
                state.closed_day = as_of_day
            state.alert = alert
            store.put(state)
        if event is not None:
            result.alerts.append(event)
        digest = health_digest(state, as_of_day, found, churned)
        if digest != state.health_digest:
            state.health_digest = digest
            store.put(state)
            limits = self.thresholds_for(found.segment)
            result.health.append(health_of(state, as_of_day, found, churned, limits))


def _due(state: CustomerState, as_of_day: int, day_start: float) -> bool:
    """Whether a record is evaluated as of the day: not evaluated for it yet (see
    CustomerState.evaluated_day), and with something applied before it."""
    return (state.evaluated_day is None or state.evaluated_day < as_of_day) and state.known_before(
        day_start
    )


def _kind(item: Item) -> str:
    if isinstance(item, Heartbeat):
        return item.kind
    return "billing" if isinstance(item, BillingEvent) else "usage"


def _apply_billing(
    state: CustomerState, offset: int, event: BillingEvent, fold_before: float | None
) -> bool:
    """Apply one on-time billing event; False when its event_id is already in the timeline.

    The timeline then folds its changes older than `fold_before` into its base: the record is
    written anyway, and a timeline grows only by such events."""
    state.billing_offset = offset
    if state.billing is None:
        state.billing = Timeline()
    applied = state.billing.insert(event)
    if fold_before is not None:
        state.billing.compact(fold_before)
    return applied


@lru_cache(maxsize=64)
def _billing_fold_horizon(
    evaluated_day: int, granularity: Granularity, downgrade_window_days: int
) -> float:
    """Billing changes before this time no figure or rule reads any more, once the days up to
    `evaluated_day` are evaluated: the figures of the last period closed read from its start,
    and downgrade rules `downgrade_window_days` back. One period more is kept than the figures
    need: a crash can keep a batch's records without its clock, and the batch read again closes
    its periods again with records that hold its folds. Folding from the period before the last
    one closed keeps that exact for a lost batch that closed up to two periods (a known limit
    beyond, docs/reliability.md)."""
    closed = period_of(evaluated_day * SECONDS_PER_DAY, granularity).previous()
    return min(closed.previous().start, closed.end - (downgrade_window_days + 1) * SECONDS_PER_DAY)
