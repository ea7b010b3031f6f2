"""A batch writes each partition's part once that partition is processed: the next partition
finds its records and clock written, and its outputs let go of."""

from __future__ import annotations

import asyncio
import weakref
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry

from churnwatch.domain.partition import PartitionEngine
from config import load_settings
from streams.app import MemoryPeriodSink, Worker, create_worker
from streams.ingest import NoBacklog
from tests.unit.test_usage_agent import DAY, START, ListEmitter, Msg, ScriptedRewinder, usage

USAGE = "usage-events"


class HealthList(list[Any]):
    """A result's health changes, in a list the test can hold a weak reference to."""


class WatchedEngine:
    """The worker's engine, noting before each partition what earlier ones left behind."""

    def __init__(self, engine: PartitionEngine, worker: Worker) -> None:
        self._engine = engine
        self._worker = worker
        self.results: list[weakref.ref[HealthList]] = []
        self.seen: list[tuple[int, int, bool]] = []  # partition, results alive, p0 written

    def __getattr__(self, name: str) -> Any:
        return getattr(self._engine, name)

    def _watched(self, clock: Any, run: Any) -> Any:
        alive = sum(ref() is not None for ref in self.results)
        written = self._worker.customer("c-0") is not None
        self.seen.append((clock.partition, alive, written))
        result = run()
        result.health = HealthList(result.health)
        self.results.append(weakref.ref(result.health))
        return result

    def process_items(self, clock: Any, *args: Any) -> Any:
        return self._watched(clock, lambda: self._engine.process_items(clock, *args))

    def process(self, clock: Any, *args: Any) -> Any:
        return self._watched(clock, lambda: self._engine.process(clock, *args))


def test_each_partition_is_written_and_let_go_of_before_the_next(tmp_path: Path) -> None:
    settings = load_settings(data_dir=tmp_path, allowed_lateness_seconds=3600)
    worker = create_worker(
        settings,
        CollectorRegistry(),
        emitter=ListEmitter(),
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0, 1},
        rewinder=ScriptedRewinder(),
    )
    engine = WatchedEngine(worker.ingest._engine, worker)
    worker.ingest._engine = engine  # type: ignore[assignment]
    batch = [
        Msg(USAGE, partition, 0, f"c-{partition}".encode(), usage(f"c-{partition}", START))
        for partition in (0, 1)
    ]

    async def scenario() -> None:
        await worker.ingest.handle(batch)
        await worker.ingest.advance({0, 1}, START + 2 * DAY)  # closes a day on both

    asyncio.run(scenario())

    # handle: partition 1 found c-0 written and nothing of partition 0's result alive;
    # advance, the same (its first partition found the handle's results gone too).
    assert engine.seen == [(0, 0, False), (1, 0, True), (0, 0, True), (1, 0, True)]
    assert worker.ingest._clocks.get(0).next_offsets == {USAGE: 1}
