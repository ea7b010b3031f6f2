"""`[kafka]` security settings: validated at load, reaching every Kafka client churnwatch makes."""

from __future__ import annotations

import argparse
import logging
import os
import shutil
import ssl
import subprocess
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faust
import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth
from kafka.errors import KafkaTimeoutError
from prometheus_client import CollectorRegistry

from churnwatch import alerts_cli, kafka_client, produce
from churnwatch.exceptions import ChurnwatchError, ConfigError
from config.settings import CONFIG_FILE_VARIABLE, ENV_PREFIX, Settings, load_settings
from streams import topics
from streams.app import MemoryPeriodSink, create_worker

SECRET = "s3cr3t-Pa55"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, "")
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A self-signed CA-like certificate and its key (openssl), usable as CA and client cert."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-subj", "/CN=localhost", "-keyout", str(key), "-out", str(cert)],
        check=True, capture_output=True,
    )  # fmt: skip
    return {"ca_file": cert, "cert_file": cert, "key_file": key}


def sasl(**kafka: Any) -> Settings:
    base = {"security_protocol": "SASL_PLAINTEXT", "username": "cw", "password": SECRET}
    return load_settings(kafka=base | kafka)


def test_plaintext_is_the_default_and_adds_nothing() -> None:
    settings = load_settings()

    assert settings.kafka.security_protocol == "PLAINTEXT"
    assert kafka_client.faust_credentials(settings.kafka) is None
    assert kafka_client.kafka_python_options(settings.kafka) == {"security_protocol": "PLAINTEXT"}


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_reaches_faust_and_kafka_python(mechanism: str) -> None:
    kafka = sasl(sasl_mechanism=mechanism).kafka

    credentials = kafka_client.faust_credentials(kafka)
    assert isinstance(credentials, faust.SASLCredentials)
    # What Faust hands aiokafka (its consumer, producer and admin alike):
    assert credentials_to_aiokafka_auth(credentials) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "cw",
        "sasl_plain_password": SECRET,
        "ssl_context": None,
    }
    assert kafka_client.kafka_python_options(kafka) == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "cw",
        "sasl_plain_password": SECRET,
    }


def test_sasl_ssl_with_scram_and_a_ca(tls_files: dict[str, Path]) -> None:
    kafka = sasl(
        security_protocol="SASL_SSL", sasl_mechanism="SCRAM-SHA-512", ca_file=tls_files["ca_file"]
    ).kafka

    auth = credentials_to_aiokafka_auth(kafka_client.faust_credentials(kafka))
    options = kafka_client.kafka_python_options(kafka)

    for given in (auth, options):
        assert given["security_protocol"] == "SASL_SSL"
        assert given["sasl_mechanism"] == "SCRAM-SHA-512"
        context = given["ssl_context"]
        assert isinstance(context, ssl.SSLContext)
        assert context.verify_mode == ssl.CERT_REQUIRED
        assert context.check_hostname
        assert context.get_ca_certs()  # the CA file was loaded


def test_ssl_with_client_certificate_and_no_hostname_check(tls_files: dict[str, Path]) -> None:
    kafka = load_settings(
        kafka={"security_protocol": "SSL", "check_hostname": False, **tls_files}
    ).kafka

    credentials = kafka_client.faust_credentials(kafka)
    assert isinstance(credentials, faust.SSLCredentials)
    assert credentials_to_aiokafka_auth(credentials)["security_protocol"] == "SSL"
    assert not credentials.context.check_hostname
    assert credentials.context.verify_mode == ssl.CERT_REQUIRED  # still verifies the chain
    assert kafka_client.kafka_python_options(kafka)["security_protocol"] == "SSL"


def test_password_from_a_file(tmp_path: Path) -> None:
    secret = tmp_path / "kafka-password"
    secret.write_text(SECRET + "\n", encoding="utf-8")
    kafka = load_settings(
        kafka={"security_protocol": "SASL_PLAINTEXT", "username": "cw", "password_file": secret}
    ).kafka

    assert kafka_client.kafka_python_options(kafka)["sasl_plain_password"] == SECRET
    assert SECRET not in repr(kafka)  # the settings hold the path, never the secret


def test_settings_from_environment_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHURNWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CHURNWATCH_KAFKA__SASL_MECHANISM", "SCRAM-SHA-256")
    monkeypatch.setenv("CHURNWATCH_KAFKA__USERNAME", "cw")
    monkeypatch.setenv("CHURNWATCH_KAFKA__PASSWORD", SECRET)

    kafka = load_settings().kafka

    assert kafka.sasl_mechanism == "SCRAM-SHA-256"
    assert SECRET not in str(kafka)


@pytest.mark.parametrize(
    ("kafka", "says"),
    [
        ({"security_protocol": "SASL_SSL", "password": "x"}, "needs a username"),
        ({"security_protocol": "SASL_PLAINTEXT", "username": "cw"}, "needs password"),
        ({"username": "cw", "password": "x"}, "use SASL_PLAINTEXT or SASL_SSL"),
        ({"security_protocol": "SASL_PLAINTEXT", "username": "cw", "password": "x",
          "ca_file": "/etc/ca.pem"}, "ca_file set but security_protocol is SASL_PLAINTEXT"),
        ({"check_hostname": False}, "check_hostname set but security_protocol is PLAINTEXT"),
        ({"security_protocol": "SSL", "cert_file": "/etc/c.pem"}, "cert_file and key_file"),
        ({"security_protocol": "SASL_SSL"}, "needs a username"),
        ({"security_protocol": "TLS"}, "kafka.security_protocol"),
        ({"sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism"),
    ],
)  # fmt: skip
def test_inconsistent_settings_fail_at_load(kafka: dict[str, Any], says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        load_settings(kafka=kafka)


def test_unreadable_files_fail_when_the_clients_are_made(tmp_path: Path) -> None:
    both = sasl(password_file=tmp_path / "password").kafka
    with pytest.raises(ConfigError, match="both set"):
        kafka_client.kafka_python_options(both)
    missing = sasl(password=None, password_file=tmp_path / "missing").kafka
    with pytest.raises(ConfigError, match=r"kafka\.password_file cannot be read"):
        kafka_client.faust_credentials(missing)
    no_ca = load_settings(kafka={"security_protocol": "SSL", "ca_file": tmp_path / "ca.pem"})
    with pytest.raises(ConfigError, match="TLS files"):
        kafka_client.kafka_python_options(no_ca.kafka)


class Recorder:
    """Stands in for a kafka-python client class: records the keyword arguments."""

    def __init__(self) -> None:
        self.calls: list[dict[str, Any]] = []

    def __call__(self, **kwargs: Any) -> Any:
        self.calls.append(kwargs)
        return FakeClient()


class FakeClient:
    def __getattr__(self, name: str) -> Any:
        return lambda *args, **kwargs: FakeClient()

    def list_topics(self) -> list[str]:
        return []

    def partitions_for_topic(self, topic: str) -> set[int]:
        return set()

    def describe_topics(self, names: list[str]) -> list[dict[str, Any]]:
        return [{"name": name, "partitions": [0, 1, 2, 3]} for name in names]


EXPECTED = {
    "bootstrap_servers": ["k1:9093"],
    "security_protocol": "SASL_PLAINTEXT",
    "sasl_mechanism": "PLAIN",
    "sasl_plain_username": "cw",
    "sasl_plain_password": SECRET,
}


def client_settings() -> Settings:
    return sasl().model_copy(update={"broker_url": "kafka://k1:9093"})


def test_every_kafka_python_client_of_churnwatch_gets_the_settings(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    made: dict[str, Recorder] = {}
    for name in ("KafkaAdminClient", "KafkaProducer", "KafkaConsumer"):
        made[name] = Recorder()
        monkeypatch.setattr(kafka_client, name, made[name])
    monkeypatch.setattr(produce, "KafkaProducer", made["KafkaProducer"])
    settings = client_settings()

    topics.ensure_topics(settings)  # the worker's and the CLI's admin client
    produce.make_producer(
        settings.bootstrap_servers, kafka_client.kafka_python_options(settings.kafka)
    )  # simulate, replay, demo
    alerts_cli._tell_stream(settings, "c-1", datetime(2030, 1, 1, tzinfo=UTC))  # alerts snooze

    assert made["KafkaAdminClient"].calls[0].items() >= EXPECTED.items()
    assert len(made["KafkaProducer"].calls) == 2
    for call in made["KafkaProducer"].calls:
        assert call.items() >= EXPECTED.items()


def test_alerts_tail_consumer_gets_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    recorder = Recorder()
    monkeypatch.setattr(kafka_client, "KafkaConsumer", recorder)
    settings = client_settings()
    monkeypatch.setattr(alerts_cli, "_settings", lambda args: settings)

    args = alerts_cli_args("tail")
    with pytest.raises(ChurnwatchError, match="does not exist"):  # the fake has no topics
        alerts_cli._alerts_tail(args)

    assert recorder.calls[0].items() >= EXPECTED.items()


def alerts_cli_args(*argv: str) -> Any:
    return argparse.Namespace(topic=None, from_beginning=False)


def test_the_worker_gets_broker_credentials(tmp_path: Path) -> None:
    settings = sasl(sasl_mechanism="SCRAM-SHA-256").model_copy(update={"data_dir": tmp_path})

    worker = create_worker(settings, CollectorRegistry(), periods=MemoryPeriodSink())

    auth = credentials_to_aiokafka_auth(worker.app.conf.broker_credentials)
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert auth["sasl_plain_password"] == SECRET


@pytest.mark.parametrize(
    ("warnings", "explained"),
    [
        (["Bootstrap connection to bootstrap-0 failed: KafkaConnectionError: socket disconnected"],
         True),  # what Kafka does with a wrong SASL PLAIN password: it hangs up
        (["Connection failed: SaslAuthenticationFailedError: Authentication failed"], True),
        (["Bootstrap connection to bootstrap-0 failed: [Errno 111] Connection refused"], False),
        ([], False),
    ],
)  # fmt: skip
def test_refused_credentials_are_named_not_a_timeout(warnings: list[str], explained: bool) -> None:
    settings = sasl()
    log = logging.getLogger("kafka.net.manager")

    expected = ConfigError if explained else KafkaTimeoutError
    with pytest.raises(expected) as raised, kafka_client.explained_auth_failure(settings):  # noqa: PT012
        for text in warnings:
            log.warning(text)
        raise KafkaTimeoutError("Unable to bootstrap from ['k1:9093']")

    if explained:
        assert "user 'cw'" in str(raised.value)
        assert "authentication failed" in str(raised.value)
        assert SECRET not in str(raised.value)
