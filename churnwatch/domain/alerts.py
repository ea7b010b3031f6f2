"""Alert lifecycle: one open alert per customer, opened, escalated and resolved by day.

Alert ids are deterministic (customer and opening day), so an alert re-sent after a crash
carries the same id and consumers can deduplicate on it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final, Literal

from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.rules import Reason, risk_score

SCHEMA: Final = "churnwatch.alert/1"
_ID_NAMESPACE: Final = uuid.UUID("5a0c8d3e-6a55-4c55-9a5e-63d1a1f0c0de")
# Score rise over the last published score that escalates an open alert (less is not news).
ESCALATION_STEP: Final = 20

Status = Literal["opened", "escalated", "resolved", "churned"]


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What a customer's state remembers of its open alert (score as last published)."""

    alert_id: str
    opened_day: int
    reason_codes: tuple[str, ...]
    risk_score: int


@dataclass(frozen=True, slots=True)
class AlertEvent:
    """One lifecycle transition, as published on the alerts topic."""

    alert_id: str
    customer_id: str
    status: Status
    reasons: tuple[Reason, ...]
    risk_score: int
    as_of_day: int
    opened_day: int

    def to_json_dict(self, emitted_at: float) -> dict[str, Any]:
        """The documented wire form (docs/schemas/alert.schema.json)."""
        return {
            "schema": SCHEMA,
            "alert_id": self.alert_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "risk_score": self.risk_score,
            "reasons": [
                {
                    "code": r.code,
                    "area": r.area,
                    "observed": r.observed,
                    "baseline": r.baseline,
                    "window_days": r.window_days,
                }
                for r in self.reasons
            ],
            "opened_at": _iso_day(self.opened_day),
            "event_time": _iso_day(self.as_of_day),
            "emitted_at": datetime.fromtimestamp(emitted_at, UTC).isoformat(),
        }


def alert_id_for(customer_id: str, opened_day: int) -> str:
    """Deterministic alert id: the same customer opening on the same day gets the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{customer_id}/{opened_day}"))


def next_transition(
    customer_id: str,
    current: OpenAlert | None,
    reasons: tuple[Reason, ...],
    as_of_day: int,
    churned: bool = False,
) -> tuple[OpenAlert | None, AlertEvent | None]:
    """Decide the alert after an evaluation: (alert to remember, event to publish or None).

    A churned customer's open alert closes as `churned`; no new alert opens for it.
    """
    if churned:
        if current is None:
            return None, None
        return None, _event(customer_id, current, "churned", (), as_of_day)
    if current is None:
        if not reasons:
            return None, None
        opened = OpenAlert(
            alert_id=alert_id_for(customer_id, as_of_day),
            opened_day=as_of_day,
            reason_codes=tuple(r.code for r in reasons),
            risk_score=risk_score(reasons),
        )
        return opened, _event(customer_id, opened, "opened", reasons, as_of_day)
    if not reasons:
        return None, _event(customer_id, current, "resolved", reasons, as_of_day)
    codes = tuple(r.code for r in reasons)
    score = risk_score(reasons)
    if set(codes) - set(current.reason_codes) or score >= current.risk_score + ESCALATION_STEP:
        raised = OpenAlert(current.alert_id, current.opened_day, codes, score)
        return raised, _event(customer_id, raised, "escalated", reasons, as_of_day)
    if codes != current.reason_codes:
        # A reason cleared while another holds: remember it quietly, no page.
        return OpenAlert(current.alert_id, current.opened_day, codes, current.risk_score), None
    return current, None


def _event(
    customer_id: str, alert: OpenAlert, status: Status, reasons: tuple[Reason, ...], day: int
) -> AlertEvent:
    return AlertEvent(
        alert_id=alert.alert_id,
        customer_id=customer_id,
        status=status,
        reasons=reasons,
        risk_score=risk_score(reasons),
        as_of_day=day,
        opened_day=alert.opened_day,
    )


def _iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * SECONDS_PER_DAY, UTC).isoformat()
