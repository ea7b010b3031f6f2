"""`python -m benchmarks`: churnwatch against the limit and its peer, on one embedded broker.

Pre-produces a fixed workload, then runs each contender alone from offset 0 with a fresh group:
the raw aiokafka limit (fetch only; fetch + decode + dict update), Quix Streams, Faust's floor
(the worker's Faust setup doing only the dict update), and a real churnwatch worker; then
measures latency on the caught-up worker under a steady live rate. Writes `<stamp>.json` and
`<stamp>.md` (and `latest.*`) to the output directory.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from kafka.errors import KafkaError

from benchmarks import latency, profile, quix, report
from benchmarks.churnwatch_run import WorkerProcess, add_worker_env_option, worker_env
from benchmarks.handshake import ContenderError, run_contender
from benchmarks.measure import BROKER, find_pid, not_measured, unavailable
from benchmarks.workload import Produced, Workload, produce
from churnwatch.broker import KAFKA_VERSION, EmbeddedKafka, ensure_kafka, free_port
from churnwatch.exceptions import ChurnwatchError

REPO_ROOT = Path(__file__).resolve().parents[1]
RESULTS = REPO_ROOT / "benchmarks" / "results"
CACHE_DIR = Path.home() / ".cache" / "churnwatch"
PHASES = (*report.CONTENDERS, "latency")
SIZES = {
    "full": {"customers": 10_000, "events": 500_000, "rate": 2000, "seconds": 60, "planted": 200},
    "quick": {"customers": 500, "events": 20_000, "rate": 1000, "seconds": 12, "planted": 20},
}
# The live-shaped workload: the same customers and event count, ~50 events per customer per
# half hour (so it spans about half an hour of event time), as single events and in envelopes.
LIVE_SHAPED_PER_DAY = 2400
SHAPES = {"churnwatch_live_shaped": 1, "churnwatch_envelopes": 50}
QUICK_ENVELOPE_EVENTS = 4
LIVE_EVENT_DAYS = 13.0  # silences start on live days 1.5-3.5; inactive (7 d) fires by day 11.5


def say(text: str) -> None:
    print(f"bench: {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help="small workload, same code: done in about a minute")
    add("--out", type=Path, default=RESULTS, help="result directory (default benchmarks/results)")
    add("--only", nargs="+", choices=PHASES, metavar="NAME", help=f"run only: {', '.join(PHASES)}")
    add("--bootstrap", metavar="HOST:PORT", help="use this broker, not a new embedded one")
    add("--customers", type=int, help="override the workload's customer count")
    add("--events", type=int, help="override the workload's event count")
    add("--seed", type=int, default=42, help="workload seed (default 42)")
    add("--live-rate", type=float, help="events/s in the latency phase (2,000; quick 1,000)")
    add("--live-seconds", type=float, help="length of the latency phase (60 s; quick 12 s)")
    add("--quix-python", type=Path, help="a Python with quixstreams (default: own venv)")
    add("--no-install", action="store_true", help="never create the Quix venv")
    add("--profile", action="store_true", help="py-spy the worker's throughput window (slower)")
    add("--probe", action="store_true",
        help="run the worker under benchmarks.latency_probe (to $CWPROBE_OUT)")  # fmt: skip
    add("--cache-dir", type=Path, default=CACHE_DIR, help="Kafka jars, Quix venv (~/.cache/...)")
    add("--keep", action="store_true", help="keep the work directory and its logs")
    add_worker_env_option(parser)
    args = parser.parse_args(argv)
    args.worker_env = worker_env(parser, args.worker_env)
    return args


@dataclass
class Run:
    """What every phase of one benchmark run shares."""

    args: argparse.Namespace
    size: dict[str, int]
    workload: Workload
    run_id: str
    workdir: Path
    bootstrap: str = ""
    broker_running: Callable[[], bool] = lambda: True
    produced: Produced | None = None
    failed: bool = False

    @property
    def timeout(self) -> float:
        """Seconds any one phase may take: generous, so only a stall trips it."""
        return 120 + self.workload.events / 1000

    def messages(self) -> Produced:
        assert self.produced is not None
        return self.produced


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    size = dict(SIZES["quick" if args.quick else "full"])
    workload = Workload(
        customers=args.customers or size["customers"],
        events=args.events or size["events"],
        seed=args.seed,
    )
    run_id = uuid.uuid4().hex[:8]
    run = Run(args, size, workload, run_id, Path(tempfile.mkdtemp(prefix=f"cwbench-{run_id}-")))
    say(f"run {run_id}: {workload.events:,} events, {workload.customers:,} customers, "
        f"{workload.partitions} partitions; work directory {run.workdir}")  # fmt: skip
    started = time.monotonic()
    result: dict[str, Any] = {
        "schema": report.SCHEMA,
        "run_id": run_id,
        "started_at": report.now_iso(),
        "quick": args.quick,
        "command": ["python", "-m", "benchmarks", *(argv if argv is not None else sys.argv[1:])],
    }
    try:
        with ExitStack() as stack:
            broker = "external"
            if args.bootstrap is None:
                kafka = start_broker(args.cache_dir, run.workdir, stack)
                run.bootstrap, run.broker_running, broker = (
                    kafka.bootstrap,
                    _alive(kafka),
                    "embedded",
                )
            else:
                run.bootstrap = args.bootstrap
            result["machine"] = report.machine_info(KAFKA_VERSION, broker)
            topic = f"bench-usage-{run_id}"
            run.produced = produced = produce(workload, run.bootstrap, topic)
            say(f"produced {produced.messages:,} messages to {topic} in {produced.seconds:.1f} s "
                f"({produced.value_bytes / produced.events:.0f} B mean)")  # fmt: skip
            result["workload"] = {**workload.describe(), **produced.describe()}
            contenders, live = run_phases(run, set(args.only or PHASES))
            report.add_ratios(contenders)
            result["contenders"] = contenders
            result["latency"] = live
    except (ChurnwatchError, KafkaError, OSError) as exc:
        say(f"FAILED: {exc}")
        say(f"logs kept in {run.workdir}")
        return 1
    result["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["finished_at"] = report.now_iso()
    result["elapsed_seconds"] = round(time.monotonic() - started, 1)
    json_path, md_path = report.write(result, args.out)
    say(f"done in {result['elapsed_seconds']:.0f} s: {json_path} and {md_path}")
    print(report.to_markdown(result))
    if run.failed or args.keep:
        say(f"logs kept in {run.workdir}")
    else:
        shutil.rmtree(run.workdir, ignore_errors=True)
    return 1 if run.failed else 0


def start_broker(cache_dir: Path, workdir: Path, stack: ExitStack) -> EmbeddedKafka:
    lib_dir = ensure_kafka(cache_dir, REPO_ROOT / "deploy" / "kafka" / "pom.xml")
    began = time.monotonic()
    kafka = stack.enter_context(
        EmbeddedKafka(lib_dir, workdir / "kafka", port=free_port(), fresh=True, heap="1g")
    )
    pid = find_pid(str(kafka.data_dir / "server.properties"))
    if pid is not None:
        BROKER["pid"] = pid
    say(f"Kafka {KAFKA_VERSION} up at {kafka.bootstrap} in {time.monotonic() - began:.1f} s")
    return kafka


def _alive(kafka: EmbeddedKafka) -> Callable[[], bool]:
    return lambda: kafka.running


def run_phases(run: Run, selected: set[str]) -> tuple[dict[str, dict[str, Any]], dict[str, Any]]:
    """Run the selected contenders one at a time, then the latency phase."""
    contenders: dict[str, dict[str, Any]] = {}

    def attempt(name: str, measure: Callable[[], dict[str, Any]]) -> None:
        if name not in selected:
            contenders[name] = not_measured("skipped")
            return
        say(f"{name}: running")
        try:
            contenders[name] = measure()
        except quix.QuixUnavailableError as exc:
            contenders[name] = unavailable(str(exc))
        except (ContenderError, OSError, RuntimeError) as exc:
            run.failed = True
            contenders[name] = not_measured(f"failed: {exc}"[:2000])
        say(f"{name}: {_summary(contenders[name])}")

    attempt("fetch", lambda: run_consumer(run, "fetch"))
    attempt("decode_update", lambda: run_consumer(run, "decode_update"))
    attempt("quix", lambda: run_quix(run))
    attempt("faust_take", lambda: run_faust_floor(run, "take"))
    attempt("faust_changelog", lambda: run_faust_floor(run, "changelog"))
    live: dict[str, Any] = {"status": "skipped"}
    if selected & {"churnwatch", "latency"}:
        live = run_main_worker(run, selected, contenders, attempt)
    else:
        contenders["churnwatch"] = not_measured("skipped")
    for name, envelope_size in SHAPES.items():
        if run.args.quick:
            # 20k events in ~40-event envelopes are one batch: no window to measure. Smaller
            # envelopes keep the same code path measurable.
            envelope_size = min(envelope_size, QUICK_ENVELOPE_EVENTS)
        if name in selected:
            attempt(name, partial(run_shape, run, name, envelope_size))
        else:
            contenders[name] = not_measured("skipped")
    return contenders, live


def run_main_worker(
    run: Run,
    selected: set[str],
    contenders: dict[str, dict[str, Any]],
    attempt: Callable[[str, Callable[[], dict[str, Any]]], None],
) -> dict[str, Any]:
    """The fixed workload's worker: throughput from offset 0, then latency, caught up."""
    live: dict[str, Any] = {"status": "skipped"}
    worker = WorkerProcess(
        bootstrap=run.bootstrap,
        usage_topic=run.messages().topic,
        partitions=run.workload.partitions,
        run_id=run.run_id,
        workdir=run.workdir,
        extra_env=run.args.worker_env,
        broker_running=run.broker_running,
        entry="benchmarks.latency_probe" if run.args.probe else "benchmarks.cw_entry",
    )
    try:
        settings = worker.effective_settings()
        worker.start()
        attempt("churnwatch", lambda: run_worker(run, worker, settings))
        if "latency" in selected and contenders["churnwatch"]["status"] in ("ok", "skipped"):
            live = run_latency(run, worker, settings)
    finally:
        worker.stop()
    return live


def run_shape(run: Run, name: str, envelope_size: int) -> dict[str, Any]:
    """A worker of its own on the live-shaped workload, as single events or envelopes."""
    workload = replace(run.workload, events_per_customer_day=LIVE_SHAPED_PER_DAY)
    topic = f"bench-{name.replace('_', '-')}-{run.run_id}"
    produced = produce(workload, run.bootstrap, topic, envelope_size)
    say(f"{name}: produced {produced.events:,} events in {produced.messages:,} messages to "
        f"{topic} in {produced.seconds:.1f} s")  # fmt: skip
    workdir = run.workdir / name
    workdir.mkdir()
    worker = WorkerProcess(
        bootstrap=run.bootstrap,
        usage_topic=topic,
        partitions=workload.partitions,
        run_id=f"{run.run_id}-{name.replace('_', '-')}",
        workdir=workdir,
        extra_env=run.args.worker_env,
        broker_running=run.broker_running,
    )
    try:
        settings = worker.effective_settings()
        worker.start()
        result = run_worker(run, worker, settings)
    finally:
        worker.stop()
    result["workload"] = {**workload.describe(), **produced.describe()}
    return result


def run_consumer(run: Run, mode: str) -> dict[str, Any]:
    return run_module(run, "benchmarks.consumers", mode)


def run_faust_floor(run: Run, mode: str) -> dict[str, Any]:
    """Faust with the worker's settings and nothing of churnwatch: what Faust itself costs."""
    datadir = run.workdir / f"faust-{mode}"
    return run_module(run, "benchmarks.faust_floor", mode, "--datadir", str(datadir))


def run_module(run: Run, module: str, mode: str, *extra: str) -> dict[str, Any]:
    """A contender that is a module of this package, reading the fixed workload's topic."""
    name = module.rsplit(".", 1)[-1]
    window = run_contender(
        [sys.executable, "-m", module, mode, "--bootstrap", run.bootstrap,
         "--topic", run.messages().topic, "--group", f"bench-{name}-{mode}-{run.run_id}",
         "--messages", str(run.messages().messages), *extra],
        log_path=run.workdir / f"{name}-{mode}.log",
        timeout=run.timeout,
        cwd=REPO_ROOT,
        broker_running=run.broker_running,
    )  # fmt: skip
    return window.result(run.workload.events)


def run_quix(run: Run) -> dict[str, Any]:
    args = run.args
    python = quix.ensure_python(args.cache_dir, args.quix_python, install=not args.no_install)
    window = quix.run(
        python,
        bootstrap=run.bootstrap,
        topic=run.messages().topic,
        group=f"bench-quix-{run.run_id}",
        messages=run.messages().messages,
        state_dir=run.workdir / "quix-state",
        log_path=run.workdir / "quix.log",
        timeout=run.timeout,
        broker_running=run.broker_running,
    )
    return window.result(run.workload.events)


def run_worker(run: Run, worker: WorkerProcess, settings: dict[str, Any]) -> dict[str, Any]:
    recorder: list[Any] = []
    stamp = report.now_iso().replace(":", "").replace("-", "")
    profile_path = run.args.out / f"{stamp}-worker-profile.txt"

    def start_profile() -> None:
        run.args.out.mkdir(parents=True, exist_ok=True)
        recorder.append(profile.start(worker.pid, profile_path))

    window = worker.measure_throughput(
        run.workload.events, run.timeout, on_first=start_profile if run.args.profile else None
    )
    if recorder:
        profile.stop(recorder[0])
        window.details["profile"] = {"file": str(profile_path), **profile.summarize(profile_path)}
    window.details["worker_env"] = worker.extra_env
    window.details["settings"] = {
        key: settings[key]
        for key in ("store", "batch_max_events", "batch_within_seconds", "allowed_lateness_seconds")
    }
    result = window.result(run.workload.events)
    if run.args.profile:
        result["profiled"] = True
    return result


def run_latency(run: Run, worker: WorkerProcess, settings: dict[str, Any]) -> dict[str, Any]:
    say("latency: waiting for the worker to catch up")
    produced = run.messages()
    plan = latency.LivePlan(
        rate=run.args.live_rate or run.size["rate"],
        duration=run.args.live_seconds or run.size["seconds"],
        event_days=LIVE_EVENT_DAYS,
        planted=min(run.size["planted"], run.workload.customers // 10),
        start_event_time=produced.heartbeat_time + 60,
    )
    try:
        worker.wait_handled(produced.messages, run.timeout)
        say(f"latency: {plan.rate:,.0f} events/s for {plan.duration:g} s, event time "
            f"{plan.speed / 3600:,.1f} h per second")  # fmt: skip
        live = latency.measure(worker, run.workload, produced, plan, settings, run.timeout)
    except (ContenderError, OSError, RuntimeError, TimeoutError) as exc:
        run.failed = True
        live = {"status": f"failed: {exc}"[:2000]}
    say(f"latency: {_latency_summary(live)}")
    return live


def _summary(entry: dict[str, Any]) -> str:
    if entry.get("status") != "ok":
        return str(entry.get("status"))
    return (
        f"{entry['events_per_second']:,.0f} events/s over {entry['seconds']:.2f} s "
        f"(start-up {entry['startup_seconds']:.1f} s), peak RSS "
        f"{entry['peak_rss_bytes'] / 2**20:.0f} MiB, "
        f"{entry['cpu_seconds_per_million']:.1f} CPU s per million events"
    )


def _latency_summary(live: dict[str, Any]) -> str:
    if live.get("status") != "ok":
        return str(live.get("status"))
    processed, alert = live["produce_to_processed"], live["condition_to_alert"]
    return (
        f"produce->processed p50 {processed['p50_ms']} ms p99 {processed['p99_ms']} ms "
        f"(n={processed['samples']:,}); condition->alert p50 {alert['p50_ms']} ms "
        f"p99 {alert['p99_ms']} ms (n={alert['samples']}, {alert['alerts_missing']} missing)"
    )


if __name__ == "__main__":
    sys.exit(main())
