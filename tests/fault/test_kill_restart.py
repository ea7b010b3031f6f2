"""`kill -9` one worker at random points mid-stream, restart it: nothing lost, nothing doubled."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fault.scenario import END, FaultLog, Reference, assert_same, seeded, wait_ready
from tests.integration.runs import Spawn, outcome, read_to_the_end

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

KILLS = 4


def test_kill_9_mid_stream_and_restart_equals_the_clean_run(
    reference: Reference, spawn: Spawn, tmp_path: Path
) -> None:
    seed, rng = seeded("kill_restart")
    env = reference.rerun(f"fault-kill-{uuid.uuid4().hex[:8]}", "kill")
    log = FaultLog("kill_restart", seed, reference.produced)
    worker = spawn(env, tmp_path, "life0")
    for life in range(1, KILLS + 1):
        # Strike after a random share of a clean pass's events: within the stream's first
        # pass, since each life starts over from the last committed offsets.
        strike_at = rng.randint(500, reference.produced // 3)
        while worker.total("churnwatch_events_processed_total") < strike_at:
            worker.assert_alive()
            if read_to_the_end([worker], END, env.partitions):
                break
            time.sleep(0.05)
        done = read_to_the_end([worker], END, env.partitions)
        log.tally(worker)
        worker.kill()
        killed = time.monotonic()
        worker = spawn(env, tmp_path, f"life{life}")
        wait_ready([worker], env.partitions)
        recovery = time.monotonic() - killed
        log.fault("kill -9", recovery, life=life, after_processed=strike_at, stream_done=done)
    result = outcome(env, [worker], END)
    log.tally(worker)
    print(log.write(result, reference))
    assert_same(result, reference.outcome, log, ignore=set())
    assert not all(f["stream_done"] for f in log.faults), "some kills land mid-stream"
