"""The SQL figures store on SQLite: schema, idempotent records, reports, and their formatting.

The `check_*` functions take any migrated store, so the PostgreSQL tests run them too.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from collections.abc import Iterator
from dataclasses import fields
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import func, inspect, select
from structlog.testing import capture_logs

from churnwatch.domain.churn import Figures, Segment
from churnwatch.domain.partition import ClosedPeriod
from churnwatch.domain.periods import parse_period
from churnwatch.report import add_report_command, format_json, format_table
from churnwatch.store import FiguresStore, PeriodReport, SegmentFigures, migrate
from churnwatch.store.models import Base, PeriodFigures, open_engine
from streams.periods import SqlPeriodSink

SEGMENT_BY = ("plan", "channel")
MARCH = parse_period("2020-03")
FIGURES_FIELDS = [item.name for item in fields(Figures)]


def row_count(url: str) -> int:
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            return int(connection.scalar(select(func.count()).select_from(PeriodFigures)) or 0)
    finally:
        engine.dispose()


def check_sums_across_partitions_and_segments(store: FiguresStore) -> None:
    store.record(
        ClosedPeriod(
            0,
            MARCH,
            {
                ("pro", "web"): Figures(start_customers=100, churned_customers=10),
                ("basic", "ads"): Figures(start_customers=20, churned_customers=5),
            },
        ),
        partitions_total=2,
    )
    store.record(
        ClosedPeriod(1, MARCH, {("pro", "web"): Figures(start_customers=34, churned_customers=3)}),
        partitions_total=2,
    )

    report = store.report("2020-03", "month")

    assert report.partitions_closed == (0, 1)
    assert report.complete
    assert (report.total.start_customers, report.total.churned_customers) == (154, 18)
    assert report.segments == (
        SegmentFigures(
            {"plan": "basic", "channel": "ads"}, Figures(start_customers=20, churned_customers=5)
        ),
        SegmentFigures(
            {"plan": "pro", "channel": "web"}, Figures(start_customers=134, churned_customers=13)
        ),
    )
    assert report.start.isoformat() == "2020-03-01T00:00:00+00:00"
    assert report.end.isoformat() == "2020-04-01T00:00:00+00:00"


def check_re_recording_replaces(store: FiguresStore, url: str) -> None:
    first: dict[Segment, Figures] = {
        ("pro", "web"): Figures(start_customers=5, start_mrr_cents=5000),
        ("basic", "ads"): Figures(start_customers=2),
    }
    store.record(ClosedPeriod(0, MARCH, first), partitions_total=1)
    store.record(ClosedPeriod(0, MARCH, first), partitions_total=1)  # a restart re-closes it

    assert row_count(url) == 2
    assert store.report("2020-03").total == Figures(start_customers=7, start_mrr_cents=5000)

    # Figures recomputed differently (one segment gone, one changed) replace the old ones.
    store.record(ClosedPeriod(0, MARCH, {("pro", "web"): Figures(start_customers=6)}), 1)

    report = store.report("2020-03")
    assert row_count(url) == 1
    assert report.total == Figures(start_customers=6)
    assert [s.segment for s in report.segments] == [{"plan": "pro", "channel": "web"}]
    assert report.partitions_closed == (0,)


def check_empty_partition_counts_as_closed(store: FiguresStore) -> None:
    store.record(ClosedPeriod(0, MARCH, {("pro", "web"): Figures(start_customers=3)}), 3)
    store.record(ClosedPeriod(2, MARCH, {}), 3)  # no customers at all on partition 2

    report = store.report("2020-03")

    assert report.partitions_closed == (0, 2)
    assert report.partitions_missing == (1,)
    assert not report.complete
    store.record(ClosedPeriod(1, MARCH, {}), 3)
    assert store.report("2020-03").complete


def check_periods_are_kept_apart(store: FiguresStore) -> None:
    april = MARCH.next()
    store.record(ClosedPeriod(0, MARCH, {("pro", "web"): Figures(start_customers=1)}), 1)
    store.record(ClosedPeriod(0, april, {("pro", "web"): Figures(start_customers=2)}), 1)
    week = parse_period("2020-W11")
    store.record(ClosedPeriod(0, week, {("pro", "web"): Figures(start_customers=4)}), 1)

    assert store.report("2020-03").total.start_customers == 1
    assert store.report("2020-04").total.start_customers == 2
    assert store.report("2020-W11").total.start_customers == 4
    nothing = store.report("2020-05")
    assert (nothing.partitions_closed, nothing.partitions_total) == ((), 0)
    assert not nothing.complete


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/var/figures.sqlite3"  # the directory does not exist yet


@pytest.fixture
def store(url: str) -> Iterator[FiguresStore]:
    store = FiguresStore(url, segment_by=SEGMENT_BY)
    store.migrate()
    yield store
    store.close()


def test_every_figures_field_has_a_column_in_the_model() -> None:
    columns = set(PeriodFigures.__table__.columns.keys())

    assert set(FIGURES_FIELDS) <= columns


def test_every_figures_field_has_a_column_after_migrating(url: str) -> None:
    migrate(url)
    engine = open_engine(url)
    try:
        columns = {column["name"] for column in inspect(engine).get_columns("period_figures")}
    finally:
        engine.dispose()

    assert set(FIGURES_FIELDS) <= columns


def test_migrations_build_what_the_models_say(url: str) -> None:
    """A model changed without a new revision shows up here."""
    migrate(url)
    migrate(url)  # a second upgrade finds nothing to do
    engine = open_engine(url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    finally:
        engine.dispose()

    assert differences == []


def test_record_and_report_sum_partitions_and_segments(store: FiguresStore) -> None:
    check_sums_across_partitions_and_segments(store)


def test_recording_again_replaces_and_never_duplicates(store: FiguresStore, url: str) -> None:
    check_re_recording_replaces(store, url)


def test_a_partition_without_customers_still_closes_the_period(store: FiguresStore) -> None:
    check_empty_partition_counts_as_closed(store)


def test_periods_and_granularities_are_kept_apart(store: FiguresStore) -> None:
    check_periods_are_kept_apart(store)


def test_report_refuses_a_malformed_or_mismatched_label(store: FiguresStore) -> None:
    with pytest.raises(ValueError, match="not a period label"):
        store.report("March")
    with pytest.raises(ValueError, match="not a week label"):
        store.report("2020-03", "week")


def test_a_segment_must_match_segment_by(store: FiguresStore) -> None:
    with pytest.raises(ValueError, match="does not match segment_by"):
        store.record(ClosedPeriod(0, MARCH, {("pro",): Figures()}), 1)


def test_in_memory_sqlite_is_one_database_for_every_thread() -> None:
    store = FiguresStore("sqlite://", segment_by=SEGMENT_BY)
    store.migrate()
    sink = SqlPeriodSink(store, partitions_total=1)

    asyncio.run(sink.record(ClosedPeriod(0, MARCH, {("pro", "web"): Figures(start_customers=1)})))

    assert store.report("2020-03").total.start_customers == 1
    store.close()


def test_the_sink_records_and_logs_one_line_per_close(store: FiguresStore) -> None:
    sink = SqlPeriodSink(store, partitions_total=2)
    closed = ClosedPeriod(1, MARCH, {("pro", "web"): Figures(start_customers=7)})

    with capture_logs() as logs:
        asyncio.run(sink.record(closed))

    assert logs == [
        {
            "event": "period_closed",
            "log_level": "info",
            "partition": 1,
            "period": "2020-03",
            "granularity": "month",
            "customers_at_start": 7,
            "segments": 1,
        }
    ]
    assert store.report("2020-03").partitions_closed == (1,)


def textbook() -> PeriodReport:
    """154 customers at the start, 18 of them churned; some MRR; no activity data."""
    total = Figures(
        start_customers=154,
        churned_customers=18,
        retained_customers=136,
        end_customers=140,
        new_customers=4,
        start_mrr_cents=1_540_000,
        churned_mrr_cents=180_000,
        downsell_mrr_cents=20_000,
        expansion_mrr_cents=50_000,
        new_mrr_cents=40_123,
        retained_end_mrr_cents=1_370_000,
        end_mrr_cents=1_410_123,
    )
    return PeriodReport(
        label="2020-03",
        granularity="month",
        start=datetime(2020, 3, 1, tzinfo=UTC),
        end=datetime(2020, 4, 1, tzinfo=UTC),
        partitions_closed=(0, 1),
        partitions_total=2,
        total=total,
        segments=(SegmentFigures({"plan": "pro", "channel": "web"}, total),),
    )


def table_cells(text: str) -> dict[tuple[str, str], list[str]]:
    """(section, row label) -> cells of a table block; the header row is ("", "")."""
    cells: dict[tuple[str, str], list[str]] = {}
    section = ""
    for line in text.split("\n\n", 1)[1].splitlines():
        label, values = line[:LABEL_WIDTH].strip(), line[LABEL_WIDTH:].split()
        if not line.startswith(" "):
            section = label
        cells[section if line.startswith("  ") else "", label] = values
    return cells


LABEL_WIDTH = len("    of them involuntary")


def test_the_table_shows_rates_money_and_ratios() -> None:
    text = format_table(textbook())
    cells = table_cells(text)

    assert text.splitlines()[:3] == [
        "Churn report 2020-03 (month, 2020-03-01 to 2020-04-01 UTC, end excluded)",
        "Partitions closed: 2 of 2",
        "Segments: plan/channel",
    ]
    assert cells["", ""] == ["all", "pro/web"]
    customers = {
        label: values for (section, label), values in cells.items() if section == "Customers"
    }
    assert customers["at start"] == ["154", "154"]
    assert customers["churned"] == ["18", "18"]
    assert customers["new"] == ["4", "4"]
    assert customers["churn rate"] == ["11.69%", "11.69%"]
    assert customers["retention"] == ["88.31%", "88.31%"]
    mrr = {
        label: values[0] for (section, label), values in cells.items() if section.startswith("MRR")
    }
    assert mrr["at start"] == "15,400.00"
    assert mrr["new"] == "401.23"
    assert mrr["gross MRR churn"] == "12.99%"  # (1800 + 200) / 15400
    assert mrr["net MRR churn"] == "9.74%"  # (2000 - 500) / 15400
    assert mrr["net MRR retention"] == "88.96%"
    assert mrr["quick ratio"] == "0.45"  # (401.23 + 500) / 2000
    assert cells["Activity", "activity churn"] == ["n/a", "n/a"]
    assert "WARNING" not in text


def test_the_table_warns_when_partitions_are_missing() -> None:
    partial = textbook()
    partial = PeriodReport(
        partial.label,
        partial.granularity,
        partial.start,
        partial.end,
        partitions_closed=(1,),
        partitions_total=3,
        total=partial.total,
    )

    lines = format_table(partial).splitlines()

    assert lines[1] == "Partitions closed: 1 of 3"
    assert lines[2].startswith(
        "WARNING: not every partition has closed 2020-03 yet (missing: 0, 2)"
    )


def test_json_has_sums_and_ratios_to_four_decimals() -> None:
    document = json.loads(format_json(textbook()))

    assert document["period"] == {
        "label": "2020-03",
        "granularity": "month",
        "start": "2020-03-01T00:00:00+00:00",
        "end": "2020-04-01T00:00:00+00:00",
    }
    assert document["partitions"] == {"closed": [0, 1], "missing": [], "total": 2, "complete": True}
    total = document["total"]
    assert total["figures"]["start_customers"] == 154
    assert total["figures"]["start_mrr_cents"] == 1_540_000
    assert set(total["figures"]) == set(FIGURES_FIELDS)
    assert total["ratios"] == {
        "churn_rate": 0.1169,
        "retention_rate": 0.8831,
        "gross_mrr_churn_rate": 0.1299,
        "net_mrr_churn_rate": 0.0974,
        "net_mrr_retention": 0.8896,
        "quick_ratio": 0.4506,
        "activity_churn_rate": None,
    }
    assert document["segments"][0]["segment"] == {"plan": "pro", "channel": "web"}
    assert document["segments"][0]["ratios"]["churn_rate"] == 0.1169


def test_an_empty_period_is_all_n_a() -> None:
    empty = PeriodReport(
        "2020-03",
        "month",
        datetime(2020, 3, 1, tzinfo=UTC),
        datetime(2020, 4, 1, tzinfo=UTC),
        partitions_closed=(0,),
        partitions_total=1,
    )

    ratios = json.loads(format_json(empty))["total"]["ratios"]

    assert set(ratios.values()) == {None}
    assert format_table(empty).count("n/a") == len(ratios)


def run_cli(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="churnwatch")
    add_report_command(parser.add_subparsers(required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


def test_the_report_command_prints_a_table_or_json(
    store: FiguresStore, url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    closed: dict[Segment, Figures] = {
        ("pro", "web"): Figures(start_customers=154, churned_customers=18)
    }
    store.record(ClosedPeriod(0, MARCH, closed), 1)

    assert run_cli("report", "--period", "2020-03", "--database-url", url) == 0
    assert "11.69%" in capsys.readouterr().out
    assert run_cli("report", "--period", "2020-03", "--json", "--database-url", url) == 0
    assert json.loads(capsys.readouterr().out)["total"]["ratios"]["churn_rate"] == 0.1169


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (("--period", "2020-3x"), "not a period label"),
        (("--period", "2020-03", "--granularity", "week"), "not a week label"),
        (("--period", "2020-04"), "nothing recorded for 2020-04 (month)"),
    ],
)
def test_the_report_command_exits_2_with_a_reason(
    store: FiguresStore,
    url: str,
    capsys: pytest.CaptureFixture[str],
    argv: tuple[str, ...],
    message: str,
) -> None:
    store.record(ClosedPeriod(0, MARCH, {}), 1)

    assert run_cli("report", *argv, "--database-url", url) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("churnwatch: error: ")
    assert message in captured.err
