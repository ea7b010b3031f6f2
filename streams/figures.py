"""Churn figures of the owned partitions for the gauges: the current and the previous period.

Each partition counts up to its own watermark (the current period is still open), and only the
partitions this worker owns are counted, so the sum over workers counts every customer once.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from churnwatch.domain.churn import Figures, Segment, merge, period_figures
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.partition import PartitionEngine
from churnwatch.domain.periods import Period, period_of


@dataclass(frozen=True, slots=True)
class PeriodView:
    """Figures of one period so far: `end` is where counting stopped (watermark or period end)."""

    period: Period
    end: float
    figures: dict[Segment, Figures]


@dataclass(frozen=True, slots=True)
class FiguresSnapshot:
    views: dict[str, PeriodView] = field(default_factory=dict)  # "current", "previous"


def figures_snapshot(
    engine: PartitionEngine,
    customers_in: Callable[[int], Iterable[CustomerState]],
    watermarks: dict[int, float],
) -> FiguresSnapshot:
    """Figures of the period holding the oldest owned watermark, and of the one before it.

    `watermarks` names the partitions counted; their customers are read one partition at a
    time (decoded records are not held for all partitions at once).
    """
    if not watermarks:
        return FiguresSnapshot()
    current = period_of(min(watermarks.values()), engine.granularity)
    periods = {"current": current, "previous": current.previous()}
    parts: dict[str, list[dict[Segment, Figures]]] = {name: [] for name in periods}
    ends: dict[str, list[float]] = {name: [] for name in periods}
    for partition, watermark in watermarks.items():
        customers = list(customers_in(partition))
        for name, period in periods.items():
            end = min(period.end, max(watermark, period.start))
            ends[name].append(end)
            parts[name].append(
                period_figures(customers, period.start, end, engine.policy, engine.segment_by)
            )
    return FiguresSnapshot(
        {
            name: PeriodView(period, min(ends[name], default=period.start), merge(parts[name]))
            for name, period in periods.items()
        }
    )
