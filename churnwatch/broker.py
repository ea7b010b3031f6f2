"""A real single-node Apache Kafka broker (KRaft mode) for tests and local runs.

There is no Docker and no Kafka tarball here, so the broker is assembled from Maven Central
jars (deploy/kafka/pom.xml) and run as a plain `java` subprocess. Callers pass every path in;
this module reads no environment variables.
"""

from __future__ import annotations

import atexit
import base64
import contextlib
import errno
import fcntl
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Self

import structlog
from kafka import KafkaAdminClient

from churnwatch.exceptions import BrokerError, MissingToolError

__all__ = ["KAFKA_VERSION", "EmbeddedKafka", "ensure_kafka", "free_port"]

# Must match <kafka.version> in deploy/kafka/pom.xml; it also names the jar cache directory.
KAFKA_VERSION = "3.9.2"

_INSTALL_HINT = "install it, e.g. `apt-get install openjdk-17-jre-headless maven`"
_READY_TIMEOUT_S = 60.0
_STOP_TIMEOUT_S = 20.0

log = structlog.get_logger(__name__)

# The console appender writes to the broker's stdout, which start() sends to the log file.
# INFO only for the lifecycle loggers: enough to see where a failed start stopped.
_LOG4J_PROPERTIES = """\
log4j.rootLogger=WARN, stdout
log4j.appender.stdout=org.apache.log4j.ConsoleAppender
log4j.appender.stdout.layout=org.apache.log4j.PatternLayout
log4j.appender.stdout.layout.ConversionPattern=[%d] %p %m (%c)%n
log4j.logger.kafka.server.KafkaRaftServer=INFO
log4j.logger.kafka.server.BrokerServer=INFO
log4j.logger.kafka.server.ControllerServer=INFO
"""


def _require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        what = "Java (a JRE, version 17 or newer)" if name == "java" else "Maven"
        raise MissingToolError(
            f"`{name}` is not on PATH: the embedded Kafka broker needs {what}; {_INSTALL_HINT}"
        )
    return path


def _tail(text: str, lines: int = 20) -> str:
    text = re.sub(r"\x1b\[[0-9;]*m", "", text)  # Debian's mvn writes colour codes even with -B
    return "\n".join(text.splitlines()[-lines:]).strip()


def _file_tail(path: Path) -> str:
    return _tail(path.read_text(errors="replace")) if path.is_file() else f"({path} is missing)"


def _run(cmd: list[str], what: str, timeout: float) -> None:
    """Run a short-lived tool; on failure raise BrokerError with the end of its output."""
    try:
        proc = subprocess.run(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired as exc:
        raise BrokerError(f"{what} did not finish within {timeout:.0f} s") from exc
    if proc.returncode != 0:
        raise BrokerError(f"{what} failed (exit code {proc.returncode}):\n{_tail(proc.stdout)}")


def free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free right now (the OS picks it; a race is possible)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def _port_in_use(host: str, port: int) -> bool:
    # SO_REUSEADDR so that a recently closed socket in TIME_WAIT does not count as "in use".
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError as exc:  # other errors (a bad host) surface when Kafka itself binds
            return exc.errno == errno.EADDRINUSE
    return False


def ensure_kafka(cache_dir: Path, pom: Path) -> Path:
    """Return the directory holding the Kafka jars, fetching them with Maven the first time.

    The marker is written only after a complete fetch (so an interrupted one is redone) and a
    file lock serialises parallel test processes. Java is always required, Maven only to fetch.
    """
    _require_tool("java")
    version_dir = cache_dir / f"kafka-{KAFKA_VERSION}"
    lib_dir, marker = version_dir / "lib", version_dir / "fetched.ok"
    if marker.is_file():
        return lib_dir
    mvn = _require_tool("mvn")
    if not pom.is_file():
        raise BrokerError(f"Kafka pom not found: {pom}")
    version_dir.mkdir(parents=True, exist_ok=True)
    with (version_dir / ".lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if marker.is_file():  # another process fetched while we waited for the lock
            return lib_dir
        shutil.rmtree(lib_dir, ignore_errors=True)  # leftovers of an interrupted fetch
        print(f"churnwatch: fetching Apache Kafka {KAFKA_VERSION} jars with Maven into "
              f"{lib_dir} (first run only)...", file=sys.stderr, flush=True)  # fmt: skip
        started = time.monotonic()
        _run([mvn, "-q", "-B", "-f", str(pom.resolve()), "dependency:copy-dependencies",
              f"-DoutputDirectory={lib_dir}", "-DincludeScope=runtime"], "mvn", 900)  # fmt: skip
        if not (lib_dir / f"kafka_2.13-{KAFKA_VERSION}.jar").is_file():
            raise BrokerError(f"mvn succeeded but {lib_dir} has no kafka_2.13-{KAFKA_VERSION}.jar")
        marker.write_text(f"{KAFKA_VERSION}\n")
    log.info("kafka_fetched", lib_dir=str(lib_dir), elapsed_s=round(time.monotonic() - started, 1))
    return lib_dir


def _cluster_id() -> str:
    """A random cluster id in Kafka's own format (url-safe base64 of 16 bytes, no padding)."""
    while True:
        cid = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cid.startswith("-"):  # would be read as a command line option
            return cid


class EmbeddedKafka:
    """One combined broker+controller KRaft node running as a `java` child process.

    Storage lives in `data_dir`, so a new instance on the same directory (and `fresh=False`)
    sees the topics, messages and committed offsets of the previous one.
    """

    def __init__(
        self,
        lib_dir: Path,
        data_dir: Path,
        port: int = 9092,
        host: str = "127.0.0.1",
        fresh: bool = False,
        heap: str = "512m",
        log_file: Path | None = None,
    ) -> None:
        self.lib_dir = lib_dir
        self.data_dir = data_dir
        self.port = port
        self.host = host
        self.fresh = fresh
        self.heap = heap
        self.log_file = log_file if log_file is not None else data_dir / "kafka.log"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def bootstrap(self) -> str:
        """The `host:port` string to give Kafka clients."""
        return f"{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the broker process is alive (it can die on its own, or be killed by a test)."""
        return self._proc is not None and self._proc.poll() is None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> None:
        """Configure, format and launch the broker; return once it answers metadata requests."""
        if self._proc is not None:
            raise BrokerError(f"embedded Kafka on {self.bootstrap} is already started")
        java = _require_tool("java")
        if _port_in_use(self.host, self.port):
            raise BrokerError(f"cannot start Kafka: port {self.port} on {self.host} is in use")
        if self.fresh:
            shutil.rmtree(self.data_dir, ignore_errors=True)
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        props = self._write_config()
        log4j = self.data_dir / "log4j.properties"
        log4j.write_text(_LOG4J_PROPERTIES)
        java_cmd = [java, f"-Dlog4j.configuration={log4j.as_uri()}", "-cp", f"{self.lib_dir}/*"]
        self._format_storage(java_cmd, props)
        log.info("kafka_starting", port=self.port, data_dir=str(self.data_dir))
        started = time.monotonic()
        with self.log_file.open("ab") as log_fh:  # the child keeps its own copy of the fd
            self._proc = subprocess.Popen(
                [*java_cmd, f"-Xmx{self.heap}", "kafka.Kafka", str(props)],
                stdin=subprocess.DEVNULL,
                stdout=log_fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # own process group: stop() signals the JVM, not us
            )
        # A test run that crashes or forgets stop() must not leave a JVM holding the port.
        atexit.register(self.stop, 5.0)
        try:
            self._wait_ready(self._proc, started + _READY_TIMEOUT_S)
        except BaseException:
            self.stop(timeout=5.0)
            raise
        elapsed = round(time.monotonic() - started, 1)
        log.info("kafka_ready", port=self.port, pid=self._proc.pid, elapsed_s=elapsed)

    def stop(self, timeout: float = _STOP_TIMEOUT_S) -> None:
        """SIGTERM the broker (a clean shutdown); SIGKILL it if still alive after `timeout` s."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        atexit.unregister(self.stop)
        started = time.monotonic()
        log.info("kafka_stopping", port=self.port)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            log.warning("kafka_stop_timeout", port=self.port, timeout_s=timeout)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
        elapsed = round(time.monotonic() - started, 1)
        log.info("kafka_stopped", port=self.port, returncode=proc.returncode, elapsed_s=elapsed)

    def _write_config(self) -> Path:
        controller = f"127.0.0.1:{free_port()}"  # internal only, so a new one each start is fine
        props = self.data_dir / "server.properties"
        props.write_text(f"""\
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@{controller}
controller.listener.names=CONTROLLER
listeners=PLAINTEXT://{self.bootstrap},CONTROLLER://{controller}
advertised.listeners=PLAINTEXT://{self.bootstrap}
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
log.dirs={self.data_dir / "kraft-logs"}
num.partitions=1
auto.create.topics.enable=true
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
group.initial.rebalance.delay.ms=0
""")
        return props

    def _format_storage(self, java_cmd: list[str], props: Path) -> None:
        """Format log.dirs once; the cluster id is kept in data_dir so restarts reuse it."""
        id_file = self.data_dir / "cluster.id"
        if not id_file.is_file():
            id_file.write_text(_cluster_id() + "\n")
        cluster_id = id_file.read_text().strip()
        _run([*java_cmd, "kafka.tools.StorageTool", "format", "-t", cluster_id,
              "-c", str(props), "--ignore-formatted"], "kafka storage format", 120)  # fmt: skip

    def _wait_ready(self, proc: subprocess.Popen[bytes], deadline: float) -> None:
        """Poll until the broker lists itself in a metadata answer; fail with the log's tail."""
        while not self._answers_metadata():
            if proc.poll() is not None:
                problem = f"exited with code {proc.returncode} during startup"
            elif time.monotonic() > deadline:
                problem = f"was not ready within {_READY_TIMEOUT_S:g} s"
            else:
                time.sleep(0.2)
                continue
            raise BrokerError(
                f"Kafka on {self.bootstrap} {problem}; last lines of {self.log_file}:\n"
                + _file_tail(self.log_file)
            )

    def _answers_metadata(self) -> bool:
        try:  # a cheap TCP probe first, so kafka-python does not log every refused connection
            socket.create_connection((self.host, self.port), timeout=1.0).close()
            with KafkaAdminClient(
                bootstrap_servers=self.bootstrap, request_timeout_ms=5000, bootstrap_timeout_ms=5000
            ) as admin:
                return bool(admin.describe_cluster().get("brokers"))
        except Exception:  # kafka-python raises assorted error types while a broker boots
            return False
