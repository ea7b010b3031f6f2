"""The one record churnwatch keeps per customer, and its plain (JSON-able) form."""

from __future__ import annotations

from array import array
from dataclasses import dataclass
from typing import Any, Final

from churnwatch.domain.alerts import OpenAlert
from churnwatch.domain.engagement import DailyRing, day_of

RECORD_VERSION: Final = 1


@dataclass(slots=True)
class CustomerState:
    """Engagement, alert and the last applied source offset of one customer.

    `usage_offset` is the offset of the last usage event applied, in the customer's own
    partition: a redelivered message at or below it changes nothing (exact under at-least-once).
    """

    customer_id: str
    partition: int
    first_seen: float
    last_seen: float
    ring: DailyRing
    events: int = 0
    usage_offset: int = -1
    alert: OpenAlert | None = None

    @classmethod
    def new(cls, customer_id: str, partition: int, at: float, ring_days: int) -> CustomerState:
        return cls(customer_id, partition, at, at, DailyRing(size=ring_days, head_day=day_of(at)))

    def to_plain(self) -> dict[str, Any]:
        """Plain form for the changelog; compact keys, versioned."""
        return {
            "v": RECORD_VERSION,
            "id": self.customer_id,
            "p": self.partition,
            "first": self.first_seen,
            "last": self.last_seen,
            "head": self.ring.head_day,
            "vol": self.ring.volume.tolist(),
            "act": self.ring.active,
            "n": self.events,
            "off": self.usage_offset,
            "alert": None
            if self.alert is None
            else [
                self.alert.alert_id,
                self.alert.opened_day,
                list(self.alert.reason_codes),
                self.alert.risk_score,
            ],
        }

    @classmethod
    def from_plain(cls, plain: dict[str, Any]) -> CustomerState:
        if plain.get("v") != RECORD_VERSION:
            raise ValueError(f"unknown customer record version {plain.get('v')!r}")
        volume = array("q", plain["vol"])
        alert = plain["alert"]
        return cls(
            customer_id=plain["id"],
            partition=plain["p"],
            first_seen=plain["first"],
            last_seen=plain["last"],
            ring=DailyRing(
                size=len(volume), head_day=plain["head"], volume=volume, active=plain["act"]
            ),
            events=plain["n"],
            usage_offset=plain["off"],
            alert=None
            if alert is None
            else OpenAlert(alert[0], alert[1], tuple(alert[2]), alert[3]),
        )
