"""Churn figures across workers: two workers add up to one, and a rebalance loses nothing."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest

from churnwatch import simulation
from churnwatch.domain.churn import Figures as ChurnFigures
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = simulation.Plan(
    customers=600, days=60, seed=11, decay_fraction=0.02, stop_fraction=0.02,
    churn_fraction=0.06, new_fraction=0.08,
)  # fmt: skip
FAST_FIGURES = {"CHURNWATCH_CHURN__FIGURES_INTERVAL_SECONDS": "0.5"}

Figures = dict[tuple[str, tuple[tuple[str, str], ...]], float]
FIGURE_GAUGES = {
    f"churnwatch_period_{name.removesuffix('_cents')}" for name in ChurnFigures.__dataclass_fields__
}


def period_figures(workers: list[WorkerProcess]) -> Figures:
    """Every churnwatch_period_* sample, summed over the workers."""
    total: Figures = {}
    for worker in workers:
        for (name, labels), value in worker.metrics().items():
            if name in FIGURE_GAUGES:
                total[(name, labels)] = total.get((name, labels), 0.0) + value
    return total


def settled_figures(workers: list[WorkerProcess], timeout: float = 60) -> Figures:
    """Figures once every worker is ready, all partitions are owned, and reads agree."""
    deadline = time.monotonic() + timeout
    previous: Figures = {}
    while time.monotonic() < deadline:
        owned = sum(len(w.health()["partitions"]) for w in workers)  # type: ignore[arg-type]
        if owned != 4 or not all(w.ready() for w in workers) or not read_to_the_end(workers):
            previous = {}
            time.sleep(0.5)
            continue
        time.sleep(1.5)  # the figures timer (0.5 s) recounts after recovery
        current = period_figures(workers)
        if current and current == previous:
            return current
        previous = current
    raise AssertionError(f"figures did not settle: {previous}")


def read_to_the_end(workers: list[WorkerProcess]) -> bool:
    """Every partition's watermark at the history's end (its final heartbeats read): the
    processed count alone also counts re-reads, so it can pass before a partition is done."""
    marks = [mark for worker in workers for mark in worker.watermarks().values()]
    return len(marks) == 4 and set(marks) == {PLAN.end + 1}


def produced_count() -> int:
    customers = simulation.customers_for(PLAN)
    usage = sum(1 for _ in simulation.events(PLAN, customers))
    return usage + sum(1 for _ in simulation.billing_events(PLAN, customers))


Spawn = Callable[[WorkerEnv, Path, str], WorkerProcess]


@pytest.fixture
def spawn() -> Iterator[Spawn]:
    """Start worker processes; every one is stopped at the end, whatever happened."""
    started: list[WorkerProcess] = []

    def start(env: WorkerEnv, workdir: Path, name: str) -> WorkerProcess:
        worker = WorkerProcess(env, workdir, name)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()


def processed(workers: list[WorkerProcess]) -> float:
    return sum(w.total("churnwatch_events_processed_total") for w in workers)


def wait_processed(workers: list[WorkerProcess], count: int, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while processed(workers) < count:
        if time.monotonic() > deadline:
            raise AssertionError(f"processed {processed(workers)} of {count}")
        time.sleep(0.5)


def test_two_workers_add_up_to_one_and_a_rebalance_loses_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, spawn: Spawn
) -> None:
    single_env = WorkerEnv.unique(kafka_bootstrap, unique_name, **FAST_FIGURES)
    single_env.run_cli(
        "simulate", "--customers", str(PLAN.customers), "--days", str(PLAN.days),
        "--seed", str(PLAN.seed), "--decay-fraction", "0.02", "--stop-fraction", "0.02",
        "--churn-fraction", "0.06", "--new-fraction", "0.08",
    )  # fmt: skip
    count = produced_count()

    single = [spawn(single_env, tmp_path / "single", "solo")]
    wait_processed(single, count)
    expected = settled_figures(single)
    previous = {k: v for k, v in expected.items() if ("period", "previous") in k[1]}
    started = sum(v for (n, _), v in previous.items() if n == "churnwatch_period_start_customers")
    churned = sum(v for (n, _), v in previous.items() if n == "churnwatch_period_churned_customers")
    assert started > 500, "February starts with most of the simulated customers"
    assert churned > 0
    solo_report = single_env.run_cli(
        "report", "--period", "2020-02", "--json",
        "--database-url", f"sqlite:///{single[0].data_dir}.sqlite3",
    )  # fmt: skip
    for worker in single:
        worker.stop()

    # The same topics read by a second app (its own group and changelogs), two workers.
    shared_db = f"sqlite:///{tmp_path / 'pair.sqlite3'}"
    pair_env = replace(
        single_env,
        app_id=unique_name("app"),
        extra={**FAST_FIGURES, "CHURNWATCH_DATABASE_URL": shared_db},
    )
    first = spawn(pair_env, tmp_path / "pair", "first")
    second = spawn(pair_env, tmp_path / "pair", "second")
    wait_processed([first, second], count)
    assert settled_figures([first, second]) == expected
    pair_report = pair_env.run_cli("report", "--period", "2020-02", "--json")
    assert json.loads(pair_report.stdout) == json.loads(solo_report.stdout)

    # One worker leaves: the other takes its partitions, restored from the changelog.
    second.stop()
    assert settled_figures([first], timeout=120) == expected
    # A third joins: partitions move again; still every customer counted exactly once.
    third = spawn(pair_env, tmp_path / "pair", "third")
    assert settled_figures([first, third], timeout=120) == expected
