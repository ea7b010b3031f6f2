"""Live clock: in `clock = "live"` mode, wall-clock time moves quiet partitions forward."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from streams.app import Worker


def install(worker: Worker) -> None:
    settings = worker.settings
    if settings.clock != "live":
        return

    @worker.app.timer(interval=settings.sweep_interval_seconds)  # type: ignore[untyped-decorator]
    async def advance_live_clock() -> None:
        """Treat the wall clock as a heartbeat on every owned partition (finds silence)."""
        async with worker.lock:
            if not worker.settled():
                return  # tables are being restored: a write now could be overwritten
            await worker.ingest.advance(worker.owned_partitions(), time.time())
