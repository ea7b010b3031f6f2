"""Where a customer stands among its peers: usage-rate quantiles per segment.

`low_engagement` compares a customer with the bottom share of subscribed customers of its
segment. The quantiles come from a mergeable sketch (DDSketch's log buckets: every quantile
within 1% relative error, any number of sketches merge by adding counts), built per partition
on each evaluated day from that partition's customers. Partitions hash customers at random, so
each partition samples the whole segment; building on the evaluated day, from event-time state,
keeps the result independent of timing and of how partitions are spread over workers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Final

RELATIVE_ACCURACY: Final = 0.01
_GAMMA: Final = (1 + RELATIVE_ACCURACY) / (1 - RELATIVE_ACCURACY)
_LOG_GAMMA: Final = math.log(_GAMMA)


@dataclass(slots=True)
class QuantileSketch:
    """Non-negative values in log buckets; `quantile(q)` is within 1% of the true value."""

    buckets: dict[int, int] = field(default_factory=dict)
    zeros: int = 0
    count: int = 0

    def add(self, value: float) -> None:
        if value < 0 or math.isnan(value):
            raise ValueError(f"sketch takes non-negative values, not {value!r}")
        self.count += 1
        if value == 0:
            self.zeros += 1
            return
        index = math.ceil(math.log(value) / _LOG_GAMMA)
        self.buckets[index] = self.buckets.get(index, 0) + 1

    def merge(self, other: QuantileSketch) -> None:
        self.zeros += other.zeros
        self.count += other.count
        for index, n in other.buckets.items():
            self.buckets[index] = self.buckets.get(index, 0) + n

    def quantile(self, q: float) -> float | None:
        """The value at rank q (0..1) of the values added; None when empty."""
        if self.count == 0:
            return None
        rank = q * (self.count - 1)
        if rank < self.zeros:
            return 0.0
        seen = self.zeros
        for index in sorted(self.buckets):
            seen += self.buckets[index]
            if seen > rank:
                return 2 * _GAMMA**index / (_GAMMA + 1)
        return 2 * _GAMMA ** max(self.buckets) / (_GAMMA + 1)


Segment = tuple[tuple[str, str], ...]


def low_engagement_cutoffs(
    rates: Iterable[tuple[Segment, float]], share: float, min_population: int
) -> dict[Segment, float]:
    """Rate at the `share` quantile of each segment with at least `min_population` customers."""
    sketches: dict[Segment, QuantileSketch] = {}
    for segment, rate in rates:
        sketches.setdefault(segment, QuantileSketch()).add(rate)
    cutoffs = {}
    for segment, sketch in sketches.items():
        cutoff = sketch.quantile(share)
        if sketch.count >= min_population and cutoff is not None:
            cutoffs[segment] = cutoff
    return cutoffs
