"""Which notifications were sent, and which alerts are snoozed: the notifier's memory.

The SQL implementation is `churnwatch.store.alerts.AlertStore` (shared by every worker, so a
transition redelivered to another worker after a rebalance still pages once). The in-memory
one here serves tests and workers without a database: its claims die with the process.
Methods are synchronous (the SQL store is); the notifier calls them off the event loop.
"""

from __future__ import annotations

import threading
from datetime import datetime
from typing import Protocol


class NotificationLedger(Protocol):
    """Dedupe on (alert_id, status, event_time, route) and the snoozes people set."""

    def claim_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> bool:
        """True for the first claimer only: that caller sends the notification."""
        ...

    def release_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> None:
        """Undo a claim after a final failure, so a later redelivery may try again."""
        ...

    def is_snoozed(self, alert_id: str, at: datetime) -> bool:
        """Whether someone snoozed the alert until after `at`."""
        ...


class MemoryNotificationLedger:
    """NotificationLedger in dicts; thread-safe (the notifier calls it from worker threads).

    Keeps the newest `max_claims` claims: only a redelivery older than that could page again.
    """

    def __init__(self, max_claims: int = 100_000) -> None:
        self._lock = threading.Lock()
        self._max_claims = max_claims
        self._claims: dict[tuple[str, str, datetime, str], None] = {}  # insertion-ordered set
        self._snoozed_until: dict[str, datetime] = {}

    def claim_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> bool:
        key = (alert_id, status, event_time, route)
        with self._lock:
            if key in self._claims:
                return False
            self._claims[key] = None
            if len(self._claims) > self._max_claims:
                del self._claims[next(iter(self._claims))]
            return True

    def release_notification(
        self, alert_id: str, status: str, event_time: datetime, route: str
    ) -> None:
        with self._lock:
            self._claims.pop((alert_id, status, event_time, route), None)

    def is_snoozed(self, alert_id: str, at: datetime) -> bool:
        with self._lock:
            until = self._snoozed_until.get(alert_id)
        return until is not None and at < until

    def snooze(self, alert_id: str, until: datetime) -> None:
        """Mute the alert's notifications until `until` (an API or a test sets this)."""
        with self._lock:
            self._snoozed_until[alert_id] = until

    def claimed(self) -> int:
        """How many notifications are claimed (for tests and debugging)."""
        with self._lock:
            return len(self._claims)
