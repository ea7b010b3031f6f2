"""Alert lifecycle: one open alert per customer, opened, escalated and resolved by day.

Alert ids are deterministic (customer and opening day), so an alert re-sent after a crash
carries the same id and consumers can deduplicate on it.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, Literal

from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.rules import Reason, risk_score

SCHEMA: Final = "churnwatch.alert/1"
_ID_NAMESPACE: Final = uuid.UUID("5a0c8d3e-6a55-4c55-9a5e-63d1a1f0c0de")

Status = Literal["opened", "escalated", "resolved", "churned"]
Severity = Literal["info", "warning", "critical"]
SEVERITIES: Final[tuple[Severity, ...]] = ("info", "warning", "critical")


@dataclass(frozen=True, slots=True)
class AlertPolicy:
    """How alerts open, escalate, close and rank (config.AlertSettings)."""

    warning_score: int = 40
    critical_score: int = 70
    high_mrr: float = 1000.0  # MRR at stake (currency units) that raises severity one step
    escalation_step: int = 20  # score rise over the last published score that is news
    resolve_after_days: int = 3  # whole days without any reason before an alert resolves
    cooldown_days: int = 7  # after an alert closes, no new one opens for this many days


def severity_of(score: int, mrr_at_stake: float, policy: AlertPolicy) -> Severity:
    """Severity from the score, one step higher when much revenue is at stake."""
    if score <= 0:
        return "info"
    level = 2 if score >= policy.critical_score else 1 if score >= policy.warning_score else 0
    if mrr_at_stake >= policy.high_mrr:
        level = min(level + 1, 2)
    return SEVERITIES[level]


@dataclass(frozen=True, slots=True)
class Assessment:
    """What one evaluation found about a customer: the input of the lifecycle."""

    reasons: tuple[Reason, ...] = ()
    risk_score: int = 0
    severity: Severity = "info"
    mrr_at_stake: float = 0.0
    currency: str | None = None
    segment: tuple[tuple[str, str], ...] = ()


def assess(
    reasons: tuple[Reason, ...],
    policy: AlertPolicy,
    weights: Mapping[str, float] | None = None,
    mrr_at_stake: float = 0.0,
    currency: str | None = None,
    segment: tuple[tuple[str, str], ...] = (),
) -> Assessment:
    """Score and rank a set of reasons."""
    score = risk_score(reasons, weights)
    return Assessment(
        reasons, score, severity_of(score, mrr_at_stake, policy), mrr_at_stake, currency, segment
    )


@dataclass(frozen=True, slots=True)
class OpenAlert:
    """What a customer's state remembers of its open alert (as last published)."""

    alert_id: str
    opened_day: int
    reason_codes: tuple[str, ...]
    risk_score: int
    severity: Severity = "warning"
    clear_since_day: int | None = None  # first day of the current run without any reason


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
    severity: Severity = "info"
    mrr_at_stake: float = 0.0
    currency: str | None = None
    segment: tuple[tuple[str, str], ...] = ()

    def to_json_dict(self, emitted_at: float) -> dict[str, Any]:
        """The documented wire form (docs/schemas/alert.schema.json)."""
        return {
            "schema": SCHEMA,
            "alert_id": self.alert_id,
            "customer_id": self.customer_id,
            "status": self.status,
            "risk_score": self.risk_score,
            "severity": self.severity,
            "mrr_at_stake": self.mrr_at_stake,
            "currency": self.currency,
            "segment": dict(self.segment),
            "reasons": [reason_json(r) for r in self.reasons],
            "opened_at": iso_day(self.opened_day),
            "event_time": iso_day(self.as_of_day),
            "emitted_at": datetime.fromtimestamp(emitted_at, UTC).isoformat(),
        }


def reason_json(reason: Reason) -> dict[str, Any]:
    plain: dict[str, Any] = {
        "code": reason.code,
        "area": reason.area,
        "observed": reason.observed,
        "baseline": reason.baseline,
        "window_days": reason.window_days,
    }
    if reason.measure:
        plain["measure"] = reason.measure
    return plain


def alert_id_for(customer_id: str, opened_day: int) -> str:
    """Deterministic alert id: the same customer opening on the same day gets the same id."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{customer_id}/{opened_day}"))


def next_transition(
    customer_id: str,
    current: OpenAlert | None,
    found: Assessment,
    as_of_day: int,
    policy: AlertPolicy,
    churned: bool = False,
    closed_day: int | None = None,
    snoozed: bool = False,
) -> tuple[OpenAlert | None, AlertEvent | None]:
    """Decide the alert after an evaluation: (alert to remember, event to publish or None).

    A churned customer's open alert closes as `churned`; no new alert opens for it. An alert
    resolves once no reason has held for `resolve_after_days`; after a close (`closed_day`),
    none opens again within `cooldown_days`, nor while the customer is snoozed.
    """
    if churned:
        if current is None:
            return None, None
        return None, _event(customer_id, current, "churned", Assessment(), as_of_day)
    if current is None:
        if not found.reasons or snoozed:
            return None, None
        if closed_day is not None and as_of_day - closed_day < policy.cooldown_days:
            return None, None
        opened = OpenAlert(
            alert_id=alert_id_for(customer_id, as_of_day),
            opened_day=as_of_day,
            reason_codes=_codes(found),
            risk_score=found.risk_score,
            severity=found.severity,
        )
        return opened, _event(customer_id, opened, "opened", found, as_of_day)
    if not found.reasons:
        clear_since = as_of_day if current.clear_since_day is None else current.clear_since_day
        if as_of_day - clear_since >= policy.resolve_after_days:
            return None, _event(customer_id, current, "resolved", found, as_of_day)
        return replace(current, clear_since_day=clear_since), None
    codes = _codes(found)
    rose = (
        set(codes) - set(current.reason_codes)
        or found.risk_score >= current.risk_score + policy.escalation_step
        or SEVERITIES.index(found.severity) > SEVERITIES.index(current.severity)
    )
    if rose:
        raised = replace(
            current,
            reason_codes=codes,
            risk_score=found.risk_score,
            severity=found.severity,
            clear_since_day=None,
        )
        return raised, _event(customer_id, raised, "escalated", found, as_of_day)
    # A reason cleared while another holds, or a small change: remember it quietly, no page.
    return replace(current, reason_codes=codes, clear_since_day=None), None


def _codes(found: Assessment) -> tuple[str, ...]:
    return tuple(r.code for r in found.reasons)


def _event(
    customer_id: str, alert: OpenAlert, status: Status, found: Assessment, day: int
) -> AlertEvent:
    return AlertEvent(
        alert_id=alert.alert_id,
        customer_id=customer_id,
        status=status,
        reasons=found.reasons,
        risk_score=found.risk_score,
        as_of_day=day,
        opened_day=alert.opened_day,
        severity=found.severity,
        mrr_at_stake=found.mrr_at_stake,
        currency=found.currency,
        segment=found.segment,
    )


def iso_day(day: int) -> str:
    return datetime.fromtimestamp(day * SECONDS_PER_DAY, UTC).isoformat()
