"""[kafka] SASL settings against a real broker: a SASL_PLAINTEXT listener with PLAIN users.

The embedded broker gets a second listener, SASL_PLAINTEXT, whose JAAS configuration names
the users; its PLAINTEXT listener stays for the broker's own readiness probe. A worker and a
producer configured with `[kafka]` authenticate; a wrong password stops a command at start
with an error that says so.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path

import orjson
import pytest

from churnwatch import kafka_client
from churnwatch.broker import EmbeddedKafka, free_port
from config.settings import load_settings
from tests.integration.workers import WorkerEnv, WorkerProcess

pytestmark = [pytest.mark.integration, pytest.mark.slow]

USER, PASSWORD = "churnwatch", "s3cret-for-the-test"


class SaslKafka(EmbeddedKafka):
    """The embedded broker plus a SASL_PLAINTEXT (PLAIN) listener on `sasl_port`."""

    def __init__(self, *args: object, **kwargs: object) -> None:
        super().__init__(*args, **kwargs)  # type: ignore[arg-type]
        self.sasl_port = free_port()

    def _write_config(self) -> Path:
        props = super()._write_config()
        sasl = f"SASL_PLAINTEXT://{self.host}:{self.sasl_port}"
        jaas = (
            "org.apache.kafka.common.security.plain.PlainLoginModule required "
            f'user_{USER}="{PASSWORD}";'
        )
        lines = []
        for line in props.read_text().splitlines():
            if line.startswith(("listeners=", "advertised.listeners=")):
                line = line.replace("PLAINTEXT://", f"{sasl},PLAINTEXT://", 1)
            elif line.startswith("listener.security.protocol.map="):
                line += ",SASL_PLAINTEXT:SASL_PLAINTEXT"
            lines.append(line)
        lines += [
            "sasl.enabled.mechanisms=PLAIN",
            f"listener.name.sasl_plaintext.plain.sasl.jaas.config={jaas}",
        ]
        props.write_text("\n".join(lines) + "\n")
        return props


@pytest.fixture(scope="module")
def sasl_bootstrap(kafka_lib_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    if os.environ.get("CHURNWATCH_TEST_BROKER"):
        pytest.skip("needs its own embedded broker (CHURNWATCH_TEST_BROKER is set)")
    data_dir = tmp_path_factory.mktemp("kafka-sasl")
    with SaslKafka(kafka_lib_dir, data_dir, port=free_port(), fresh=True) as kafka:
        yield f"{kafka.host}:{kafka.sasl_port}"


def sasl_variables(password_file: Path) -> dict[str, str]:
    return {
        "CHURNWATCH_KAFKA__SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "CHURNWATCH_KAFKA__SASL_MECHANISM": "PLAIN",
        "CHURNWATCH_KAFKA__USERNAME": USER,
        "CHURNWATCH_KAFKA__PASSWORD_FILE": str(password_file),
    }


def test_a_worker_and_a_producer_authenticate(
    sasl_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(PASSWORD + "\n")
    env = WorkerEnv.unique(sasl_bootstrap, unique_name, **sasl_variables(secret))
    worker = WorkerProcess(env, tmp_path).start()  # topics, group, changelogs: all over SASL
    try:
        settings = load_settings(
            broker_url=f"kafka://{sasl_bootstrap}",
            kafka={"security_protocol": "SASL_PLAINTEXT", "username": USER,
                   "password_file": secret},
        )  # fmt: skip
        producer = kafka_client.producer(settings, acks="all")
        for n in range(200):
            customer = f"c-{n % 20}"
            event = {
                "event_id": f"e{n}",
                "customer_id": customer,
                "occurred_at": 1_577_836_800 + n * 60,
                "event_type": "login",
            }
            producer.send(env.usage_topic, key=customer.encode(), value=orjson.dumps(event))
        producer.flush()
        producer.close()

        assert worker.wait_for("churnwatch_events_processed_total", 200) == 200
    finally:
        worker.stop()


def test_a_wrong_password_stops_a_command_with_a_clear_error(
    sasl_bootstrap: str, unique_name: Callable[[str], str], tmp_path: Path
) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text("not-the-password")
    env = WorkerEnv.unique(sasl_bootstrap, unique_name, **sasl_variables(secret))

    done = env.run_cli("worker", timeout=120, check=False)  # its topic admin fails first

    assert done.returncode != 0
    assert "authentication failed" in done.stderr
    assert "not-the-password" not in done.stderr
