"""A customer's health as of a day: what the compacted `churnwatch.customer-health` topic holds.

Published when it changes (status, score, severity, reasons, alert, account), not every day:
the window figures in it are those of the day it last changed; `GET /customers/{id}` has them
live.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any, Final, Literal

from churnwatch.domain.alerts import Assessment, iso_day, reason_json
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.rules import Thresholds

SCHEMA: Final = "churnwatch.customer-health/1"
HealthStatus = Literal["healthy", "at_risk", "churned", "unsubscribed"]


@dataclass(frozen=True, slots=True)
class CustomerHealth:
    customer_id: str
    as_of_day: int
    status: HealthStatus
    assessment: Assessment
    alert_id: str | None
    window: dict[str, float | None]
    account: dict[str, Any]

    def digest(self) -> int:
        """Checksum of what makes a change worth publishing (never 0: 0 means none yet)."""
        return _digest(self.status, self.assessment, self.alert_id, self.account)

    def to_json_dict(self) -> dict[str, Any]:
        """The documented wire form (docs/schemas/customer-health.schema.json)."""
        found = self.assessment
        return {
            "schema": SCHEMA,
            "customer_id": self.customer_id,
            "as_of": iso_day(self.as_of_day),
            "status": self.status,
            "risk_score": found.risk_score,
            "severity": found.severity,
            "alert_id": self.alert_id,
            "reasons": [reason_json(r) for r in found.reasons],
            "mrr_at_stake": found.mrr_at_stake,
            "currency": found.currency,
            "segment": dict(found.segment),
            "window": self.window,
            "account": self.account,
        }


def health_of(
    state: CustomerState,
    as_of_day: int,
    found: Assessment,
    churned: bool,
    limits: Thresholds,
) -> CustomerHealth:
    """The customer's health after an evaluation as of `as_of_day`."""
    status, account = _status_and_account(state, as_of_day, churned)
    recent_first = as_of_day - limits.recent_days
    users, event_types = state.ring.breadth_between(recent_first, as_of_day - 1)
    window: dict[str, float | None] = {
        "recent_days": float(limits.recent_days),
        "recent_daily_usage": round(
            state.ring.total(recent_first, as_of_day - 1) / limits.recent_days, 6
        ),
        "recent_active_days": float(state.ring.active_days(recent_first, as_of_day - 1)),
        "recent_users": round(users, 3),
        "recent_event_types": round(event_types, 3),
        "first_seen": state.first_seen,
        "last_seen": state.last_seen,
    }
    return CustomerHealth(
        customer_id=state.customer_id,
        as_of_day=as_of_day,
        status=status,
        assessment=found,
        alert_id=None if state.alert is None else state.alert.alert_id,
        window=window,
        account=account,
    )


def health_digest(state: CustomerState, as_of_day: int, found: Assessment, churned: bool) -> int:
    """`health_of(...).digest()` without the window figures, which it does not cover: on
    most days a customer's health has not changed, and nothing is built to be published."""
    status, account = _status_and_account(state, as_of_day, churned)
    return _digest(status, found, None if state.alert is None else state.alert.alert_id, account)


def _status_and_account(
    state: CustomerState, as_of_day: int, churned: bool
) -> tuple[HealthStatus, dict[str, Any]]:
    account = None if state.billing is None else state.billing.at(as_of_day * SECONDS_PER_DAY)
    status: HealthStatus
    if churned:
        status = "churned"
    elif state.alert is not None:
        status = "at_risk"
    elif account is None or not account.subscribed:
        status = "unsubscribed"
    else:
        status = "healthy"
    if account is None:
        return status, {}
    return status, {
        "subscribed": account.subscribed,
        "plan": account.plan,
        "mrr": account.mrr_cents / 100,
        "seats": account.seats,
        "cancel_at": account.cancel_at,
        "payment_failing_since": account.failing_since,
    }


def _digest(
    status: HealthStatus, found: Assessment, alert_id: str | None, account: dict[str, Any]
) -> int:
    key = repr(
        (
            status,
            found.risk_score,
            found.severity,
            tuple(r.code for r in found.reasons),
            alert_id,
            sorted(account.items()),
        )
    )
    return zlib.crc32(key.encode()) or 1
