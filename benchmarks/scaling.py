"""`python -m benchmarks.scaling`: what churnwatch costs as the number of customers grows.

On one embedded broker (or `--bootstrap`), for each customer count and table store: a real
`churnwatch worker` from offset 0 (events/s, peak RSS, RSS per tracked customer over an idle
worker's, bytes of encoded state per customer and of changelog per event); then the time a new
worker takes to recover the largest size's tables from the changelog (memory://; rocksdb:// with
its local data kept and wiped); then one worker against a group of two on the same workload.

Event count per size: max(floor, customers), one event per customer per event day, so every
customer is tracked (1M customers need 1M events) while the small sizes still run long enough to
measure (floor 100,000; quick 10,000). Customers at small sizes therefore hold more days of
history (100 at 1,000 customers, 1 at 1M): the state size is reported with the days it covers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from contextlib import ExitStack
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
from kafka.errors import KafkaError

from benchmarks import report
from benchmarks import scaling_report as out
from benchmarks.__main__ import CACHE_DIR, RESULTS, start_broker
from benchmarks.churnwatch_run import WorkerProcess, add_worker_env_option, worker_env
from benchmarks.handshake import ContenderError
from benchmarks.measure import machine_busy_seconds, process_cpu_seconds
from benchmarks.workload import Produced, Workload, create_topics, produce
from churnwatch.broker import KAFKA_VERSION
from churnwatch.exceptions import ChurnwatchError

SIZES = {"full": (1_000, 10_000, 100_000, 1_000_000), "quick": (500, 2_000)}
FLOOR = {"full": 100_000, "quick": 10_000}
STORES = ("memory", "rocksdb")
TRACKED = "churnwatch_customers_tracked"


def say(text: str) -> None:
    print(f"scaling: {text}", file=sys.stderr, flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.scaling",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = parser.add_argument
    add("--quick", action="store_true", help=f"sizes {SIZES['quick']}: about a minute")
    add("--sizes", type=int, nargs="+", help="customer counts (default 1k 10k 100k 1M)")
    add("--stores", nargs="+", choices=STORES, default=list(STORES), help="table stores")
    add("--floor", type=int, help="fewest events per size (100,000; quick 10,000)")
    add("--recovery-size", type=int, help="customers for the recovery phase (largest <= 100k)")
    add("--group-size", type=int, help="customers for 1 vs 2 workers (10k; quick the largest)")
    add("--out", type=Path, default=RESULTS, help="result directory (default benchmarks/results)")
    add("--bootstrap", metavar="HOST:PORT", help="use this broker, not a new embedded one")
    add("--cache-dir", type=Path, default=CACHE_DIR, help="Kafka jars (~/.cache/churnwatch)")
    add("--keep", action="store_true", help="keep the work directory and its logs")
    add_worker_env_option(parser)
    args = parser.parse_args(argv)
    args.worker_env = worker_env(parser, args.worker_env)
    return args


class Scaling:
    """One scaling run: a broker, a work directory, a workload topic per size."""

    def __init__(self, args: argparse.Namespace, bootstrap: str, workdir: Path) -> None:
        self.args = args
        self.mode = "quick" if args.quick else "full"
        self.bootstrap = bootstrap
        self.workdir = workdir
        self.run_id = workdir.name.split("-")[1]
        self.topics: dict[int, Produced] = {}
        self.failed = False

    def workload(self, customers: int) -> Workload:
        floor = self.args.floor or FLOOR[self.mode]
        return Workload(
            customers=customers, events=max(floor, customers), events_per_customer_day=1
        )

    def produced(self, customers: int) -> Produced:
        if customers not in self.topics:
            workload = self.workload(customers)
            topic = f"scale-usage-{customers}-{self.run_id}"
            self.topics[customers] = done = produce(workload, self.bootstrap, topic)
            say(
                f"produced {done.messages:,} messages for {customers:,} customers in "
                f"{done.seconds:.1f} s"
            )
        return self.topics[customers]

    def worker(self, tag: str, usage_topic: str, store: str, name: str = "worker") -> WorkerProcess:
        return WorkerProcess(
            bootstrap=self.bootstrap,
            usage_topic=usage_topic,
            partitions=4,
            run_id=f"{self.run_id}-{tag}",
            workdir=self.workdir,
            extra_env={**self.args.worker_env, "CHURNWATCH_STORE": f"{store}://"},
            name=f"{tag}-{name}",
        )

    def timeout(self, events: int) -> float:
        return 180 + events / 500

    # -- phases -------------------------------------------------------------------------------

    def idle_rss(self, store: str) -> dict[str, Any]:
        """A worker with nothing to read: its resident memory once ready."""
        topic = f"scale-idle-{store}-{self.run_id}"
        create_topics(self.bootstrap, [topic], 4)
        worker = self.worker(f"idle-{store}", topic, store)
        worker.start()
        try:
            ready = wait_ready(worker, 120)
            time.sleep(1.0)
            return {"status": "ok", "rss_bytes": rss_bytes(worker.pid), "ready_seconds": ready}
        finally:
            worker.stop()

    def size_run(self, customers: int, store: str, idle: int) -> tuple[dict[str, Any], Any]:
        """One worker from offset 0 on `customers`' workload; returns (entry, the stopped
        worker, for the recovery phase)."""
        produced = self.produced(customers)
        workload = self.workload(customers)
        worker = self.worker(f"{store}-{customers}", produced.topic, store)
        worker.start()
        try:
            window = worker.measure_throughput(produced.events, self.timeout(produced.events))
            worker.wait_handled(produced.messages, self.timeout(produced.events))
            time.sleep(1.0)
            rss, peak = rss_bytes(worker.pid), peak_rss_bytes(worker.pid)
            tracked = int(worker.totals().get(TRACKED, 0))
        finally:
            worker.stop()
        result = window.result(produced.events)
        log = changelog_stats(self.bootstrap, worker.changelog_topic)
        grown = rss - idle
        entry = {
            "status": "ok",
            "customers": customers,
            "store": store,
            "events": produced.events,
            "event_days": workload.days,
            "events_per_second": result["events_per_second"],
            "seconds": result["seconds"],
            "startup_seconds": result["startup_seconds"],
            "cpu_seconds_per_million": result["cpu_seconds_per_million"],
            "cpu_utilisation": result["cpu_utilisation"],
            "other_cpu_seconds": result["other_cpu_seconds"],
            "broker_cpu_seconds": result["broker_cpu_seconds"],
            "customers_tracked": tracked,
            "peak_rss_bytes": peak,
            "rss_bytes": rss,
            "idle_rss_bytes": idle,
            "rss_bytes_per_customer": round(grown / max(tracked, 1), 1),
            "state_bytes_per_customer": log["mean_value_bytes"],
            "changelog_records": log["records"],
            "changelog_bytes": log["log_bytes"],
            "changelog_bytes_per_event": (
                None if log["log_bytes"] is None else round(log["log_bytes"] / produced.events, 1)
            ),
            "details": result.get("details", {}),
        }
        return entry, worker

    def recovery(self, done: WorkerProcess, store: str, tracked: int, how: str) -> dict[str, Any]:
        """A new worker of the same group restores the tables: launch to ready, and to every
        customer back in the table. `how`: fresh (new data dir), kept or wiped (rocksdb)."""
        if how == "wiped":
            shutil.rmtree(done.data_dir, ignore_errors=True)
        name = "recovered-fresh" if how == "fresh" else "worker"
        worker = WorkerProcess(
            bootstrap=done.bootstrap,
            usage_topic=done.usage_topic,
            partitions=4,
            run_id=done.app_id.removeprefix("bench-churnwatch-"),
            workdir=self.workdir,
            extra_env=done.extra_env,
            name=done.name if how != "fresh" else f"{done.name}-{name}",
        )
        worker.start(create_topics=False)
        try:
            ready = wait_ready(worker, self.timeout(tracked * 2))
            restored = wait_tracked(worker, tracked, 120)
            rss = rss_bytes(worker.pid)
        finally:
            worker.stop()
        return {
            "status": "ok",
            "store": store,
            "local_data": how,
            "customers": tracked,
            "ready_seconds": round(ready, 2),
            "restored_seconds": round(restored, 2),
            "rss_bytes": rss,
        }

    def one_versus_two(self, customers: int) -> dict[str, Any]:
        """The same workload through a group of one worker, then a group of two."""
        produced = self.produced(customers)
        result: dict[str, Any] = {"customers": customers, "events": produced.events}
        for count in (1, 2):
            workers = [
                self.worker(f"group{count}-{customers}", produced.topic, "memory", f"w{k}")
                for k in range(count)
            ]
            try:
                for k, worker in enumerate(workers):
                    worker.start(create_topics=k == 0)
                result[f"workers_{count}"] = group_throughput(
                    workers, produced.events, self.timeout(produced.events)
                )
            finally:
                for worker in workers:
                    worker.stop()
            say(
                f"{count} worker(s): {result[f'workers_{count}']['events_per_second']:,.0f} "
                "events/s"
            )
        one, two = result["workers_1"], result["workers_2"]
        result["speedup"] = round(two["events_per_second"] / one["events_per_second"], 3)
        return result


# -- measuring helpers ------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmRSS:") * 1024


def peak_rss_bytes(pid: int) -> int:
    return _status_kib(pid, "VmHWM:") * 1024


def _status_kib(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/{pid}/status has no {field}")


def _ready(worker: WorkerProcess) -> bool:
    try:
        url = f"http://127.0.0.1:{worker.port}/readyz"
        with urllib.request.urlopen(url, timeout=5) as response:
            return bool(response.status == 200)
    except (OSError, urllib.error.HTTPError):
        return False


def wait_ready(worker: WorkerProcess, timeout: float) -> float:
    """Seconds from launch until /readyz answers 200 (partitions assigned, tables restored)."""
    return _wait(worker, lambda: _ready(worker), timeout, "ready")


def wait_tracked(worker: WorkerProcess, customers: int, timeout: float) -> float:
    """Seconds from launch until the worker's table holds `customers` customers again."""

    def restored() -> bool:
        try:
            return worker.totals().get(TRACKED, 0) >= customers
        except OSError:
            return False

    return _wait(worker, restored, timeout, f"{customers:,} customers restored")


def _wait(worker: WorkerProcess, done: Callable[[], bool], timeout: float, what: str) -> float:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        worker.assert_alive()
        if done():
            return time.time() - worker.launched
        time.sleep(0.1)
    raise ContenderError(f"worker not {what} in {timeout:.0f} s")


def group_throughput(workers: list[WorkerProcess], events: int, timeout: float) -> dict[str, Any]:
    """From the group's first processed event until every event is processed (summed over
    the workers' /metrics); CPU summed over the workers. `steady_*`: from the moment every
    worker has processed something (the group has settled) to the end."""
    launched = min(worker.launched for worker in workers)
    first: tuple[float, int, float, float] | None = None
    steady: tuple[float, int] | None = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        counts = []
        for worker in workers:
            worker.assert_alive()
            counts.append(worker.processed() or 0)
        total = sum(counts)
        now = time.time()
        cpu = sum(process_cpu_seconds(worker.pid) for worker in workers)
        if first is None and total > 0:
            first = (now, total, cpu, machine_busy_seconds())
        if steady is None and all(counts) and total < events:
            steady = (now, total)
        if total >= events and first is not None:
            seconds = max(now - first[0], 1e-6)
            used = cpu - first[2]
            result = {
                "workers": len(workers),
                "events_per_second": round((total - first[1]) / seconds, 1),
                "seconds": round(seconds, 2),
                "startup_seconds": round(first[0] - launched, 2),
                "total_seconds": round(now - launched, 2),
                "total_events_per_second": round(events / (now - launched), 1),
                "steady_events_per_second": None,
                "steady_seconds": None,
                "cpu_seconds": round(used, 2),
                "cpu_utilisation": round(used / seconds, 3),
                "machine_cpu_seconds": round(machine_busy_seconds() - first[3], 2),
                "processed_by_worker": counts,
                "peak_rss_bytes": [peak_rss_bytes(worker.pid) for worker in workers],
            }
            if steady is not None and now - steady[0] > 1.0:
                result["steady_seconds"] = round(now - steady[0], 2)
                result["steady_events_per_second"] = round(
                    (total - steady[1]) / (now - steady[0]), 1
                )
            return result
        time.sleep(0.05 if first is None else 0.25)
    raise ContenderError(f"the group of {len(workers)} did not process {events:,} events")


def changelog_stats(bootstrap: str, topic: str, sample: int = 2_000) -> dict[str, Any]:
    """Records and bytes of a changelog topic: its log size on the broker (DescribeLogDirs)
    and the mean encoded value of the newest record per key in the last `sample` records of
    each partition (the encoded CustomerState, what a restore reads)."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap, enable_auto_commit=False, max_partition_fetch_bytes=8 << 20
    )
    latest: dict[bytes, int] = {}
    try:
        tps = [TopicPartition(topic, p) for p in consumer.partitions_for_topic(topic) or set()]
        consumer.assign(tps)
        ends, starts = consumer.end_offsets(tps), consumer.beginning_offsets(tps)
        for tp in tps:
            consumer.seek(tp, max(starts[tp], ends[tp] - sample))
        deadline = time.monotonic() + 60
        while any(consumer.position(tp) < ends[tp] for tp in tps) and time.monotonic() < deadline:
            for batch in consumer.poll(timeout_ms=1000).values():
                for record in batch:
                    if (
                        record.value is not None
                        and record.key
                        and not record.key.startswith(b"\x00")
                    ):
                        latest[record.key] = len(record.value)
    finally:
        consumer.close()
    return {
        "records": sum(ends[tp] - starts[tp] for tp in tps),
        "log_bytes": log_bytes(bootstrap, topic),
        "mean_value_bytes": round(sum(latest.values()) / max(len(latest), 1), 1),
    }


def log_bytes(bootstrap: str, topic: str) -> int | None:
    """Bytes of `topic`'s log on the broker, summed over partitions (None if not answered)."""
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="churnwatch-scaling")
    try:
        answers = admin.describe_log_dirs(topic_partitions=[topic])
    except KafkaError:
        return None
    finally:
        admin.close()
    total = 0
    for broker in answers if isinstance(answers, list) else [answers]:
        for log_dir in _get(broker, "log_dirs", "results"):
            for entry in _get(log_dir, "topics"):
                if _get(entry, "name", "topic") == topic:
                    for partition in _get(entry, "partitions"):
                        total += int(_get(partition, "partition_size", "size"))
    return total


def _get(item: Any, *names: str) -> Any:
    for name in names:
        if isinstance(item, dict) and name in item:
            return item[name]
        if hasattr(item, name):
            return getattr(item, name)
    raise KeyError(f"none of {names} in {item!r}"[:300])


# -- the run ------------------------------------------------------------------------------------


def memory_available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 0


def memory_shortfall(done: list[dict[str, Any]], store: str, customers: int) -> str | None:
    """Why `customers` would not fit in memory, from the largest size measured so far
    (its RSS plus the marginal RSS per customer for the rest), or None when it fits in half
    of MemAvailable: the machine is shared, and running it out of memory would let the
    kernel kill someone else's process."""
    measured = [e for e in done if e.get("store") == store and e.get("status") == "ok"]
    if not measured:
        return None
    last = max(measured, key=lambda e: e["customers_tracked"])
    per_customer = last.get("marginal_rss_bytes_per_customer") or last["rss_bytes_per_customer"]
    needed = last["rss_bytes"] + per_customer * (customers - last["customers_tracked"])
    available = memory_available_bytes()
    if needed <= available / 2:
        return None
    return (
        f"skipped: needs about {needed / 2**30:.1f} GiB (RSS {last['rss_bytes'] / 2**30:.2f} GiB "
        f"at {last['customers_tracked']:,} customers + {per_customer:,.0f} B per customer more), "
        f"over half of the {available / 2**30:.1f} GiB this shared machine had available"
    )


def rocksdb_available() -> str | None:
    """None if Faust can open rocksdb:// here, else the reason."""
    try:
        import rocksdict  # noqa: F401
    except ImportError as exc:
        return f"rocksdict not installed ({exc}): pip install 'faust-streaming[rocksdict]'"
    return None


def run_all(run: Scaling, checkpoint: Callable[[dict[str, Any]], None]) -> dict[str, Any]:
    """Sizes up to the recovery size for every store, recovery, 1 vs 2, then larger sizes;
    `checkpoint` gets the results so far after each step (a cut-short run keeps them)."""
    args = run.args
    sizes = sorted(args.sizes or SIZES[run.mode])
    recovery_size = args.recovery_size or max(s for s in sizes if s <= 100_000)
    group_size = args.group_size or (10_000 if 10_000 in sizes else max(sizes))
    results: dict[str, Any] = {"sizes": [], "idle": {}, "recovery": [], "one_versus_two": None}
    stopped: dict[tuple[str, int], tuple[WorkerProcess, int]] = {}

    def guarded(what: str, action: Callable[[], Any]) -> Any:
        try:
            return action()
        except (ContenderError, OSError, RuntimeError, KafkaError, TimeoutError) as exc:
            run.failed = True
            say(f"{what}: FAILED {exc}")
            return {"status": f"failed: {exc}"[:2000]}

    def measure_sizes(chosen: list[int]) -> None:
        for store in args.stores:
            why = rocksdb_available() if store == "rocksdb" else None
            if why is not None:
                results["idle"][store] = {"status": f"unavailable: {why}"}
            elif store not in results["idle"]:
                results["idle"][store] = guarded(f"idle {store}", lambda s=store: run.idle_rss(s))
            for customers in chosen:
                if why is not None:
                    entry = {
                        "status": f"unavailable: {why}",
                        "customers": customers,
                        "store": store,
                    }
                    results["sizes"].append(entry)
                    continue
                short = memory_shortfall(results["sizes"], store, customers)
                if short is not None:
                    entry = {"status": short, "customers": customers, "store": store}
                    results["sizes"].append(entry)
                    say(f"{store}:// {customers:,}: {short}")
                    checkpoint(results)
                    continue
                say(f"{store}:// {customers:,} customers: running")
                idle = results["idle"][store].get("rss_bytes", 0)

                def one(customers: int = customers, store: str = store, idle: int = idle) -> Any:
                    entry, worker = run.size_run(customers, store, idle)
                    stopped[(store, customers)] = (worker, entry["customers_tracked"])
                    return entry

                entry = guarded(f"{store} {customers}", one)
                entry.setdefault("customers", customers)
                entry.setdefault("store", store)
                results["sizes"].append(entry)
                say(f"{store}:// {customers:,}: {out.size_summary(entry)}")
                checkpoint(results)

    measure_sizes([s for s in sizes if s <= recovery_size])
    for store, hows in (("memory", ("fresh",)), ("rocksdb", ("kept", "wiped"))):
        if (store, recovery_size) not in stopped:
            continue
        worker, tracked = stopped[(store, recovery_size)]
        for how in hows:
            say(f"recovery {store}:// {how}, {tracked:,} customers")
            entry = guarded(
                f"recovery {store} {how}",
                lambda w=worker, s=store, t=tracked, h=how: run.recovery(w, s, t, h),
            )
            results["recovery"].append(entry)
            say(f"recovery {store}:// {how}: {out.recovery_summary(entry)}")
    checkpoint(results)
    say(f"1 vs 2 workers, {group_size:,} customers")
    results["one_versus_two"] = guarded("1 vs 2", lambda: run.one_versus_two(group_size))
    checkpoint(results)
    measure_sizes([s for s in sizes if s > recovery_size])
    return results


def workloads(run: Scaling) -> dict[str, Any]:
    return {str(c): {**run.workload(c).describe(), **p.describe()} for c, p in run.topics.items()}


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix=f"cwscale-{uuid.uuid4().hex[:8]}-"))
    started = time.monotonic()
    result: dict[str, Any] = {
        "schema": out.SCHEMA,
        "started_at": report.now_iso(),
        "quick": args.quick,
        "command": [
            "python",
            "-m",
            "benchmarks.scaling",
            *(argv if argv is not None else sys.argv[1:]),
        ],
    }
    try:
        with ExitStack() as stack:
            broker = "external"
            bootstrap = args.bootstrap
            if bootstrap is None:
                bootstrap, broker = (
                    start_broker(args.cache_dir, workdir, stack).bootstrap,
                    "embedded",
                )
            result["machine"] = report.machine_info(KAFKA_VERSION, broker)
            run = Scaling(args, bootstrap, workdir)
            result["run_id"] = run.run_id
            result["events_rule"] = out.events_rule(args.floor or FLOOR[run.mode])

            def checkpoint(partial: dict[str, Any]) -> None:
                result.update(partial, workloads=workloads(run))
                result["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
                out.write(result, args.out)

            result.update(run_all(run, checkpoint))
            result["workloads"] = {
                str(c): {**run.workload(c).describe(), **p.describe()}
                for c, p in run.topics.items()
            }
    except (ChurnwatchError, KafkaError, OSError) as exc:
        say(f"FAILED: {exc}; logs kept in {workdir}")
        return 1
    result["machine"]["loadavg_end"] = [round(v, 2) for v in os.getloadavg()]
    result["finished_at"] = report.now_iso()
    result["elapsed_seconds"] = round(time.monotonic() - started, 1)
    json_path, _ = out.write(result, args.out)
    say(f"done in {result['elapsed_seconds']:.0f} s: {json_path}")
    print(out.to_markdown(result))
    if run.failed or args.keep:
        say(f"logs kept in {workdir}")
    else:
        shutil.rmtree(workdir, ignore_errors=True)
    return 1 if run.failed else 0


if __name__ == "__main__":
    sys.exit(main())
