"""Fault-test fixtures: the integration tests' broker and workers, and the clean reference run.

The reference run is made once per session (every fault test reads the same input) and every
fault test compares its own run with it.
"""

from __future__ import annotations

import time
import uuid

import pytest

from tests.fault.scenario import END, PLAN, SETTINGS, Reference
from tests.integration.conftest import (
    create_topics,
    kafka_bootstrap,
    kafka_lib_dir,
    spawn,
    unique_name,
)
from tests.integration.runs import outcome, simulate
from tests.integration.workers import WorkerEnv, WorkerProcess

__all__ = [
    "create_topics",
    "kafka_bootstrap",
    "kafka_lib_dir",
    "spawn",
    "unique_name",
]  # shared fixtures


@pytest.fixture(scope="session")
def reference(kafka_bootstrap: str, tmp_path_factory: pytest.TempPathFactory) -> Reference:
    """The plan produced once, and one clean worker's run over it."""
    env = WorkerEnv.unique(
        kafka_bootstrap, lambda kind: f"fault-{kind}-{uuid.uuid4().hex[:12]}", **SETTINGS
    )
    produced = simulate(env, PLAN)
    started = time.monotonic()
    worker = WorkerProcess(env, tmp_path_factory.mktemp("reference"), "clean").start()
    try:
        result = outcome(env, [worker], END)
    finally:
        worker.stop()
    assert len(result.customers) == PLAN.customers
    assert result.alert_ids, "the plan raises alerts"
    return Reference(env, produced, result, time.monotonic() - started)
