"""Closed-period figures in SQL: each partition records its own, a report adds them up.

A partition records a period once it is final (ClosedPeriod). Recording it again, after a
restart or a rebalance, replaces that partition's rows: an upsert on (granularity, period,
partition, segment), then a delete of segments the new figures no longer have, and a closure
row that also marks partitions that had no customers at all. A report is complete when every
partition of the input topics has closed the period.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, delete, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from churnwatch.domain.churn import Figures, Segment
from churnwatch.domain.partition import ClosedPeriod
from churnwatch.domain.periods import Granularity, parse_period
from churnwatch.exceptions import ConfigError
from churnwatch.store.migrations import upgrade
from churnwatch.store.models import Base, PeriodClosure, PeriodFigures, open_engine

FIGURES_FIELDS = tuple(item.name for item in fields(Figures))
SUPPORTED_DATABASES = ("sqlite", "postgresql")


@dataclass(frozen=True, slots=True)
class SegmentFigures:
    """Figures of one segment, summed over the partitions that closed the period."""

    segment: dict[str, str]  # {attribute: value}
    figures: Figures


@dataclass(frozen=True, slots=True)
class PeriodReport:
    """A period's figures over every partition that has closed it."""

    label: str
    granularity: Granularity
    start: datetime
    end: datetime
    partitions_closed: tuple[int, ...]
    partitions_total: int
    total: Figures = field(default_factory=Figures)
    segments: tuple[SegmentFigures, ...] = ()

    @property
    def complete(self) -> bool:
        return bool(self.partitions_closed) and not self.partitions_missing

    @property
    def partitions_missing(self) -> tuple[int, ...]:
        closed = set(self.partitions_closed)
        return tuple(p for p in range(self.partitions_total) if p not in closed)


class FiguresStore:
    """Closed-period figures in SQLite or PostgreSQL; `segment_by` names the segment values."""

    def __init__(self, url: str, *, segment_by: Sequence[str]) -> None:
        self._engine = open_engine(url)
        self._segment_by = tuple(segment_by)
        if self._engine.dialect.name not in SUPPORTED_DATABASES:
            self._engine.dispose()
            name = self._engine.dialect.name
            raise ConfigError(f"database_url: {name} is not supported; use SQLite or PostgreSQL")

    def migrate(self) -> None:
        """Upgrade the schema to the newest revision."""
        upgrade(self._engine)

    def close(self) -> None:
        self._engine.dispose()

    def record(self, closed: ClosedPeriod, partitions_total: int) -> None:
        """Record (or replace) one partition's final figures of a period, in one transaction."""
        period = closed.period
        where = {
            "granularity": period.granularity,
            "period_label": period.label,
            "partition": closed.partition,
        }
        common = {
            **where,
            "period_start": datetime.fromtimestamp(period.start, UTC),
            "period_end": datetime.fromtimestamp(period.end, UTC),
            "partitions_total": partitions_total,
            "recorded_at": datetime.now(UTC),
        }
        rows = [self._row(segment, figures, common) for segment, figures in closed.figures.items()]
        with self._engine.begin() as connection:
            if rows:
                _upsert(connection, PeriodFigures, rows, ("segment_key", *where))
            recorded = connection.scalars(
                select(PeriodFigures.segment_key).filter_by(**where)
            ).all()
            stale = set(recorded) - {row["segment_key"] for row in rows}
            if stale:
                connection.execute(
                    delete(PeriodFigures)
                    .filter_by(**where)
                    .where(PeriodFigures.segment_key.in_(stale))
                )
            closure = {**common, "segments": len(rows)}
            _upsert(connection, PeriodClosure, [closure], tuple(where))

    def report(self, label: str, granularity: Granularity | None = None) -> PeriodReport:
        """Sum a period's figures over partitions; ValueError if the label is malformed."""
        period = parse_period(label, granularity)
        where = {"granularity": period.granularity, "period_label": period.label}
        with Session(self._engine) as session:
            closures = session.scalars(select(PeriodClosure).filter_by(**where)).all()
            rows = session.scalars(select(PeriodFigures).filter_by(**where)).all()
        total = Figures()
        by_key: dict[str, SegmentFigures] = {}
        for row in rows:
            figures = Figures(**{name: getattr(row, name) for name in FIGURES_FIELDS})
            total.add(figures)
            found = by_key.setdefault(row.segment_key, SegmentFigures(dict(row.segment), Figures()))
            found.figures.add(figures)
        return PeriodReport(
            label=period.label,
            granularity=period.granularity,
            start=datetime.fromtimestamp(period.start, UTC),
            end=datetime.fromtimestamp(period.end, UTC),
            partitions_closed=tuple(sorted(c.partition for c in closures)),
            partitions_total=max((c.partitions_total for c in closures), default=0),
            total=total,
            segments=tuple(sorted(by_key.values(), key=_order)),
        )

    def _row(self, segment: Segment, figures: Figures, common: dict[str, Any]) -> dict[str, Any]:
        if len(segment) != len(self._segment_by):
            raise ValueError(f"segment {segment!r} does not match segment_by {self._segment_by!r}")
        named = dict(zip(self._segment_by, segment, strict=True))
        key = json.dumps(named, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        return {**common, **figures.as_dict(), "segment": named, "segment_key": key}


def _order(found: SegmentFigures) -> tuple[str, ...]:
    """Segments in `segment_by` order of their values (the JSON object keeps that order)."""
    return tuple(found.segment.values())


def _upsert(
    connection: Connection, entity: type[Base], rows: list[dict[str, Any]], keys: Sequence[str]
) -> None:
    """Insert rows; a row whose `keys` exist already replaces the stored one."""
    replaced = [name for name in rows[0] if name not in keys]
    statement: postgresql.Insert | sqlite.Insert
    if connection.dialect.name == "postgresql":
        pg = postgresql.insert(entity)
        statement = pg.on_conflict_do_update(
            index_elements=keys, set_={name: pg.excluded[name] for name in replaced}
        )
    else:
        lite = sqlite.insert(entity)
        statement = lite.on_conflict_do_update(
            index_elements=keys, set_={name: lite.excluded[name] for name in replaced}
        )
    connection.execute(statement, rows)
