"""churnwatch itself: a real `churnwatch worker` process on the pre-produced topic.

The worker gets its own app id (so a fresh consumer group and fresh changelog topics), a fresh
billing topic with the same partition count (input topics are co-partitioned), fresh alert and
dead-letter topics, a temporary SQLite store and data directory, and WARNING logs. Inherited
`CHURNWATCH_*` variables are dropped so every run measures the same configuration; `--worker-env`
adds deliberate ones. Progress is read from /metrics (`churnwatch_events_processed_total`),
polled often at start-up, then less and less often until the predicted end, so scraping (which
walks every customer) costs the worker little.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from benchmarks.handshake import ContenderError, log_tail
from benchmarks.measure import Sample, Window, process_peak_rss_bytes
from benchmarks.workload import create_topics as _create_topics
from churnwatch.broker import free_port

REPO_ROOT = Path(__file__).resolve().parents[1]
PROCESSED = "churnwatch_events_processed_total"

_SAMPLE = re.compile(r"^(\w+)(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


class WorkerProcess:
    """One churnwatch worker for the benchmark: start, watch, measure, stop."""

    def __init__(
        self,
        *,
        bootstrap: str,
        usage_topic: str,
        partitions: int,
        run_id: str,
        workdir: Path,
        extra_env: dict[str, str] | None = None,
        broker_running: Callable[[], bool] = lambda: True,
        name: str = "churnwatch-worker",
        entry: str = "benchmarks.cw_entry",
    ) -> None:
        self.bootstrap = bootstrap
        self.entry = entry
        self.broker_running = broker_running
        self.app_id = f"bench-churnwatch-{run_id}"
        self.usage_topic = usage_topic
        self.billing_topic = f"bench-billing-{run_id}"
        self.alerts_topic = f"bench-alerts-{run_id}"
        self.dead_letters_topic = f"bench-dead-letters-{run_id}"
        self.partitions = partitions
        self.workdir = workdir
        self.name = name
        self.log_path = workdir / f"{name}.log"
        self.data_dir = workdir / f"{name}-data"
        self.port = free_port()
        self.extra_env = dict(extra_env or {})
        self.process: subprocess.Popen[bytes] | None = None
        self.launched = 0.0
        self._log_checked = 0

    @property
    def changelog_topic(self) -> str:
        """Faust's changelog of the customers table (`<app id>-<table>-changelog`)."""
        return f"{self.app_id}-customers-changelog"

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def variables(self) -> dict[str, str]:
        return {
            "CHURNWATCH_BROKER_URL": f"kafka://{self.bootstrap}",
            "CHURNWATCH_APP_ID": self.app_id,
            "CHURNWATCH_PARTITIONS": str(self.partitions),
            "CHURNWATCH_TOPICS__USAGE": self.usage_topic,
            "CHURNWATCH_TOPICS__BILLING": self.billing_topic,
            "CHURNWATCH_TOPICS__ALERTS": self.alerts_topic,
            "CHURNWATCH_TOPICS__DEAD_LETTERS": self.dead_letters_topic,
            "CHURNWATCH_DATABASE_URL": f"sqlite:///{self.workdir / (self.name + '.sqlite3')}",
            "CHURNWATCH_DATA_DIR": str(self.data_dir),
            "CHURNWATCH_WEB_PORT": str(self.port),
            "CHURNWATCH_LOG_LEVEL": "WARNING",
            "CHURNWATCH_LOG_FORMAT": "json",
            **self.extra_env,
        }

    def environment(self) -> dict[str, str]:
        inherited = {k: v for k, v in os.environ.items() if not k.startswith("CHURNWATCH_")}
        return {**inherited, **self.variables()}

    def effective_settings(self) -> dict[str, Any]:
        """`churnwatch config` under the worker's environment: the settings it runs with."""
        done = subprocess.run(
            [sys.executable, "-m", "churnwatch", "config"],
            env=self.environment(),
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        return dict(json.loads(done.stdout))

    def start(self, create_topics: bool = True) -> None:
        """Create the worker's own topics (unless a first worker of its group did) and launch
        it (returns at once)."""
        if create_topics:
            # The broker stamps alerts and changelog records as it appends them: latency is
            # measured to the moment a record is on the topic, not to when the worker's
            # producer was handed it (it may wait in the producer's buffer).
            appended = {"message.timestamp.type": "LogAppendTime"}
            _create_topics(
                self.bootstrap,
                [
                    self.billing_topic,
                    self.alerts_topic,
                    self.dead_letters_topic,
                    self.changelog_topic,
                ],
                self.partitions,
                configs={
                    self.alerts_topic: appended,
                    self.changelog_topic: {**appended, "cleanup.policy": "compact"},
                },
            )
        self._log_checked = 0
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", self.entry],  # `churnwatch worker`
                cwd=REPO_ROOT,
                env=self.environment(),
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        self.launched = time.time()

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def assert_alive(self, progress: str = "") -> None:
        self.assert_no_crash(progress)
        if not self.broker_running():
            raise ContenderError(f"the broker stopped{progress} (killed from outside?)")
        if self.process is not None and self.process.poll() is not None:
            code = self.process.returncode
            hint = " (stopped by a signal from outside the benchmark?)" if code == 0 else ""
            raise ContenderError(
                f"churnwatch worker exited with {code}{hint}{progress}\n{log_tail(self.log_path)}"
            )

    def assert_no_crash(self, progress: str = "") -> None:
        """An agent that crashed leaves the process running with nothing consuming: stop
        waiting at once, with the traceback from the log."""
        try:
            with self.log_path.open("rb") as log:
                log.seek(self._log_checked)
                fresh = log.read()
        except OSError:
            return
        self._log_checked += len(fresh)
        if b"Crashed reason=" in fresh:
            line = next(x for x in fresh.splitlines() if b"Crashed reason=" in x)
            raise ContenderError(
                f"a churnwatch agent crashed{progress}: {line.decode(errors='replace')[-3000:]}"
            )

    def scrape(self) -> str:
        url = f"http://127.0.0.1:{self.port}/metrics"
        with urllib.request.urlopen(url, timeout=10) as response:
            return str(response.read().decode())

    def totals(self) -> dict[str, float]:
        """Every metric sample summed over its labels, by sample name."""
        sums: dict[str, float] = {}
        for name, value in _SAMPLE.findall(self.scrape()):
            sums[name] = sums.get(name, 0.0) + float(value)
        return sums

    def processed(self) -> int | None:
        """Events processed so far; None while the web server is not up yet."""
        try:
            return int(self.totals().get(PROCESSED, 0))
        except OSError:
            return None

    def handled(self) -> int:
        """Input messages done with: processed, dead-lettered, or heartbeats (0 before the
        web server is up)."""
        try:
            totals = self.totals()
        except OSError:
            return 0
        names = (PROCESSED, "churnwatch_events_dead_lettered_total", "churnwatch_heartbeats_total")
        return int(sum(totals.get(name, 0) for name in names))

    def wait_handled(self, at_least: int, timeout: float) -> int:
        """Poll (gently) until `at_least` input messages are handled."""
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            self.assert_alive()
            count = self.handled()
            if count >= at_least:
                return count
            time.sleep(0.5)
        raise ContenderError(
            f"churnwatch handled {count} of {at_least} messages in {timeout:.0f} s\n"
            f"{log_tail(self.log_path)}"
        )

    def measure_throughput(
        self, events: int, timeout: float, on_first: Callable[[], None] | None = None
    ) -> Window:
        """From launch to `events` processed: the window opens at the first processed event."""
        window = Window(launched=self.launched)
        deadline = time.monotonic() + timeout
        count = 0
        while time.monotonic() < deadline:
            self.assert_alive(f" after {count:,} of {events:,} events")
            count = self.processed() or 0
            if count >= events:
                window.last = Sample.take(self.pid, count)
                window.peak_rss_bytes = process_peak_rss_bytes(self.pid)
                window.details.update(self._details(window))
                return window
            if count > 0 and window.first is None:
                window.first = Sample.take(self.pid, count)
                if on_first is not None:
                    on_first()
            time.sleep(_next_poll(window.first, count, events))
        raise ContenderError(
            f"churnwatch processed {count} of {events} events in {timeout:.0f} s\n"
            f"{log_tail(self.log_path)}"
        )

    def metric_families(self) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
        """Samples by name, then by sorted labels (the full parser: for reports, not polling)."""
        found: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
        for family in text_string_to_metric_families(self.scrape()):
            for sample in family.samples:
                found.setdefault(sample.name, {})[tuple(sorted(sample.labels.items()))] = (
                    sample.value
                )
        return found

    def _details(self, window: Window) -> dict[str, Any]:
        """What the worker says about the run: batches, time inside them, alerts, rejects."""
        samples = self.metric_families()

        def total(name: str) -> float:
            return sum(samples.get(name, {}).values())

        batches = total("churnwatch_batch_duration_seconds_count")
        in_batches = total("churnwatch_batch_duration_seconds_sum")
        alerts: dict[str, int] = {}
        for labels, value in samples.get("churnwatch_alerts_total", {}).items():
            status = dict(labels).get("status", "?")
            alerts[status] = alerts.get(status, 0) + int(value)
        details: dict[str, Any] = {
            "batches": int(batches),
            "mean_batch_events": round(total("churnwatch_batch_events_sum") / max(batches, 1), 1),
            "seconds_inside_batches": round(in_batches, 3),
            "alerts": alerts,
            "dead_lettered": int(total("churnwatch_events_dead_lettered_total")),
            "late": int(total("churnwatch_events_late_total")),
        }
        if window.first is not None and window.last is not None:
            span = window.last.wall - window.launched
            details["share_of_run_inside_batches"] = round(in_batches / span, 3)
        return details


def _next_poll(first: Sample | None, count: int, target: int) -> float:
    """Seconds to the next scrape: often before the first event, then half the time left."""
    if first is None or count <= first.count:
        return 0.05
    rate = (count - first.count) / max(time.time() - first.wall, 1e-3)
    remaining = (target - count) / max(rate, 1.0)
    return min(max(remaining / 2, 0.02), 1.0)


def add_worker_env_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--worker-env",
        action="append",
        default=[],
        metavar="CHURNWATCH_X=V",
        help="an extra setting for the churnwatch worker (repeatable)",
    )


def worker_env(parser: argparse.ArgumentParser, items: list[str]) -> dict[str, str]:
    """The `--worker-env` settings, or the parser's error for one that is not CHURNWATCH_X=V."""
    for item in items:
        if "=" not in item or not item.startswith("CHURNWATCH_"):
            parser.error(f"--worker-env wants CHURNWATCH_NAME=VALUE, not {item!r}")
    return dict(item.split("=", 1) for item in items)
