"""Churn figures across workers: two workers add up to one, and a rebalance loses nothing."""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from churnwatch import simulation
from tests.integration.runs import FAST_FIGURES, Figures, Spawn, simulate, wait_processed
from tests.integration.runs import settled_figures as settled_at
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

PLAN = simulation.Plan(
    customers=600, days=60, seed=11, decay_fraction=0.02, stop_fraction=0.02,
    churn_fraction=0.06, new_fraction=0.08,
)  # fmt: skip


def settled_figures(workers: list[WorkerProcess], timeout: float = 60) -> Figures:
    return settled_at(workers, PLAN.end + 1, timeout=timeout)


def test_two_workers_add_up_to_one_and_a_rebalance_loses_nothing(
    kafka_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path, spawn: Spawn
) -> None:
    single_env = WorkerEnv.unique(kafka_bootstrap, unique_name, **FAST_FIGURES)
    count = simulate(single_env, PLAN)

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
