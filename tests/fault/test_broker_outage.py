"""The broker stops for 30 s mid-stream and comes back on its storage: the worker recovers by
itself, says it is not ready meanwhile, and loses nothing."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from churnwatch.broker import EmbeddedKafka, free_port
from tests.fault.scenario import (
    END,
    PLAN,
    SETTINGS,
    FaultLog,
    Reference,
    assert_same,
    seeded,
    wait_ready,
)
from tests.integration.runs import outcome, read_to_the_end, simulate
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

OUTAGE_SECONDS = 30.0


def test_worker_rides_out_a_30_s_broker_outage(
    reference: Reference, kafka_lib_dir: Path, tmp_path: Path
) -> None:
    seed, rng = seeded("broker_outage")
    data_dir, port = tmp_path / "broker", free_port()
    broker = EmbeddedKafka(kafka_lib_dir, data_dir, port=port, fresh=True)
    broker.start()
    worker: WorkerProcess | None = None
    try:
        env = WorkerEnv.unique(
            broker.bootstrap, lambda kind: f"fault-{kind}-{uuid.uuid4().hex[:8]}", **SETTINGS
        )
        produced = simulate(env, PLAN)
        log = FaultLog("broker_outage", seed, produced)
        worker = WorkerProcess(env, tmp_path, "worker").start()
        strike_at = rng.randint(2_000, produced // 2)
        while worker.total("churnwatch_events_processed_total") < strike_at:
            worker.assert_alive()
            assert not read_to_the_end([worker], END, env.partitions), "stream done too soon"
            time.sleep(0.05)
        log.tally(worker)
        broker.stop()
        stopped = time.monotonic()
        not_ready_after = None
        while time.monotonic() - stopped < OUTAGE_SECONDS:
            worker.assert_alive()
            if not_ready_after is None and not worker.ready():
                not_ready_after = time.monotonic() - stopped
            time.sleep(0.5)
        still_not_ready = not worker.ready()
        broker = EmbeddedKafka(kafka_lib_dir, data_dir, port=port, fresh=False)
        broker.start()
        restarted = time.monotonic()
        wait_ready([worker], env.partitions, timeout=180)
        log.fault(
            "broker stopped",
            time.monotonic() - restarted,
            outage_seconds=OUTAGE_SECONDS,
            after_processed=strike_at,
            not_ready_after_seconds=None if not_ready_after is None else round(not_ready_after, 1),
        )
        assert not_ready_after is not None, (
            f"/readyz stayed ready during the outage {log.context()}"
        )
        assert still_not_ready, f"/readyz became ready with the broker down {log.context()}"
        result = outcome(env, [worker], END)
        # Counters of the one worker life: the scrape before the outage is part of it.
        log.counts = dict.fromkeys(log.counts, 0.0)
        log.tally(worker)
        print(log.write(result, reference))
        assert_same(result, reference.outcome, log, ignore=set())
    finally:
        if worker is not None:
            worker.stop()
        broker.stop()
