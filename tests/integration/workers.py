"""Real `churnwatch worker` processes for integration tests, each with its own topics and group."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from churnwatch.broker import free_port


@dataclass
class WorkerEnv:
    """Settings shared by the workers and producers of one test (as CHURNWATCH_* variables)."""

    bootstrap: str
    app_id: str
    usage_topic: str
    billing_topic: str
    alerts_topic: str
    dead_letters_topic: str
    partitions: int = 4
    extra: dict[str, str] = field(default_factory=dict)
    health_topic: str = "churnwatch.customer-health"

    @classmethod
    def unique(cls, bootstrap: str, name: Callable[[str], str], **extra: str) -> WorkerEnv:
        return cls(
            bootstrap=bootstrap,
            app_id=name("app"),
            usage_topic=name("usage"),
            billing_topic=name("billing"),
            alerts_topic=name("alerts"),
            dead_letters_topic=name("dead"),
            extra=dict(extra),
            health_topic=name("health"),
        )

    def variables(self) -> dict[str, str]:
        return {
            "CHURNWATCH_BROKER_URL": f"kafka://{self.bootstrap}",
            "CHURNWATCH_APP_ID": self.app_id,
            "CHURNWATCH_PARTITIONS": str(self.partitions),
            "CHURNWATCH_TOPICS__USAGE": self.usage_topic,
            "CHURNWATCH_TOPICS__BILLING": self.billing_topic,
            "CHURNWATCH_TOPICS__ALERTS": self.alerts_topic,
            "CHURNWATCH_TOPICS__DEAD_LETTERS": self.dead_letters_topic,
            "CHURNWATCH_TOPICS__HEALTH": self.health_topic,
            "CHURNWATCH_LOG_FORMAT": "json",
            **self.extra,
        }

    def run_cli(
        self, *args: str, timeout: float = 300, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        """Run a `churnwatch` command with this test's settings; raise with its output on error."""
        result = subprocess.run(
            [sys.executable, "-m", "churnwatch", *args],
            env={**os.environ, **self.variables()},
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"churnwatch {' '.join(args)} failed:\n{result.stderr[-3000:]}")
        return result


class WorkerProcess:
    """One worker process; its log goes to a file that failures print."""

    def __init__(self, env: WorkerEnv, workdir: Path, name: str = "worker") -> None:
        self.env = env
        self.port = free_port()
        workdir.mkdir(parents=True, exist_ok=True)
        self.log_path = workdir / f"{name}.log"
        self.data_dir = workdir / name
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 90) -> WorkerProcess:
        variables = {
            "CHURNWATCH_DATABASE_URL": f"sqlite:///{self.data_dir}.sqlite3",
            **self.env.variables(),
            "CHURNWATCH_WEB_PORT": str(self.port),
            "CHURNWATCH_DATA_DIR": str(self.data_dir),
        }
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "churnwatch", "worker"],
                env={**os.environ, **variables},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self.assert_alive()
            try:
                if self.health().get("partitions"):
                    return self
            except OSError:
                pass
            time.sleep(0.3)
        raise AssertionError(f"worker did not get partitions in {timeout}s\n{self.log_tail()}")

    def watermarks(self) -> dict[int, float]:
        """Event-time watermark of each partition this worker owns."""
        return {
            int(dict(labels)["partition"]): value
            for (name, labels), value in self.metrics().items()
            if name == "churnwatch_partition_watermark_timestamp_seconds"
        }

    def stop(self) -> None:
        if self._process is None or self._process.poll() is not None:
            return
        self._process.send_signal(signal.SIGTERM)
        try:
            self._process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()

    def kill(self) -> None:
        """`kill -9`: no shutdown, no flush, no commit (a crash, an OOM kill, a lost node)."""
        if self._process is not None and self._process.poll() is None:
            self._process.kill()
            self._process.wait()

    def assert_alive(self) -> None:
        if self._process is not None and self._process.poll() is not None:
            raise AssertionError(
                f"worker exited with {self._process.returncode}\n{self.log_tail()}"
            )

    def health(self) -> dict[str, object]:
        with urllib.request.urlopen(f"{self.url}/healthz", timeout=5) as response:
            return dict(json.loads(response.read()))

    def ready(self) -> bool:
        """/readyz: partitions assigned and their tables restored."""
        try:
            with urllib.request.urlopen(f"{self.url}/readyz", timeout=5) as response:
                return bool(json.loads(response.read())["ready"])
        except urllib.error.HTTPError:  # 503 while rebalancing or recovering
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        """Every sample as {(name, sorted labels): value}."""
        with urllib.request.urlopen(f"{self.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        return {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }

    def total(self, name: str, **labels: str) -> float:
        """Sum of a metric's samples whose labels include `labels`."""
        wanted = set(labels.items())
        return sum(
            value
            for (sample, sample_labels), value in self.metrics().items()
            if sample == name and wanted <= set(sample_labels)
        )

    def wait_for(self, name: str, at_least: float, timeout: float = 180, **labels: str) -> float:
        deadline = time.monotonic() + timeout
        value = 0.0
        while time.monotonic() < deadline:
            self.assert_alive()
            value = self.total(name, **labels)
            if value >= at_least:
                return value
            time.sleep(0.5)
        raise AssertionError(f"{name} reached {value}, wanted {at_least}\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        if not self.log_path.exists():
            return "(no log)"
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
