"""`churnwatch demo`: a real broker, a real worker process, synthetic traffic, a live summary."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from churnwatch import simulation
from churnwatch.broker import EmbeddedKafka, ensure_kafka
from churnwatch.cli import REPO_POM, plan_from, produce_simulation, write_planted
from churnwatch.exceptions import ChurnwatchError
from churnwatch.kafka_client import kafka_python_options
from churnwatch.logs import configure_logging
from churnwatch.produce import make_producer, send_heartbeats
from config import Settings, load_settings
from streams.topics import ensure_topics


def run_demo(args: argparse.Namespace) -> int:
    settings = load_settings(broker_url=f"kafka://127.0.0.1:{args.port}", web_port=args.web_port)
    configure_logging(settings.log_format, "WARNING")
    workdir = settings.cache_dir / "demo"
    say(
        f"churnwatch demo: {args.customers:,} customers, {args.days} days of usage, "
        f"{_planted_drop_offs(args):.0%} planted drop-offs"
    )
    lib_dir = ensure_kafka(settings.cache_dir, REPO_POM)
    deadline = time.monotonic() + args.duration if args.duration > 0 else None
    with EmbeddedKafka(lib_dir, workdir / "kafka", port=args.port, fresh=True) as kafka:
        say(f"Kafka {kafka.bootstrap} is up (embedded, data in {workdir / 'kafka'})")
        ensure_topics(settings)
        # The history first, then the worker reads it: read while being produced this fast,
        # the usage and billing topics could drift apart by more than the allowed lateness.
        produce_history(args, settings, workdir)
        with worker_process(settings, workdir) as metrics_url:
            say(f"worker is up: metrics at {metrics_url} (log: {workdir / 'worker.log'})")
            say("live summary as the worker catches up (Ctrl-C to stop):")
            try:
                watch(metrics_url, deadline)
            except KeyboardInterrupt:
                say("stopping")
    say("demo stopped cleanly; closed periods stay in the store, e.g.:")
    store = f"sqlite:///{workdir / 'churnwatch.sqlite3'}"
    say(f"  churnwatch report --period 2020-02 --database-url {store}")
    return 0


def _planted_drop_offs(args: argparse.Namespace) -> float:
    """Share of customers planted to drop off: decaying, stopping, narrowing or stalling."""
    shares = (args.decay_fraction, args.stop_fraction, args.narrow_fraction, args.stall_fraction)
    return float(sum(shares))


def say(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


@contextmanager
def worker_process(settings: Settings, workdir: Path) -> Iterator[str]:
    """Run `churnwatch worker` as its own process; stop it with SIGTERM on the way out."""
    env = dict(os.environ)
    env.update(
        CHURNWATCH_BROKER_URL=settings.broker_url,
        CHURNWATCH_WEB_PORT=str(settings.web_port),
        CHURNWATCH_DATA_DIR=str(workdir / "worker"),
        CHURNWATCH_DATABASE_URL=f"sqlite:///{workdir / 'churnwatch.sqlite3'}",
        CHURNWATCH_LOG_FORMAT="json",
    )
    log_file = (workdir / "worker.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "churnwatch", "worker"],
        env=env,
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{settings.web_port}/metrics"
    try:
        wait_until_up(url, process, timeout=90)
        yield url
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
        log_file.close()


def wait_until_up(url: str, process: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ChurnwatchError(f"the worker exited with {process.returncode}; see its log")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.5)
    raise ChurnwatchError(f"the worker did not answer on {url} within {timeout:.0f}s")


def produce_history(args: argparse.Namespace, settings: Settings, workdir: Path) -> None:
    plan = plan_from(args)
    customers = simulation.customers_for(plan)
    write_planted(workdir / "planted.json", customers)
    producer = make_producer(settings.bootstrap_servers, kafka_python_options(settings.kafka))
    try:
        produce_simulation(producer, settings, plan, customers)
        heartbeat_at = plan.end + settings.allowed_lateness_seconds + 1
        send_heartbeats(producer, [settings.topics.usage, settings.topics.billing], heartbeat_at)
    finally:
        producer.close()
    say(f"planted customers listed in {workdir / 'planted.json'}")


def scrape(url: str) -> dict[str, float]:
    """Sum each sample name over its labels, plus `name{label=value}` entries for at-risk."""
    with urllib.request.urlopen(url, timeout=5) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            values[sample.name] = values.get(sample.name, 0.0) + sample.value
            if sample.name == "churnwatch_customers_at_risk_by_reason":
                values[f"at_risk:{sample.labels['reason']}"] = sample.value
            if sample.name == "churnwatch_alerts_total":
                key = f"alerts:{sample.labels['status']}"
                values[key] = values.get(key, 0.0) + sample.value
            if sample.name.startswith("churnwatch_period_") and "period" in sample.labels:
                key = f"{sample.labels['period']}:{sample.name}"
                values[key] = values.get(key, 0.0) + sample.value
    return values


def churn_summary(values: dict[str, float], period: str) -> str:
    """`churn 3.79% (11 of 290), MRR churn 2.21%` for the current or previous period."""
    start = values.get(f"{period}:churnwatch_period_start_customers", 0.0)
    churned = values.get(f"{period}:churnwatch_period_churned_customers", 0.0)
    start_mrr = values.get(f"{period}:churnwatch_period_start_mrr", 0.0)
    lost_mrr = values.get(f"{period}:churnwatch_period_churned_mrr", 0.0) + values.get(
        f"{period}:churnwatch_period_downsell_mrr", 0.0
    )
    if not start:
        return f"{period} period: no subscribers at its start"
    mrr = f", MRR churn {lost_mrr / start_mrr:.2%}" if start_mrr else ""
    return f"{period} period churn {churned / start:.2%} ({churned:,.0f} of {start:,.0f}){mrr}"


def watch(url: str, deadline: float | None) -> None:
    previous, previous_at = 0.0, time.monotonic()
    while deadline is None or time.monotonic() < deadline:
        time.sleep(2.0)
        values = scrape(url)
        now = time.monotonic()
        processed = values.get("churnwatch_events_processed_total", 0.0)
        rate = (processed - previous) / (now - previous_at)
        previous, previous_at = processed, now
        reasons = ", ".join(
            f"{key.removeprefix('at_risk:')} {value:,.0f}"
            for key, value in sorted(values.items())
            if key.startswith("at_risk:") and value
        )
        watermark = values.get("churnwatch_watermark_lag_seconds")
        event_time = "-"
        if watermark is not None:
            event_time = datetime.fromtimestamp(time.time() - watermark, UTC).strftime("%Y-%m-%d")
        say(
            f"  events {processed:>9,.0f} ({rate:>7,.0f}/s) | event time {event_time} | "
            f"customers {values.get('churnwatch_customers_tracked', 0):,.0f} | at risk "
            f"{values.get('churnwatch_customers_at_risk', 0):,.0f} ({reasons or 'none'}) | "
            "alerts opened "
            f"{values.get('alerts:opened', 0):,.0f} | dead letters "
            f"{values.get('churnwatch_events_dead_lettered_total', 0):,.0f}"
        )
        say(f"    {churn_summary(values, 'previous')} | {churn_summary(values, 'current')}")
