"""The SQL figures store on a real PostgreSQL: the same checks as on SQLite, and the upsert."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from churnwatch.domain.churn import Figures
from churnwatch.domain.partition import ClosedPeriod
from churnwatch.store import FiguresStore
from churnwatch.store.migrations import migrate
from churnwatch.store.models import Base
from streams.periods import SqlPeriodSink
from tests.unit.test_store import (
    FIGURES_FIELDS,
    MARCH,
    SEGMENT_BY,
    check_empty_partition_counts_as_closed,
    check_periods_are_kept_apart,
    check_re_recording_replaces,
    check_sums_across_partitions_and_segments,
)

# The PostgreSQL fixtures (postgres_url, postgres_database_url) live beside this module.
pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_database_url: str) -> Iterator[FiguresStore]:
    store = FiguresStore(postgres_database_url, segment_by=SEGMENT_BY)
    store.migrate()
    yield store
    store.close()


def test_migrations_build_what_the_models_say(postgres_database_url: str) -> None:
    migrate(postgres_database_url)
    migrate(postgres_database_url)
    engine = create_engine(postgres_database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            columns = {c["name"] for c in inspect(connection).get_columns("period_figures")}
    finally:
        engine.dispose()

    assert differences == []
    assert set(FIGURES_FIELDS) <= columns


def test_record_and_report_sum_partitions_and_segments(store: FiguresStore) -> None:
    check_sums_across_partitions_and_segments(store)


def test_recording_again_replaces_and_never_duplicates(
    store: FiguresStore, postgres_database_url: str
) -> None:
    check_re_recording_replaces(store, postgres_database_url)


def test_a_partition_without_customers_still_closes_the_period(store: FiguresStore) -> None:
    check_empty_partition_counts_as_closed(store)


def test_periods_and_granularities_are_kept_apart(store: FiguresStore) -> None:
    check_periods_are_kept_apart(store)


def test_concurrent_records_of_one_partition_leave_one_copy(store: FiguresStore) -> None:
    """Two workers closing the same partition during a rebalance: the upsert lets both pass."""
    closed = ClosedPeriod(0, MARCH, {("pro", "web"): Figures(start_customers=9)})
    sinks = [SqlPeriodSink(store, partitions_total=1) for _ in range(8)]

    async def close_everywhere() -> None:
        await asyncio.gather(*(sink.record(closed) for sink in sinks))

    asyncio.run(close_everywhere())

    report = store.report("2020-03")
    assert report.total == Figures(start_customers=9)
    assert report.partitions_closed == (0,)
