"""What a batch does with each partition's result before the next partition: its outputs sent
(its alerts on the broker), and the result let go of (a day's health changes of a whole
partition)."""

from __future__ import annotations

import asyncio
import weakref
from itertools import groupby
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


class StepsEmitter(ListEmitter):
    """Notes alerts sent and flushes, in one list with the partitions processed."""

    def __init__(self, alerts_topic: str) -> None:
        super().__init__()
        self.alerts_topic = alerts_topic
        self.steps: list[str] = []

    async def send(self, topic: str, key: Any, value: Any, headers: Any) -> None:
        await super().send(topic, key, value, headers)
        if topic == self.alerts_topic:
            self.steps.append(f"alert {key.decode()}")

    async def flush(self) -> None:
        await super().flush()
        self.steps.append("flush")


class NotingEngine(WatchedEngine):
    """The worker's engine, noting each partition it processes in the emitter's steps."""

    def __init__(self, engine: PartitionEngine, steps: list[str]) -> None:
        super().__init__(engine)
        self.steps = steps

    def _watched(self, clock: Any, run: Any) -> Any:
        self.steps.append(f"process {clock.partition}")
        return run()


def test_a_partitions_alerts_are_on_the_broker_before_the_next_partition_is_processed(
    tmp_path: Path,
) -> None:
    # The next partition may evaluate a whole day, for hundreds of milliseconds: the alerts
    # found so far do not wait for it, nor for the batch's own flush at its end.
    emitter = StepsEmitter("churnwatch.alerts")
    worker = plain_worker(tmp_path, emitter, owned=frozenset({0, 1}))
    assert worker.settings.topics.alerts == emitter.alerts_topic
    batch = [
        Msg(USAGE, partition, day, f"c-{partition}".encode(),
            usage(f"c-{partition}", START + day * DAY, n=day))
        for day in range(20)
        for partition in (0, 1)
    ]  # fmt: skip

    async def scenario() -> None:
        await worker.ingest.handle(batch)
        emitter.steps.clear()
        noting = NotingEngine(worker.ingest._engine, emitter.steps)
        worker.ingest._engine = noting  # type: ignore[assignment]
        await worker.ingest.advance({0, 1}, START + 40 * DAY)  # both silent for 20 days

    asyncio.run(scenario())

    steps = [step for step, _ in groupby(emitter.steps)]  # a customer's alerts of 20 days: one
    assert steps == ["process 0", "alert c-0", "flush", "process 1", "alert c-1", "flush"]
