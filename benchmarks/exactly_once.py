"""`python -m benchmarks.exactly_once`: Faust's exactly_once against the applied-offset design.

One embedded broker, one pre-produced workload. For each processing guarantee (`at_least_once`,
churnwatch's default, and Faust's `exactly_once`, i.e. Kafka transactions):

- throughput: a fresh `churnwatch worker` from offset 0, measured as `python -m benchmarks`
  measures it (events/s in the window, worker and broker CPU s per million events); the modes
  alternate `--rounds` times so a neighbour's load hits both alike, and the median is kept;
- redelivery: a fresh worker is killed with SIGKILL once `--kill-at` of the events are
  processed, then started again on the same group and changelog; once the group has every
  input offset committed and is stopped, the customers changelog (read_committed, as
  table recovery reads it) is compared customer by customer with the input, and the alerts
  topic is checked for transitions emitted twice.

Writes `exactly-once-<stamp>.json` and `.md` to `--out` (default benchmarks/results).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import orjson
from kafka import KafkaConsumer, TopicPartition

from benchmarks import report
from benchmarks.churnwatch_run import REPO_ROOT, WorkerProcess
from benchmarks.handshake import ContenderError
from benchmarks.measure import BROKER, find_pid
from benchmarks.workload import Produced, Workload, create_topics, events, produce
from churnwatch.broker import KAFKA_VERSION, EmbeddedKafka, ensure_kafka, free_port
from churnwatch.domain.customer import CustomerState

RESULTS = REPO_ROOT / "benchmarks" / "results"
# The worker's entry point per guarantee: `churnwatch worker`, and the same with every faust.App
# made with processing_guarantee="exactly_once" (not a churnwatch setting: docs/exactness.md).
ENTRIES = {"at_least_once": "benchmarks.cw_entry", "exactly_once": "benchmarks.cw_entry_eos"}
MODES = tuple(ENTRIES)
SIZES = {"full": (10_000, 500_000), "quick": (500, 20_000)}


def say(text: str) -> None:
    print(f"exactly-once: {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.exactly_once",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="20,000 events, 500 customers (same code)")
    add("--customers", type=int, help="override the workload's customer count")
    add("--events", type=int, help="override the workload's event count")
    add("--rounds", type=int, default=2, help="throughput runs per mode, alternating (2)")
    add("--kill-at", type=float, default=0.5, help="share processed before SIGKILL (0.5)")
    add("--out", type=Path, default=RESULTS, help="result directory")
    add("--cache-dir", type=Path, default=Path.home() / ".cache" / "churnwatch")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    customers, count = SIZES["quick" if args.quick else "full"]
    workload = Workload(customers=args.customers or customers, events=args.events or count)
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(tempfile.mkdtemp(prefix=f"cweos-{run_id}-"))
    started = time.monotonic()
    result: dict[str, Any] = {
        "schema": "churnwatch-bench-exactly-once/1",
        "run_id": run_id,
        "started_at": report.now_iso(),
        "command": ["python", "-m", "benchmarks.exactly_once", *(argv or sys.argv[1:])],
    }
    with ExitStack() as stack:
        lib_dir = ensure_kafka(args.cache_dir, REPO_ROOT / "deploy" / "kafka" / "pom.xml")
        kafka = stack.enter_context(
            EmbeddedKafka(lib_dir, workdir / "kafka", port=free_port(), fresh=True, heap="1g")
        )
        pid = find_pid(str(kafka.data_dir / "server.properties"))
        if pid is not None:
            BROKER["pid"] = pid
        result["machine"] = report.machine_info(KAFKA_VERSION, "embedded")
        produced = produce(workload, kafka.bootstrap, f"eos-usage-{run_id}")
        say(f"produced {produced.messages:,} messages in {produced.seconds:.1f} s")
        result["workload"] = {**workload.describe(), **produced.describe()}
        expected = Counter(str(event["customer_id"]) for event in events(workload))
        timeout = 120 + workload.events / 500

        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for round_ in range(args.rounds):
            for mode in MODES:
                worker = _worker(kafka.bootstrap, produced, workdir, f"{run_id}t{round_}", mode)
                runs[mode].append(_throughput(worker, mode, workload.events, timeout))
                say(f"{mode} round {round_ + 1}: {_summary(runs[mode][-1])}")
        result["throughput"] = {mode: _median(runs[mode]) | {"runs": runs[mode]} for mode in MODES}
        result["ratios"] = _ratios(result["throughput"])
        redelivery = {}
        for mode in MODES:
            # INFO logs: the restarted worker says where it rewinds its inputs to (input_rewound)
            worker = _worker(
                kafka.bootstrap, produced, workdir, f"{run_id}k", mode, CHURNWATCH_LOG_LEVEL="INFO"
            )
            redelivery[mode] = _redelivery(worker, mode, produced, expected, args.kill_at, timeout)
            say(f"{mode} after SIGKILL and restart: {redelivery[mode]['verdict']}")
        result["redelivery"] = redelivery
    result["finished_at"] = report.now_iso()
    result["elapsed_seconds"] = round(time.monotonic() - started, 1)
    stamp = result["finished_at"].replace(":", "").replace("-", "")
    args.out.mkdir(parents=True, exist_ok=True)
    json_path = args.out / f"exactly-once-{stamp}.json"
    json_path.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    json_path.with_suffix(".md").write_text(to_markdown(result), encoding="utf-8")
    say(f"done in {result['elapsed_seconds']:.0f} s: {json_path}")
    print(to_markdown(result))
    return 0


def _worker(
    bootstrap: str, produced: Produced, workdir: Path, tag: str, mode: str, **env: str
) -> WorkerProcess:
    run_id = f"{tag}-{mode.split('_')[0]}"
    return WorkerProcess(
        bootstrap=bootstrap,
        usage_topic=produced.topic,
        partitions=4,
        run_id=run_id,
        workdir=workdir / run_id,
        extra_env=env,
    )


def _start(worker: WorkerProcess, mode: str) -> None:
    """Create the worker's own topics and launch it (as WorkerProcess.start, entry by mode)."""
    worker.workdir.mkdir(parents=True, exist_ok=True)
    create_topics(
        worker.bootstrap,
        [worker.billing_topic, worker.alerts_topic, worker.dead_letters_topic],
        worker.partitions,
    )
    _launch(worker, mode)


def _throughput(worker: WorkerProcess, mode: str, events: int, timeout: float) -> dict[str, Any]:
    _start(worker, mode)
    try:
        window = worker.measure_throughput(events, timeout)
        result = window.result(events)
        result["broker_cpu_seconds_per_million"] = round(
            result["broker_cpu_seconds"] / max(result["events_in_window"], 1) * 1e6, 2
        )
        return result
    finally:
        worker.stop()


def _launch(worker: WorkerProcess, mode: str) -> None:
    """Start the worker's process (again: same app id, group, changelog, data directory)."""
    with worker.log_path.open("ab") as log:
        worker.process = subprocess.Popen(
            [sys.executable, "-m", ENTRIES[mode]],
            cwd=REPO_ROOT,
            env=worker.environment(),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
    worker.launched = time.time()


def _redelivery(
    worker: WorkerProcess,
    mode: str,
    produced: Produced,
    expected: Counter[str],
    kill_at: float,
    timeout: float,
) -> dict[str, Any]:
    _start(worker, mode)
    deadline = time.monotonic() + timeout
    target = int(produced.events * kill_at)
    killed_at = 0
    try:
        while killed_at < target:
            if time.monotonic() > deadline:
                raise ContenderError(f"processed {killed_at} of {target} before the kill")
            worker.assert_alive()
            killed_at = worker.processed() or 0
            time.sleep(0.05)
        os.kill(worker.pid, signal.SIGKILL)
        assert worker.process is not None
        worker.process.wait()
        resumes_from = sum(_committed(worker).values())
        _launch(worker, mode)
        totals = _wait_committed(worker, deadline)
    finally:
        worker.stop()
    got, markers = _changelog_counts(worker)
    rewinds = [
        line
        for line in worker.log_path.read_text(errors="replace").splitlines()
        if '"input_rewound"' in line
    ]
    over = sum(1 for c, n in got.items() if n > expected.get(c, 0))
    under = sum(1 for c, n in expected.items() if got.get(c, 0) < n)
    alerts = _alert_transitions(worker)
    verdict = "exact" if over == under == 0 else f"{over} customers over, {under} under"
    return {
        "killed_after_processed": killed_at,
        "committed_input_offsets_at_kill": resumes_from,
        "after_restart": {
            name.removeprefix("churnwatch_").removesuffix("_total"): int(totals.get(name, 0))
            for name in (
                "churnwatch_events_processed_total",
                "churnwatch_events_redelivered_total",
                "churnwatch_events_duplicate_total",
                "churnwatch_events_rewound_total",
                "churnwatch_events_deferred_total",
                "churnwatch_heartbeats_total",
            )
        },
        "customers_expected": len(expected),
        "customers_in_changelog": len(got),
        "events_expected": expected.total(),
        "events_in_changelog": sum(got.values()),
        "customers_over": over,
        "customers_under": under,
        "changelog_offsets_not_records": markers,
        "input_rewound_log_lines": rewinds[:20],
        "alert_records": alerts["records"],
        "alert_transitions": alerts["unique"],
        "alert_transitions_repeated": alerts["records"] - alerts["unique"],
        "verdict": verdict,
    }


def _committed(worker: WorkerProcess) -> dict[int, int]:
    """The group's committed offset of each input partition (0: none yet)."""
    # A consumer in the worker's group that never subscribes: it only reads committed offsets.
    consumer = KafkaConsumer(
        bootstrap_servers=worker.bootstrap, group_id=worker.app_id, enable_auto_commit=False
    )
    try:
        return {
            p: consumer.committed(TopicPartition(worker.usage_topic, p)) or 0
            for p in range(worker.partitions)
        }
    finally:
        consumer.close()


def _wait_committed(worker: WorkerProcess, deadline: float) -> dict[str, float]:
    """Poll until the group's committed offsets reach the end of every input partition.

    (A partition finished before the kill has nothing left to redeliver, so the restarted
    worker's own counters cannot say when it is done; the committed offsets can. Faust commits
    an offset only after the changelog records of the events before it, in both modes.)
    """
    consumer = KafkaConsumer(bootstrap_servers=worker.bootstrap)
    try:
        ends = consumer.end_offsets(
            [TopicPartition(worker.usage_topic, p) for p in range(worker.partitions)]
        )
    finally:
        consumer.close()
    while time.monotonic() < deadline:
        worker.assert_alive()
        committed = _committed(worker)
        if all(committed[tp.partition] >= end for tp, end in ends.items()):
            return worker.totals()
        time.sleep(1.0)
    raise ContenderError("the restarted worker did not commit every input offset in time")


def _read_all(bootstrap: str, topic: str) -> list[Any]:
    """Every committed record of a topic (read_committed: what table recovery reads)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        isolation_level="read_committed",
        enable_auto_commit=False,
        consumer_timeout_ms=5000,
        max_partition_fetch_bytes=8 << 20,
    )
    try:
        partitions = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        consumer.assign(partitions)
        consumer.seek_to_beginning()
        return list(consumer)
    finally:
        consumer.close()


def _changelog_counts(worker: WorkerProcess) -> tuple[dict[str, int], int]:
    """Each customer's event count in its latest changelog record; and the offsets of the
    changelog that hold no record: transaction markers (and aborted records), 0 without."""
    records = _read_all(worker.bootstrap, worker.changelog_topic)
    latest: dict[str, bytes] = {}
    for record in records:
        if record.value is not None:
            latest[record.key.decode()] = record.value
    consumer = KafkaConsumer(bootstrap_servers=worker.bootstrap)
    try:
        topic = worker.changelog_topic
        ends = consumer.end_offsets(
            [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or ()]
        )
    finally:
        consumer.close()
    counts = {key: CustomerState.from_plain(orjson.loads(v)).events for key, v in latest.items()}
    return counts, sum(ends.values()) - len(records)


def _alert_transitions(worker: WorkerProcess) -> dict[str, int]:
    records = _read_all(worker.bootstrap, worker.alerts_topic)
    unique = set()
    for record in records:
        alert = orjson.loads(record.value)
        unique.add((alert["alert_id"], alert["status"], alert["event_time"]))
    return {"records": len(records), "unique": len(unique)}


KEYS = ("events_per_second", "cpu_seconds_per_million", "broker_cpu_seconds_per_million")


def _median(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {key: round(statistics.median(r[key] for r in runs), 2) for key in KEYS}


def _ratios(throughput: dict[str, dict[str, Any]]) -> dict[str, float]:
    """exactly_once over at_least_once, per figure (events/s < 1: slower; CPU > 1: costlier)."""
    eos, alo = throughput["exactly_once"], throughput["at_least_once"]
    return {key: round(eos[key] / alo[key], 3) for key in KEYS if alo[key]}


def _summary(entry: dict[str, Any]) -> str:
    return (
        f"{entry['events_per_second']:,.0f} events/s, {entry['cpu_seconds_per_million']:.1f} "
        f"worker + {entry['broker_cpu_seconds_per_million']:.1f} broker CPU s per million"
    )


def to_markdown(result: dict[str, Any]) -> str:
    work = result["workload"]
    lines = [
        f"# exactly_once vs at_least_once ({result['finished_at']})",
        "",
        f"{work['events']:,} events, {work['customers']:,} customers, 4 partitions; "
        f"embedded Kafka {result['machine'].get('kafka_version', '?')}; "
        f"load average at start {result['machine'].get('loadavg_start')}.",
        "",
        "| guarantee | events/s | worker CPU s / M | broker CPU s / M | after SIGKILL + restart "
        "| alert transitions repeated |",
        "| --- | ---: | ---: | ---: | --- | ---: |",
    ]
    for mode in MODES:
        t, r = result["throughput"][mode], result["redelivery"][mode]
        lines.append(
            f"| {mode} | {t['events_per_second']:,.0f} | {t['cpu_seconds_per_million']:.1f} "
            f"| {t['broker_cpu_seconds_per_million']:.1f} | {r['verdict']}: killed at "
            f"{r['killed_after_processed']:,} processed, {r['committed_input_offsets_at_kill']:,}"
            f" committed; {r['after_restart']['events_redelivered']:,} redelivered skipped "
            f"| {r['alert_transitions_repeated']} of {r['alert_records']} |"
        )
    ratios = result["ratios"]
    lines += [
        "",
        "exactly_once / at_least_once: "
        + ", ".join(f"{key} x{value}" for key, value in ratios.items()),
        "",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
