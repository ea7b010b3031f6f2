"""The one record churnwatch keeps per customer, and its plain (JSON-able) form."""

from __future__ import annotations

from array import array
from dataclasses import dataclass, field
from typing import Any, Final

from churnwatch.domain.alerts import OpenAlert, Severity
from churnwatch.domain.billing import Account, BillingEvent, Timeline
from churnwatch.domain.dedupe import RecentIds
from churnwatch.domain.engagement import DailyRing, active_slots, day_of
from churnwatch.domain.periods import Granularity, starts_period

RECORD_VERSION: Final = 2  # 2: the ring holds its active days only (1, every day, still reads)
READABLE_VERSIONS: Final = (1, 2)
ACTIVITY_MARKS_KEPT: Final = 3


@dataclass(slots=True)
class CustomerState:
    """Engagement, billing, alert and the last applied source offsets of one customer.

    `usage_offset` and `billing_offset` are the offsets of the last messages applied from each
    input topic, in the customer's own partition: a redelivered message at or below them
    changes nothing (exact under at-least-once delivery).
    """

    customer_id: str
    partition: int
    first_seen: float | None  # first and last usage event (None: no usage yet)
    last_seen: float | None
    ring: DailyRing
    events: int = 0
    usage_offset: int = -1
    billing_offset: int = -1
    alert: OpenAlert | None = None
    billing: Timeline | None = None
    # Period-start days (UTC) at which the customer was active, for boundaries the ring no
    # longer covers; recorded as the ring forgets the first day of each one's window.
    active_marks: tuple[int, ...] = ()
    # Activation milestones: the earliest event times of each milestone type, as many as needed.
    milestones: dict[str, tuple[float, ...]] = field(default_factory=dict)
    closed_day: int | None = None  # the day the last alert closed: the cooldown runs from it
    snoozed_until: float | None = None  # no alert opens before this time (an operator asked)
    health_digest: int = 0  # of the health last published, to publish only changes
    recent_ids: RecentIds | None = None  # usage event ids within the dedupe horizon
    # The last day this record was evaluated as of. A batch's records can outlive a crash
    # that lost its partition clock; the days they were evaluated for are not evaluated again.
    evaluated_day: int | None = None

    def note_milestone(self, event_type: str, at: float, needed: int) -> None:
        """Keep the `needed` earliest times of a milestone event type (order-independent)."""
        times = self.milestones.get(event_type, ())
        if len(times) < needed or at < times[-1]:
            self.milestones[event_type] = tuple(sorted((*times, at)))[:needed]

    def known_before(self, moment: float) -> bool:
        """Whether anything applied to the record happened before `moment` (a snooze counts).

        A record can hold only events later than a day being evaluated (read ahead of the
        watermark): as of that day the customer did not exist yet.
        """
        if self.first_seen is not None and self.first_seen < moment:
            return True
        billing = self.billing
        if billing is not None and (
            billing.base_until > float("-inf")
            or (billing.changes and billing.changes[0].occurred_at < moment)
        ):
            return True
        return self.snoozed_until is not None

    @classmethod
    def new(
        cls, customer_id: str, partition: int, at: float | None, ring_days: int
    ) -> CustomerState:
        """A customer first seen at `at` (its first usage), or with no usage yet (None)."""
        ring = DailyRing(size=ring_days, head_day=0 if at is None else day_of(at))
        return cls(customer_id, partition, first_seen=at, last_seen=at, ring=ring, events=0)

    def active_at(self, boundary: float, window_days: int) -> bool:
        """A usage event in the `window_days` whole days before `boundary`'s day."""
        day = day_of(boundary)
        if day - window_days >= self.ring.oldest_day:
            return self.ring.active_between(day - window_days, day - 1)
        return day in self.active_marks

    def mark_activity(self, period_start_day: int, window_days: int) -> None:
        """Remember activity at a period start before the ring forgets it (once: marking
        again changes nothing)."""
        if period_start_day in self.active_marks:
            return
        if self.ring.active_between(period_start_day - window_days, period_start_day - 1):
            marks = sorted((*self.active_marks, period_start_day))
            self.active_marks = tuple(marks[-ACTIVITY_MARKS_KEPT:])

    def keep_activity_before(self, oldest: int, granularity: Granularity, window_days: int) -> None:
        """Mark activity at each period start whose activity window begins on a day the
        ring is about to forget (those before `oldest`), so that `active_at` still answers
        once the ring cannot. Days of a window are final by then (the ring forgets no day a
        day still to be evaluated reads), so a mark made now is the one made at the period's
        close; a close then rewrites no record for it."""
        ring = self.ring
        if not ring.active:
            return  # nothing held: no window it forgets had activity
        # Days after the head hold nothing: a window starting there was inactive.
        for first_day in range(ring.oldest_day, min(oldest, ring.head_day + 1)):
            if starts_period(first_day + window_days, granularity):
                self.mark_activity(first_day + window_days, window_days)

    def to_plain(self) -> dict[str, Any]:
        """Plain form for the changelog; compact keys, versioned."""
        plain: dict[str, Any] = {
            "v": RECORD_VERSION,
            "id": self.customer_id,
            "p": self.partition,
            "first": self.first_seen,
            "last": self.last_seen,
            **_ring_plain(self.ring),
            "n": self.events,
            "off": self.usage_offset,
        }
        if self.billing_offset >= 0:
            plain["boff"] = self.billing_offset
        if self.alert is not None:
            alert = self.alert
            plain["alert"] = [
                alert.alert_id,
                alert.opened_day,
                list(alert.reason_codes),
                alert.risk_score,
                alert.severity,
                alert.clear_since_day,
            ]
        if self.billing is not None:
            plain["bill"] = _timeline_plain(self.billing)
        if self.active_marks:
            plain["marks"] = list(self.active_marks)
        if self.milestones:
            plain["ms"] = {name: list(times) for name, times in self.milestones.items()}
        if self.closed_day is not None:
            plain["closed"] = self.closed_day
        if self.snoozed_until is not None:
            plain["snooze"] = self.snoozed_until
        if self.health_digest:
            plain["hd"] = self.health_digest
        if self.recent_ids is not None and len(self.recent_ids):
            plain["ids"] = self.recent_ids.to_plain()
        if self.evaluated_day is not None:
            plain["ed"] = self.evaluated_day
        if self.ring.gone is not None:
            plain["gone"] = self.ring.gone
        return plain

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> CustomerState:
        version = plain.get("v")
        if type(version) is not int or version not in READABLE_VERSIONS:
            raise ValueError(f"unknown customer record version {version!r}")
        alert = plain.get("alert")
        bill = plain.get("bill")
        return cls(
            customer_id=plain["id"],
            partition=plain["p"],
            first_seen=plain["first"],
            last_seen=plain["last"],
            ring=_ring_from_plain(plain),
            events=plain["n"],
            usage_offset=plain["off"],
            billing_offset=plain.get("boff", -1),
            alert=None if alert is None else _alert_from_plain(alert),
            billing=None if bill is None else _timeline_from_plain(bill),
            active_marks=tuple(plain.get("marks", ())),
            milestones={name: tuple(times) for name, times in plain.get("ms", {}).items()},
            closed_day=plain.get("closed"),
            snoozed_until=plain.get("snooze"),
            health_digest=plain.get("hd", 0),
            recent_ids=RecentIds.from_plain(plain["ids"]) if "ids" in plain else None,
            evaluated_day=plain.get("ed"),
        )


def _ring_plain(ring: DailyRing) -> dict[str, Any]:
    """The ring's days with any event only, in slot order, and its size when it has others.

    A day without an event holds zeros, and most days of a quiet customer's ring are such
    days: written out, they were half of a record of one event (~230 of 450 bytes).
    """
    plain: dict[str, Any] = {
        "head": ring.head_day,
        "act": format(ring.active, "x"),  # hex: may exceed JSON's 64-bit integers
    }
    if ring.active.bit_count() == ring.size:
        plain.update(vol=ring.volume.tolist(), us=ring.users.tolist(), ks=ring.kinds.tolist())
        return plain
    slots = active_slots(ring.active)
    volume, users, kinds = ring.volume, ring.users, ring.kinds
    plain.update(
        vol=[volume[slot] for slot in slots],
        us=[users[slot] for slot in slots],
        ks=[kinds[slot] for slot in slots],
        sz=ring.size,
    )
    return plain


def _ring_from_plain(plain: dict[str, Any]) -> DailyRing:
    """Without `sz` the ring holds every day (a full ring, or a version 1 record)."""
    volume: list[int] = plain["vol"]
    size: int = plain.get("sz", len(volume))
    active = int(plain["act"], 16)
    empty = [0] * len(volume)  # version 1 records written before breadth was kept
    users: list[int] = plain.get("us") or empty
    kinds: list[int] = plain.get("ks") or empty
    if len(volume) == size:
        ring_volume, ring_users, ring_kinds = (
            array("q", volume),
            array("Q", users),
            array("Q", kinds),
        )
    else:
        ring_volume, ring_users, ring_kinds = (array(code, bytes(8 * size)) for code in "qQQ")
        slots = active_slots(active)
        if not len(slots) == len(volume) == len(users) == len(kinds):
            raise ValueError(f"ring of {len(slots)} active days holds {len(volume)} values")
        for slot, day_volume, day_users, day_kinds in zip(slots, volume, users, kinds, strict=True):
            ring_volume[slot], ring_users[slot], ring_kinds[slot] = day_volume, day_users, day_kinds
    return DailyRing(
        size=size,
        head_day=plain["head"],
        volume=ring_volume,
        active=active,
        users=ring_users,
        kinds=ring_kinds,
        gone=plain.get("gone"),
    )


def _alert_from_plain(alert: list[Any]) -> OpenAlert:
    """Records written before severity and the clear-since day were kept read as `warning`."""
    severity: Severity = alert[4] if len(alert) > 4 else "warning"
    clear_since = alert[5] if len(alert) > 5 else None
    return OpenAlert(alert[0], alert[1], tuple(alert[2]), alert[3], severity, clear_since)


_ACCOUNT_FIELDS: Final = (
    "subscribed",
    "mrr_cents",
    "plan",
    "seats",
    "subscribed_since",
    "ended_at",
    "cancel_at",
    "failing_since",
    "was_subscribed",
    "ended_while_failing",
    "currency",  # last: records written before it was kept have one value fewer
)
_EVENT_FIELDS: Final = (
    "event_id",
    "customer_id",
    "occurred_at",
    "type",
    "mrr_cents",
    "plan",
    "seats",
    "currency",
    "effective_at",
)


def _timeline_plain(timeline: Timeline) -> dict[str, Any]:
    base = timeline.base
    return {
        "base": [getattr(base, name) for name in _ACCOUNT_FIELDS] + [list(base.attributes)],
        "until": None if timeline.base_until == float("-inf") else timeline.base_until,
        "changes": [
            [getattr(event, name) for name in _EVENT_FIELDS] + [list(event.attributes)]
            for event in timeline.changes
        ],
    }


def _timeline_from_plain(plain: dict[str, Any]) -> Timeline:
    *base_values, base_attributes = plain["base"]
    base_values += [None] * (len(_ACCOUNT_FIELDS) - len(base_values))
    base = Account(
        **dict(zip(_ACCOUNT_FIELDS, base_values, strict=True)),
        attributes=tuple((k, v) for k, v in base_attributes),
    )
    changes = []
    for row in plain["changes"]:
        *values, attributes = row
        changes.append(
            BillingEvent(
                **dict(zip(_EVENT_FIELDS, values, strict=True)),
                attributes=tuple((k, v) for k, v in attributes),
            )
        )
    until = plain["until"]
    return Timeline(base, float("-inf") if until is None else until, changes)
