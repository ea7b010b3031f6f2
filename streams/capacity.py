"""Saying that a partition is full without saying it per event.

When the cap on tracked customers refuses new customers, operators need to hear about it once,
and then now and again while it lasts, never once per refused event (a flood of junk ids
would flood the log too).
"""

from __future__ import annotations

import structlog

log = structlog.get_logger(__name__)


class RefusalLog:
    """Logs the first refusal, then one line per `every` refusals, with the running total."""

    def __init__(self, every: int = 1000) -> None:
        self._every = every
        self.refused = 0

    def note(self, partition: int, refused: int, tracked: int, limit: int | None) -> bool:
        """Count `refused` events of a batch; True when a line was logged."""
        if refused <= 0:
            return False
        before, self.refused = self.refused, self.refused + refused
        if before and before // self._every == self.refused // self._every:
            return False
        log.warning(
            "customers_capacity_reached",
            partition=partition,
            tracked=tracked,
            max_customers_per_partition=limit,
            refused_in_batch=refused,
            refused_total=self.refused,
        )
        return True
