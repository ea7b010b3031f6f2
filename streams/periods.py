"""The worker's PeriodSink: each closed period goes to the SQL store, off the event loop."""

from __future__ import annotations

import asyncio

import structlog
from sqlalchemy.exc import SQLAlchemyError

from churnwatch.domain.partition import ClosedPeriod
from churnwatch.store.figures import FiguresStore
from config import Settings

log = structlog.get_logger(__name__)


class SqlPeriodSink:
    """Records a partition's final figures of a period; a re-record replaces, never adds."""

    def __init__(self, store: FiguresStore, partitions_total: int) -> None:
        self._store = store
        self._partitions_total = partitions_total

    @classmethod
    def from_settings(cls, settings: Settings) -> SqlPeriodSink:
        """A sink on `settings.database_url`, its schema upgraded (blocks: call at start-up)."""
        store = FiguresStore(settings.database_url, segment_by=settings.churn.segment_by)
        store.migrate()
        return cls(store, settings.partitions)

    async def record(self, closed: ClosedPeriod) -> bool:
        """Upsert; False (logged) when the database fails: the worker retries later."""
        try:
            # A database thread, so a slow commit never stalls the partitions' event loop.
            await asyncio.to_thread(self._store.record, closed, self._partitions_total)
        except SQLAlchemyError as exc:
            log.warning(
                "period_record_failed",
                partition=closed.partition,
                period=closed.period.label,
                error=str(exc).splitlines()[0][:300],
            )
            return False
        log.info(
            "period_closed",
            partition=closed.partition,
            period=closed.period.label,
            granularity=closed.period.granularity,
            customers_at_start=sum(f.start_customers for f in closed.figures.values()),
            segments=len(closed.figures),
        )
        return True

    def close(self) -> None:
        self._store.close()
