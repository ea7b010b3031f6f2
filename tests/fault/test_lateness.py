"""Out of order within the allowed lateness changes nothing; later than that is dead-lettered
as `late` and counted, never mixed in."""

from __future__ import annotations

import io
import random
import uuid
from pathlib import Path

import orjson
import pytest

from churnwatch import simulation
from churnwatch.domain.engagement import SECONDS_PER_DAY
from churnwatch.produce import Record, encode, make_producer, produce, send_heartbeats
from churnwatch.progress import Progress
from tests.fault.scenario import END, PLAN, FaultLog, Reference, assert_same, seeded
from tests.integration.conftest import CreateTopics
from tests.integration.runs import Spawn, outcome, read_topic

pytestmark = [pytest.mark.integration, pytest.mark.fault, pytest.mark.slow]

LATENESS = 3600.0  # the default allowed lateness
TOO_LATE = 60  # usage events sent again (new ids, same times) once the history is read


def disordered(rng: random.Random) -> tuple[list[Record], list[Record]]:
    """The plan's events, each sent up to half the allowed lateness after its time (so out of
    order); and copies of 60 usage events of days 20 to 57 with new ids, to send once the
    worker's watermark has passed them (too late)."""
    customers = simulation.customers_for(PLAN)
    merged = simulation.merged(
        simulation.events(PLAN, customers), simulation.billing_events(PLAN, customers)
    )
    sent = sorted(
        (
            (event["occurred_at"] + rng.uniform(0, LATENESS / 2), kind, event)
            for kind, event in merged
        ),
        key=lambda entry: entry[0],
    )
    history = [(*encode(kind, event)[:3], at) for at, kind, event in sent]
    earlier = [
        event
        for _, kind, event in sent
        if kind == "usage"
        and PLAN.start + 20 * SECONDS_PER_DAY <= event["occurred_at"] < END - 3 * SECONDS_PER_DAY
    ]
    late = [
        encode("usage", dict(event, event_id=f"{event['event_id']}-late"))
        for event in sorted(rng.sample(earlier, TOO_LATE), key=lambda e: e["occurred_at"])
    ]
    return history, late


def test_disorder_within_lateness_changes_nothing_and_later_is_dead_lettered(
    reference: Reference, spawn: Spawn, create_topics: CreateTopics, tmp_path: Path
) -> None:
    """The whole history is sent before the worker starts, as docs/replay.md asks: sent while
    it is read, one input can run ahead of the other by more than the allowed lateness."""
    seed, rng = seeded("lateness")
    log = FaultLog("lateness", seed, produced=0)
    app_id = f"fault-late-{uuid.uuid4().hex[:8]}"
    env = reference.rerun(app_id, "late")
    env.usage_topic, env.billing_topic = f"{app_id}-usage", f"{app_id}-billing"
    create_topics([env.usage_topic, env.billing_topic], partitions=env.partitions)
    history, late = disordered(rng)
    topics = {"usage": env.usage_topic, "billing": env.billing_topic}
    quiet = Progress("", None, io.StringIO())
    producer = make_producer([env.bootstrap])
    try:
        sent = produce(producer, topics, history, quiet, LATENESS / 2)
        send_heartbeats(producer, topics.values(), PLAN.end + LATENESS + 1)
        worker = spawn(env, tmp_path, "worker")
        in_order = outcome(env, [worker], END)
        sent += produce(producer, topics, late, quiet, LATENESS / 2)
    finally:
        producer.close()
    log.produced = sent.total()
    log.fault("out of order within the lateness", None, events=reference.produced)
    log.fault("later than the lateness", None, events=len(late))
    # Offsets differ from the clean run's (another order): every other field must not.
    assert_same(in_order, reference.outcome, log, ignore={"off", "boff"})
    worker.wait_for("churnwatch_events_late_total", len(late), timeout=60)
    result = outcome(env, [worker], END)
    log.tally(worker)
    print(log.write(result, reference))
    assert_same(result, reference.outcome, log, ignore={"off", "boff"})
    dead = {
        orjson.loads(value)["event_id"]
        for _, value in read_topic(env.bootstrap, env.dead_letters_topic)
    }
    assert dead == {orjson.loads(value)["event_id"] for _, _, value, _ in late}, log.context()
    assert worker.total("churnwatch_events_late_total") == len(late), log.context()
    assert worker.total("churnwatch_events_dead_lettered_total", reason="late") == len(late)
    assert worker.total("churnwatch_events_processed_total") == reference.produced
