"""Fixtures for tests that talk to a real Kafka broker.

One embedded broker (churnwatch.broker.EmbeddedKafka) serves the whole session; tests keep out
of each other's way by using their own topics and consumer groups (`unique_name`).

Environment:
    CHURNWATCH_TEST_BROKER  bootstrap of an already running broker to use instead
    CHURNWATCH_CACHE_DIR    where the Kafka jars are cached (default ~/.cache/churnwatch)
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Protocol

import pytest
from kafka import KafkaAdminClient

from churnwatch.broker import EmbeddedKafka, ensure_kafka, free_port
from churnwatch.exceptions import MissingToolError
from tests.integration.postgres import postgres_database_url, postgres_url
from tests.integration.workers import WorkerEnv, WorkerProcess

__all__ = ["postgres_database_url", "postgres_url"]  # fixtures shared by integration tests

REPO_ROOT = Path(__file__).resolve().parents[2]
KAFKA_POM = REPO_ROOT / "deploy" / "kafka" / "pom.xml"


class CreateTopics(Protocol):
    def __call__(self, names: Iterable[str], partitions: int = 1) -> None: ...


@pytest.fixture(scope="session")
def kafka_lib_dir() -> Path:
    """The Kafka jars (fetched with Maven on the first run); skips if Java or Maven is missing."""
    cache_dir = os.environ.get("CHURNWATCH_CACHE_DIR") or Path.home() / ".cache" / "churnwatch"
    try:
        return ensure_kafka(Path(cache_dir), KAFKA_POM)
    except MissingToolError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="session")
def kafka_bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    """Bootstrap servers of the session's broker: an embedded one, or CHURNWATCH_TEST_BROKER."""
    external = os.environ.get("CHURNWATCH_TEST_BROKER")
    if external:
        yield external
        return
    lib_dir: Path = request.getfixturevalue("kafka_lib_dir")
    data_dir = tmp_path_factory.mktemp("kafka")
    with EmbeddedKafka(lib_dir, data_dir, port=free_port(), fresh=True) as kafka:
        yield kafka.bootstrap


@pytest.fixture
def unique_name() -> Callable[[str], str]:
    """Factory of names no other test (or earlier run on a shared broker) has used."""

    def make(kind: str = "topic") -> str:
        return f"test-{kind}-{uuid.uuid4().hex[:12]}"

    return make


@pytest.fixture
def create_topics(kafka_bootstrap: str) -> Iterator[CreateTopics]:
    """`create_topics(names, partitions)`: create topics and wait until every partition has a
    leader, so producers and consumers do not race the broker's metadata propagation."""
    admins: list[KafkaAdminClient] = []

    def create(names: Iterable[str], partitions: int = 1) -> None:
        if not admins:
            admins.append(KafkaAdminClient(bootstrap_servers=kafka_bootstrap))
        spec = {name: {"num_partitions": partitions, "replication_factor": 1} for name in names}
        admins[0].create_topics(spec, timeout_ms=30_000)
        admins[0].wait_for_topics(list(spec), timeout_ms=30_000)

    yield create
    for admin in admins:
        admin.close()


@pytest.fixture
def spawn() -> Iterator[Callable[[WorkerEnv, Path, str], WorkerProcess]]:
    """`spawn(env, workdir, name)`: start a worker process (once it has partitions); every one
    is stopped at the end, whatever happened."""
    started: list[WorkerProcess] = []

    def start(env: WorkerEnv, workdir: Path, name: str) -> WorkerProcess:
        worker = WorkerProcess(env, workdir, name)
        started.append(worker)
        return worker.start()

    yield start
    for worker in started:
        worker.stop()
