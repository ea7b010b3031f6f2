"""`churnwatch report`: a period's churn figures from the SQL store, as a table or as JSON.

Ratios come from the sums (never averaged over partitions or segments); "n/a" (JSON null)
where the denominator is 0. A period some partitions have not closed yet is reported with a
warning: those partitions' customers are missing from every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, get_args

from churnwatch.domain.churn import Figures
from churnwatch.domain.periods import Granularity, parse_period
from config import load_settings

if TYPE_CHECKING:  # the store (SQLAlchemy, Alembic) loads only when the command runs
    from churnwatch.store.figures import PeriodReport

Ratio = Callable[[Figures], float | None]

# Ratios by their JSON name; the table shows them as %, the quick ratio as a plain number.
RATIOS: dict[str, Ratio] = {
    "churn_rate": lambda f: f.churn_rate,
    "retention_rate": lambda f: f.retention_rate,
    "gross_mrr_churn_rate": lambda f: f.gross_mrr_churn_rate,
    "net_mrr_churn_rate": lambda f: f.net_mrr_churn_rate,
    "net_mrr_retention": lambda f: f.net_mrr_retention,
    "quick_ratio": lambda f: f.quick_ratio,
    "activity_churn_rate": lambda f: f.activity_churn_rate,
}


def _count(name: str) -> Callable[[Figures], str]:
    return lambda f: f"{getattr(f, name):,}"


def _money(name: str) -> Callable[[Figures], str]:
    return lambda f: _units(getattr(f, name))


def _percent(name: str) -> Callable[[Figures], str]:
    return lambda f: _na(RATIOS[name](f), lambda r: f"{r * 100:.2f}%")


# Table rows: a heading (no cell function) or an indented label and how to show its cell.
ROWS: tuple[tuple[str, Callable[[Figures], str] | None], ...] = (
    ("Customers", None),
    ("  at start", _count("start_customers")),
    ("  at end", _count("end_customers")),
    ("  churned", _count("churned_customers")),
    ("    of them involuntary", _count("churned_involuntary_customers")),
    ("  retained", _count("retained_customers")),
    ("  new", _count("new_customers")),
    ("  reactivated", _count("reactivated_customers")),
    ("  churn rate", _percent("churn_rate")),
    ("  retention", _percent("retention_rate")),
    ("MRR (currency units)", None),
    ("  at start", _money("start_mrr_cents")),
    ("  churned", _money("churned_mrr_cents")),
    ("  downsell", _money("downsell_mrr_cents")),
    ("  expansion", _money("expansion_mrr_cents")),
    ("  new", _money("new_mrr_cents")),
    ("  reactivation", _money("reactivation_mrr_cents")),
    ("  retained, at end", _money("retained_end_mrr_cents")),
    ("  at end", _money("end_mrr_cents")),
    ("  gross MRR churn", _percent("gross_mrr_churn_rate")),
    ("  net MRR churn", _percent("net_mrr_churn_rate")),
    ("  net MRR retention", _percent("net_mrr_retention")),
    ("  quick ratio", lambda f: _na(f.quick_ratio, lambda r: f"{r:.2f}")),
    ("Activity", None),
    ("  active at start", _count("start_active_customers")),
    ("  active churned", _count("churned_active_customers")),
    ("  activity churn", _percent("activity_churn_rate")),
)
COLUMNS_PER_TABLE = 4  # value columns per block, so a wide report still fits a terminal


def format_table(report: PeriodReport) -> str:
    """The report as text: a column for all segments, then one per segment, 4 to a block."""
    lines = [
        f"Churn report {report.label} ({report.granularity}, "
        f"{report.start:%Y-%m-%d} to {report.end:%Y-%m-%d} UTC, end excluded)",
        f"Partitions closed: {len(report.partitions_closed)} of {report.partitions_total}",
    ]
    if not report.complete:
        missing = ", ".join(str(p) for p in report.partitions_missing)
        lines.append(
            f"WARNING: not every partition has closed {report.label} yet (missing: {missing}); "
            "their customers are in no figure below."
        )
    headers, names = _segment_headers([s.segment for s in report.segments])
    if names:
        lines.append(f"Segments: {names}")
    columns = [("all", report.total)]
    columns += zip(headers, (s.figures for s in report.segments), strict=True)
    for first in range(0, len(columns), COLUMNS_PER_TABLE):
        lines += ["", *_table(columns[first : first + COLUMNS_PER_TABLE])]
    return "\n".join(lines)


def format_json(report: PeriodReport) -> str:
    """The report as JSON: raw sums, and ratios to 4 decimals (null where n/a)."""
    document = {
        "period": {
            "label": report.label,
            "granularity": report.granularity,
            "start": report.start.isoformat(),
            "end": report.end.isoformat(),
        },
        "partitions": {
            "closed": list(report.partitions_closed),
            "missing": list(report.partitions_missing),
            "total": report.partitions_total,
            "complete": report.complete,
        },
        "total": _figures_json(report.total),
        "segments": [{"segment": s.segment, **_figures_json(s.figures)} for s in report.segments],
    }
    return json.dumps(document, indent=2, ensure_ascii=False)


def add_report_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `churnwatch report` on the CLI's subcommands."""
    report = commands.add_parser("report", help="churn figures of a period from the SQL store")
    report.add_argument(
        "--period", required=True, help="period label: 2020-03 (month), 2020-W11, 2020-Q1"
    )
    report.add_argument(
        "--granularity",
        choices=get_args(Granularity),
        help="week, month or quarter (default: what the label names)",
    )
    report.add_argument("--json", action="store_true", help="print JSON instead of tables")
    report.add_argument("--config", type=Path, help="TOML settings file")
    report.add_argument("--database-url", help="SQLAlchemy URL of the store")
    report.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    """Print the report; 2 when the label is malformed or nothing was recorded for it."""
    from sqlalchemy import make_url
    from sqlalchemy.exc import ArgumentError, OperationalError

    from churnwatch.store.figures import FiguresStore

    settings = load_settings(args.config, database_url=args.database_url)
    try:
        period = parse_period(args.period, args.granularity)
    except ValueError as exc:
        return _fail(str(exc))
    try:
        where = make_url(settings.database_url).render_as_string(hide_password=True)
    except ArgumentError as exc:
        return _fail(f"database_url: {exc}")
    store = FiguresStore(settings.database_url, segment_by=settings.churn.segment_by)
    try:
        store.migrate()
        report = store.report(period.label, period.granularity)
    except OperationalError as exc:
        return _fail(f"cannot read the store at {where}: {exc.orig}")
    finally:
        store.close()
    if not report.partitions_closed:
        return _fail(
            f"nothing recorded for {period.label} ({period.granularity}) in {where}: "
            "a period is recorded once a worker's partitions have moved past its end"
        )
    print(format_json(report) if args.json else format_table(report))
    return 0


def _fail(message: str) -> int:
    print(f"churnwatch: error: {message}", file=sys.stderr)
    return 2


def _figures_json(figures: Figures) -> dict[str, Any]:
    ratios = {name: _round(ratio(figures)) for name, ratio in RATIOS.items()}
    return {"figures": figures.as_dict(), "ratios": ratios}


def _round(value: float | None) -> float | None:
    return None if value is None else round(value, 4)


def _table(columns: Sequence[tuple[str, Figures]]) -> list[str]:
    label_width = max(len(label) for label, _ in ROWS)
    headers = [header for header, _ in columns]
    cells = [[cell(f) if cell else "" for _, f in columns] for _, cell in ROWS]
    widths = [max(len(h), *(len(row[i]) for row in cells)) for i, h in enumerate(headers)]
    lines = [" " * label_width + _cells(headers, widths)]
    lines += [
        f"{label:<{label_width}}{_cells(row, widths)}".rstrip()
        for (label, _), row in zip(ROWS, cells, strict=True)
    ]
    return lines


def _cells(values: Sequence[str], widths: Sequence[int]) -> str:
    return "".join(f"  {value:>{width}}" for value, width in zip(values, widths, strict=True))


def _segment_headers(segments: Sequence[dict[str, str]]) -> tuple[list[str], str]:
    """Column headers (values joined by "/") and the attribute names they stand for."""
    names = {tuple(segment) for segment in segments}
    if len(names) == 1:  # one segment_by for the whole period: values suffice
        return ["/".join(segment.values()) for segment in segments], "/".join(names.pop())
    return [" ".join(f"{k}={v}" for k, v in segment.items()) for segment in segments], ""


def _units(cents: int) -> str:
    """Cents as currency units, exactly (no float): 123456 -> 1,234.56."""
    units, rest = divmod(abs(cents), 100)
    return f"{'-' if cents < 0 else ''}{units:,}.{rest:02d}"


def _na(value: float | None, shown: Callable[[float], str]) -> str:
    return "n/a" if value is None else shown(value)
