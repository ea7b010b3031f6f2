"""Billing events and the account timeline they build: subscription status and MRR at any time.

A customer's billing events are kept as a short timeline ordered by (event time, event id), so
events arriving out of order within the allowed lateness land where they belong, and the state
"as of t" is a fold of the changes up to t. Older changes are folded into a base snapshot.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any, Final, Literal, cast, get_args

from churnwatch.domain.events import (
    Heartbeat,
    Limits,
    customer_id_of,
    decode_object,
    event_time,
    parse_control,
    parse_timestamp,
    required_string,
)
from churnwatch.exceptions import InvalidEventError

BillingType = Literal[
    "subscription.started",
    "subscription.renewed",
    "subscription.changed",
    "subscription.canceled",
    "subscription.ended",
    "payment.failed",
    "payment.succeeded",
]
BILLING_TYPES: Final[frozenset[str]] = frozenset(get_args(BillingType))
_NEEDS_MRR: Final = frozenset({"subscription.started", "subscription.changed"})
MAX_MRR_CENTS: Final = 10**13  # 100 billion a month: anything above is a unit mistake
_MAX_MRR: Final = Decimal(MAX_MRR_CENTS) / 100
MAX_MONEY_LENGTH: Final = 40  # characters of an mrr string
MAX_ATTRIBUTE_LENGTH: Final = 64


@dataclass(frozen=True, slots=True)
class BillingEvent:
    """One billing event; money in integer cents of the reporting currency."""

    event_id: str
    customer_id: str
    occurred_at: float
    type: BillingType
    mrr_cents: int | None = None
    plan: str | None = None
    seats: int | None = None
    currency: str | None = None
    effective_at: float | None = None
    attributes: tuple[tuple[str, str], ...] = ()

    @property
    def order(self) -> tuple[float, str]:
        """Position in the account timeline: event time, then event id (deterministic ties)."""
        return (self.occurred_at, self.event_id)


def parse_billing_message(
    raw: bytes | None,
    key: bytes | None,
    *,
    now: float,
    limits: Limits,
    segment_attributes: Sequence[str] = ("channel",),
) -> BillingEvent | Heartbeat:
    """Turn one `billing-events` message into a BillingEvent (or a Heartbeat)."""
    payload = decode_object(raw, limits)
    return billing_from_payload(
        payload, key, now=now, limits=limits, segment_attributes=segment_attributes
    )


def billing_from_payload(
    payload: dict[str, Any],
    key: bytes | None,
    *,
    now: float,
    limits: Limits,
    segment_attributes: Sequence[str] = ("channel",),
) -> BillingEvent | Heartbeat:
    """Validate one decoded billing object (a message's, or an envelope's event)."""
    if payload.get("control") is not None:
        return parse_control(payload, now, limits, kind="billing")
    customer_id = customer_id_of(payload, limits)
    if key is not None and key != customer_id.encode():
        raise InvalidEventError("key_mismatch", "message key differs from customer_id")
    kind = payload.get("type")
    if kind is None:
        raise InvalidEventError("missing_field", "type is required")
    if not isinstance(kind, str) or kind not in BILLING_TYPES:
        raise InvalidEventError("invalid_value", f"unknown billing type {str(kind)[:40]!r}")
    mrr = _money(payload.get("mrr"))
    if mrr is None and kind in _NEEDS_MRR:
        raise InvalidEventError("missing_field", f"mrr is required for {kind}")
    effective = payload.get("effective_at")
    try:
        effective_at = None if effective is None else parse_timestamp(effective)
    except InvalidEventError as error:
        detail = error.detail.replace("occurred_at", "effective_at")
        raise InvalidEventError(error.reason, detail) from None
    return BillingEvent(
        event_id=required_string(payload, "event_id", limits),
        customer_id=customer_id,
        occurred_at=event_time(payload, now, limits),
        type=cast(BillingType, kind),
        mrr_cents=mrr,
        plan=_attribute(payload, "plan"),
        seats=_seats(payload.get("seats")),
        currency=_attribute(payload, "currency"),
        effective_at=effective_at,
        attributes=tuple(
            (name, value)
            for name in segment_attributes
            if name != "plan" and (value := _attribute(payload, name)) is not None
        ),
    )


def _money(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidEventError("wrong_type", "mrr must be a decimal number or string")
    if isinstance(value, str) and len(value) > MAX_MONEY_LENGTH:
        raise InvalidEventError("invalid_value", f"mrr has more than {MAX_MONEY_LENGTH} characters")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidEventError("invalid_value", "mrr is not a decimal number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidEventError("invalid_value", "mrr must be a finite amount >= 0")
    # Compared before any arithmetic: "1e999990" would otherwise become a million-digit
    # integer (a minute of CPU), and "1e999999999" overflow the decimal context.
    if amount > _MAX_MRR:
        raise InvalidEventError("invalid_value", "mrr is implausibly large")
    return int((amount * 100).to_integral_value())


def _seats(value: object) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 10**7:
        raise InvalidEventError("invalid_value", "seats must be an integer 0..10,000,000")
    return value


def _attribute(payload: dict[str, Any], name: str) -> str | None:
    value = payload.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidEventError("wrong_type", f"{name} must be a string")
    if not 0 < len(value) <= MAX_ATTRIBUTE_LENGTH:
        detail = f"{name} must have 1..{MAX_ATTRIBUTE_LENGTH} characters"
        raise InvalidEventError("invalid_value", detail)
    return value


@dataclass(frozen=True, slots=True)
class Account:
    """Billing state at a moment.

    `was_subscribed` remembers an ended subscription that lasted (start < end): a customer
    subscribing again is reactivated, not new. A subscription started and ended at the same
    instant was never subscribed at any time, by the definition start <= t < end.
    """

    subscribed: bool = False
    mrr_cents: int = 0
    plan: str | None = None
    seats: int | None = None
    subscribed_since: float | None = None
    ended_at: float | None = None
    cancel_at: float | None = None
    failing_since: float | None = None
    was_subscribed: bool = False
    ended_while_failing: bool = False
    attributes: tuple[tuple[str, str], ...] = ()
    currency: str | None = None

    def apply(self, event: BillingEvent) -> Account:
        """The account right after `event`."""
        changed = _with_details(self, event)
        kind = event.type
        if kind in ("subscription.started", "subscription.renewed", "subscription.changed"):
            if not self.subscribed:
                changed = replace(
                    changed,
                    subscribed=True,
                    subscribed_since=event.occurred_at,
                    ended_at=None,
                    ended_while_failing=False,
                )
            if kind != "subscription.changed":
                changed = replace(changed, cancel_at=None)
            return changed
        if kind == "subscription.canceled":
            return replace(changed, cancel_at=event.effective_at or event.occurred_at)
        if kind == "subscription.ended":
            lasted = self.subscribed and (self.subscribed_since or 0) < event.occurred_at
            return replace(
                changed,
                subscribed=False,
                was_subscribed=self.was_subscribed or lasted,
                mrr_cents=0,
                ended_at=event.occurred_at,
                cancel_at=None,
                ended_while_failing=self.failing_since is not None,
                failing_since=None,
            )
        if kind == "payment.failed":
            return replace(changed, failing_since=self.failing_since or event.occurred_at)
        return replace(changed, failing_since=None)  # payment.succeeded


def _with_details(account: Account, event: BillingEvent) -> Account:
    attributes = dict(account.attributes)
    attributes.update(event.attributes)
    return replace(
        account,
        mrr_cents=account.mrr_cents if event.mrr_cents is None else event.mrr_cents,
        plan=event.plan or account.plan,
        seats=account.seats if event.seats is None else event.seats,
        attributes=tuple(sorted(attributes.items())),
        currency=event.currency or account.currency,
    )


@dataclass(slots=True)
class Timeline:
    """A customer's billing: the account as of `base_until`, then the changes after it."""

    base: Account = field(default_factory=Account)
    base_until: float = float("-inf")
    changes: list[BillingEvent] = field(default_factory=list)
    # `at` answers: a day's evaluation asks for the same moment a dozen times. Keyed by what
    # changes the answer (changes only grow by insert and shrink by compact); not state.
    _answers: dict[tuple[float, int, float], Account] = field(
        default_factory=dict, compare=False, repr=False
    )

    def insert(self, event: BillingEvent) -> bool:
        """Place an event by (time, id); False if it is a duplicate or older than the base."""
        if event.occurred_at < self.base_until:
            return False
        order = event.order
        index = len(self.changes)
        while index and self.changes[index - 1].order > order:
            index -= 1
        if index and self.changes[index - 1].order == order:
            return False
        self.changes.insert(index, event)
        return True

    def at(self, timestamp: float) -> Account:
        """The account including every change at or before `timestamp`."""
        key = (timestamp, len(self.changes), self.base_until)
        known = self._answers.get(key)
        if known is not None:
            return known
        account = self.base
        for event in self.changes:
            if event.occurred_at > timestamp:
                break
            account = account.apply(event)
        if len(self._answers) >= 8:
            self._answers.clear()
        self._answers[key] = account
        return account

    def changes_between(self, start: float, end: float) -> Iterable[tuple[float, Account]]:
        """(time, account right after) for each change strictly inside (start, end)."""
        account = self.at(start)
        for event in self.changes:
            if start < event.occurred_at < end:
                account = account.apply(event)
                yield event.occurred_at, account

    def compact(self, before: float) -> bool:
        """Fold changes older than `before` into the base: none can arrive that late any more."""
        if before <= self.base_until:
            return False
        dropped = 0
        for event in self.changes:
            if event.occurred_at >= before:
                break
            self.base = self.base.apply(event)
            dropped += 1
        if not dropped:
            return False  # `base_until` also says that changes were folded (known_before)
        del self.changes[:dropped]
        self.base_until = before
        return True
