"""Whole runs over simulated traffic: produce a plan, wait for workers to read it all, and read
back what they made (churn figures, customer records, alert ids). Shared by the integration and
fault tests, which compare one run with another."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import orjson
from kafka import KafkaConsumer, TopicPartition

from churnwatch import simulation
from churnwatch.domain.churn import Figures as ChurnFigures
from streams.topics import CUSTOMERS_TABLE
from tests.integration.workers import WorkerEnv, WorkerProcess

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]
FIGURE_GAUGES = {
    f"churnwatch_period_{name.removesuffix('_cents')}" for name in ChurnFigures.__dataclass_fields__
}
FAST_FIGURES = {"CHURNWATCH_CHURN__FIGURES_INTERVAL_SECONDS": "0.5"}

Spawn = Callable[[WorkerEnv, Path, str], WorkerProcess]


def simulate(env: WorkerEnv, plan: simulation.Plan) -> int:
    """Produce the plan with `churnwatch simulate` (then its final heartbeats); return how many
    events it holds."""
    fractions = {
        name.removesuffix("_fraction").replace("_", "-"): getattr(plan, name)
        for name in plan.__dataclass_fields__
        if name.endswith("_fraction")
    }
    env.run_cli(
        "simulate", "--customers", str(plan.customers), "--days", str(plan.days),
        "--seed", str(plan.seed),
        *(arg for kind, share in fractions.items() for arg in (f"--{kind}-fraction", str(share))),
    )  # fmt: skip
    return produced_count(plan)


def produced_count(plan: simulation.Plan) -> int:
    customers = simulation.customers_for(plan)
    usage = sum(1 for _ in simulation.events(plan, customers))
    return usage + sum(1 for _ in simulation.billing_events(plan, customers))


def period_figures(workers: Iterable[WorkerProcess]) -> Figures:
    """Every churnwatch_period_* sample, summed over the workers."""
    total: Figures = {}
    for worker in workers:
        for (name, labels), value in worker.metrics().items():
            if name in FIGURE_GAUGES:
                total[(name, labels)] = total.get((name, labels), 0.0) + value
    return total


def read_to_the_end(workers: list[WorkerProcess], end: float, partitions: int) -> bool:
    """Every partition's watermark at the history's end (its final heartbeats read): the
    processed count alone also counts re-reads, so it can pass before a partition is done."""
    marks = [mark for worker in workers for mark in worker.watermarks().values()]
    return len(marks) == partitions and set(marks) == {end}


def settled_figures(
    workers: list[WorkerProcess], end: float, partitions: int = 4, timeout: float = 60
) -> Figures:
    """Figures once every worker is ready, all partitions are owned and read to `end` (the
    watermark of the final heartbeats), and two reads agree."""
    deadline = time.monotonic() + timeout
    previous: Figures = {}
    while time.monotonic() < deadline:
        owned = sum(len(w.health()["partitions"]) for w in workers)  # type: ignore[arg-type]
        if (
            owned != partitions
            or not all(w.ready() for w in workers)
            or not read_to_the_end(workers, end, partitions)
        ):
            previous = {}
            time.sleep(0.5)
            continue
        time.sleep(1.5)  # the figures timer (0.5 s) recounts after recovery
        current = period_figures(workers)
        if current and current == previous:
            return current
        previous = current
    raise AssertionError(f"figures did not settle: {previous}")


def processed(workers: Iterable[WorkerProcess]) -> float:
    return sum(w.total("churnwatch_events_processed_total") for w in workers)


def wait_processed(workers: list[WorkerProcess], count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while processed(workers) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"processed {processed(workers)} of {count}")
        for worker in workers:
            worker.assert_alive()
        time.sleep(0.5)


def read_topic(bootstrap: str, topic: str, timeout: float = 60) -> list[tuple[bytes, bytes]]:
    """Every (key, value) of a topic, from its start to the end offsets of the moment."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning(*partitions)
        ends = consumer.end_offsets(partitions)
        records: list[tuple[bytes, bytes]] = []
        deadline = time.monotonic() + timeout
        while any(consumer.position(tp) < end for tp, end in ends.items()):
            if time.monotonic() > deadline:
                raise AssertionError(f"could not read {topic} to its end in {timeout}s")
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend((record.key, record.value) for record in batch)
        return records
    finally:
        consumer.close()


@dataclass(frozen=True)
class Outcome:
    """What a run made: its churn figures, every customer record (as restored from the
    changelog: the latest per key), and the ids of the alerts it published."""

    figures: Figures
    customers: dict[str, dict[str, object]]
    alert_ids: frozenset[str]
    alert_messages: int  # including republished ones (at-least-once output)

    @property
    def usage_events(self) -> int:
        return sum(int(record["n"]) for record in self.customers.values())  # type: ignore[call-overload]


def outcome(env: WorkerEnv, workers: list[WorkerProcess], end: float) -> Outcome:
    """The run's outcome once its workers have read everything up to `end`."""
    figures = settled_figures(workers, end, env.partitions, timeout=180)
    changelog = f"{env.app_id}-{CUSTOMERS_TABLE}-changelog"
    customers: dict[str, dict[str, object]] = {}
    for key, value in read_topic(env.bootstrap, changelog):
        if key.startswith(b"\x00"):
            continue  # a partition clock (streams/state.py)
        if value is None:
            customers.pop(key.decode(), None)  # a tombstone: the customer was forgotten
        else:
            customers[key.decode()] = orjson.loads(value)
    alerts = [orjson.loads(value) for _, value in read_topic(env.bootstrap, env.alerts_topic)]
    return Outcome(
        figures=figures,
        customers=customers,
        alert_ids=frozenset(alert["alert_id"] for alert in alerts),
        alert_messages=len(alerts),
    )
