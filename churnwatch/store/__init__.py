"""The SQL store (SQLite by default, PostgreSQL in production): closed-period figures so far.

Tables are in `models`, their migrations in `migrations`; `figures` records and reports.
"""

from churnwatch.store.figures import FiguresStore, PeriodReport, SegmentFigures
from churnwatch.store.migrations import migrate

__all__ = ["FiguresStore", "PeriodReport", "SegmentFigures", "migrate"]
