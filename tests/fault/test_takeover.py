"""Two workers, one killed for good: the survivor takes its partitions over; then a third joins."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest

from tests.fault.scenario import END, FaultLog, Reference, assert_same, seeded, wait_ready
from tests.integration.runs import Spawn, outcome, processed, read_to_the_end

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]


def test_survivor_takes_over_a_killed_worker_then_a_third_joins(
    reference: Reference, spawn: Spawn, tmp_path: Path
) -> None:
    seed, rng = seeded("takeover")
    env = reference.rerun(f"fault-takeover-{uuid.uuid4().hex[:8]}", "takeover")
    log = FaultLog("takeover", seed, reference.produced)
    pair = [spawn(env, tmp_path, "first"), spawn(env, tmp_path, "second")]
    wait_ready(pair, env.partitions)
    strike_at = rng.randint(2_000, reference.produced // 2)
    while processed(pair) < strike_at and not read_to_the_end(pair, END, env.partitions):
        time.sleep(0.05)
    victim = pair.pop(rng.randrange(2))
    survivor = pair[0]
    log.tally(victim)
    victim.kill()
    killed = time.monotonic()
    wait_ready([survivor], env.partitions)  # owns all four partitions, state restored
    log.fault("kill -9, not restarted", time.monotonic() - killed, after_processed=strike_at)
    assert_same(outcome(env, [survivor], END), reference.outcome, log, ignore=set())

    joined = time.monotonic()
    third = spawn(env, tmp_path, "third")
    wait_ready([survivor, third], env.partitions)
    log.fault("worker joins", time.monotonic() - joined)
    result = outcome(env, [survivor, third], END)
    log.tally(survivor)
    log.tally(third)
    print(log.write(result, reference))
    assert_same(result, reference.outcome, log, ignore=set())
