"""The SQL store (SQLite by default, PostgreSQL in production): closed periods and alerts.

Tables are in `models`, their migrations in `migrations`; `figures` records and reports
closed-period figures, `alerts` keeps alert transitions, acknowledgements, snoozes and the
notifier's claims.
"""

from churnwatch.store.alerts import AlertPage, AlertRecord, AlertStore, Transition
from churnwatch.store.figures import FiguresStore, PeriodReport, SegmentFigures
from churnwatch.store.migrations import migrate

__all__ = [
    "AlertPage",
    "AlertRecord",
    "AlertStore",
    "FiguresStore",
    "PeriodReport",
    "SegmentFigures",
    "Transition",
    "migrate",
]
