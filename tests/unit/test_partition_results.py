"""A batch lets go of each partition's result once its outputs are sent: the next partition is
processed without it (a day's health changes of a whole partition)."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from churnwatch.domain.partition import PartitionEngine
from tests.unit.test_usage_agent import DAY, START, ListEmitter, Msg, plain_worker, usage

USAGE = "usage-events"


class HealthList(list[Any]):
    """A result's health changes, in a list the test can hold a weak reference to."""


class WatchedEngine:
    """The worker's engine, noting before each partition what earlier ones left behind."""

    def __init__(self, engine: PartitionEngine) -> None:
        self._engine = engine
        self.results: list[weakref.ref[HealthList]] = []
        self.seen: list[tuple[int, int]] = []  # partition, earlier results still alive

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def _watched(self, clock: Any, run: Any) -> Any:
        alive = sum(ref() is not None for ref in self.results)
        self.seen.append((clock.partition, alive))
        result = run()
        result.health = HealthList(result.health)
        self.results.append(weakref.ref(result.health))
        return result

    def process_items(self, clock: Any, *args: Any) -> Any:
        return self._watched(clock, lambda: self._engine.process_items(clock, *args))

    def process(self, clock: Any, *args: Any) -> Any:
        return self._watched(clock, lambda: self._engine.process(clock, *args))


def test_each_partition_result_is_let_go_of_before_the_next(tmp_path: Path) -> None:
    worker = plain_worker(tmp_path, ListEmitter(), owned=frozenset({0, 1}))
    engine = WatchedEngine(worker.ingest._engine)
    worker.ingest._engine = engine  # type: ignore[assignment]
    batch = [
        Msg(USAGE, partition, 0, f"c-{partition}".encode(), usage(f"c-{partition}", START))
        for partition in (0, 1)
    ]

    async def scenario() -> None:
        await worker.ingest.handle(batch)
        await worker.ingest.advance({0, 1}, START + 2 * DAY)  # closes a day on both

    asyncio.run(scenario())

    # handle, then advance: no partition is processed with an earlier one's result alive.
    assert engine.seen == [(0, 0), (1, 0), (0, 0), (1, 0)]
    assert worker.customer("c-0") is not None
    assert worker.customer("c-1") is not None
