"""Reporting periods in UTC: calendar month (default), ISO week, or calendar quarter."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Literal

Granularity = Literal["week", "month", "quarter"]


@dataclass(frozen=True, slots=True, order=True)
class Period:
    """[start, end) in epoch seconds, with a label such as `2020-03`, `2020-W11`, `2020-Q1`."""

    start: float
    end: float
    label: str
    granularity: Granularity

    def contains(self, timestamp: float) -> bool:
        return self.start <= timestamp < self.end

    def previous(self) -> Period:
        return period_of(self.start - 1, self.granularity)

    def next(self) -> Period:
        return period_of(self.end, self.granularity)


def period_of(timestamp: float, granularity: Granularity = "month") -> Period:
    """The period holding `timestamp`."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    if granularity == "week":
        monday = datetime(moment.year, moment.month, moment.day, tzinfo=UTC) - timedelta(
            days=moment.weekday()
        )
        year, week, _ = monday.isocalendar()
        return _period(monday, monday + timedelta(days=7), f"{year}-W{week:02d}", granularity)
    if granularity == "quarter":
        first_month = 3 * ((moment.month - 1) // 3) + 1
        start = datetime(moment.year, first_month, 1, tzinfo=UTC)
        label = f"{moment.year}-Q{(first_month - 1) // 3 + 1}"
        return _period(start, _add_months(start, 3), label, granularity)
    start = datetime(moment.year, moment.month, 1, tzinfo=UTC)
    return _period(start, _add_months(start, 1), f"{moment.year}-{moment.month:02d}", granularity)


_EPOCH_ORDINAL = date(1970, 1, 1).toordinal()
_MONDAY_OFFSET = 3  # day 0, 1970-01-01, was a Thursday: (day + 3) % 7 == 0 on Mondays


def starts_period(day: int, granularity: Granularity = "month") -> bool:
    """Whether a period starts on the UTC day `day` (days since the epoch): calendar
    arithmetic, no Period built (asked once per customer per day of usage)."""
    if granularity == "week":
        return (day + _MONDAY_OFFSET) % 7 == 0
    calendar = date.fromordinal(day + _EPOCH_ORDINAL)
    return calendar.day == 1 and (granularity == "month" or calendar.month % 3 == 1)


def parse_period(label: str, granularity: Granularity | None = None) -> Period:
    """The period a label names (`2020-03`, `2020-W11`, `2020-Q1`); ValueError if malformed."""
    try:
        if "-W" in label:
            year_text, week_text = label.split("-W")
            monday = datetime.fromisocalendar(int(year_text), int(week_text), 1).replace(tzinfo=UTC)
            found = period_of(monday.timestamp(), "week")
        elif "-Q" in label:
            year_text, quarter_text = label.split("-Q")
            if not 1 <= int(quarter_text) <= 4:
                raise ValueError(label)
            first = datetime(int(year_text), 3 * (int(quarter_text) - 1) + 1, 1, tzinfo=UTC)
            found = period_of(first.timestamp(), "quarter")
        else:
            year_text, month_text = label.split("-")
            first = datetime(int(year_text), int(month_text), 1, tzinfo=UTC)
            found = period_of(first.timestamp(), "month")
    except (ValueError, TypeError):
        raise ValueError(f"not a period label (2020-03, 2020-W11, 2020-Q1): {label!r}") from None
    if found.label != label or (granularity is not None and found.granularity != granularity):
        raise ValueError(f"not a {granularity or 'period'} label: {label!r}")
    return found


def _period(start: datetime, end: datetime, label: str, granularity: Granularity) -> Period:
    return Period(start.timestamp(), end.timestamp(), label, granularity)


def _add_months(start: datetime, months: int) -> datetime:
    month_index = start.month - 1 + months
    return start.replace(year=start.year + month_index // 12, month=month_index % 12 + 1)
