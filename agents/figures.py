"""Figures timer: recount the gauges' churn figures off the scrape path; re-record periods."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Worker


def install(worker: Worker) -> None:
    @worker.app.timer(interval=worker.settings.churn.figures_interval_seconds)  # type: ignore[untyped-decorator]
    async def refresh_figures() -> None:
        """O(customers) per run: every `figures_interval_seconds`, not on every scrape."""
        async with worker.lock:
            worker.refresh_figures()
            await worker.reconcile_periods()
