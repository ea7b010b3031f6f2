"""Reporting periods: the calendar arithmetic that says a period starts on a day agrees with
the periods themselves."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.domain.periods import Granularity, period_of, starts_period

granularities = st.sampled_from(["week", "month", "quarter"])


@given(day=st.integers(0, 80_000), granularity=granularities)  # 1970 to 2189
def test_a_period_starts_on_a_day_exactly_when_its_period_starts_at_that_midnight(
    day: int, granularity: Granularity
) -> None:
    midnight = day * SECONDS_PER_DAY
    assert starts_period(day, granularity) == (period_of(midnight, granularity).start == midnight)


def test_known_period_starts() -> None:
    monday_2024_01_01, thursday_2024_02_01, monday_2024_04_01 = 19_723, 19_754, 19_814
    assert starts_period(monday_2024_01_01, "quarter")
    assert starts_period(thursday_2024_02_01, "month")
    assert not starts_period(thursday_2024_02_01, "week")
    assert not starts_period(thursday_2024_02_01, "quarter")
    assert starts_period(monday_2024_04_01, "week")
    assert not starts_period(monday_2024_04_01 + 1, "month")
