"""Figures timer: recount the state gauges off the scrape path; re-record periods."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Final

from streams.figures import RefreshBudget

if TYPE_CHECKING:
    from streams.app import Worker

REFRESH_SHARE: Final = 0.1  # of the time, at most, spent recounting (it holds the batch lock)


def install(worker: Worker) -> None:
    budget = RefreshBudget(REFRESH_SHARE)

    @worker.app.timer(interval=worker.settings.churn.figures_interval_seconds)  # type: ignore[untyped-decorator]
    async def refresh_figures() -> None:
        """O(customers) per run: every `figures_interval_seconds`, or less often when a run
        takes long (big workers), and never on a scrape."""
        if not budget.due(time.monotonic()):
            return
        async with worker.lock:
            started = time.monotonic()
            worker.refresh_figures()
            await worker.reconcile_periods()
            budget.spent(started, time.monotonic())
