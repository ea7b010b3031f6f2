"""Every Kafka client churnwatch makes gets its security settings from here (docs/security.md).

`[kafka]` settings go two ways: to Faust's `broker_credentials` (the worker) and to keyword
arguments for kafka-python (admin, producers and consumers of the CLI). Secret files are read
and TLS material is loaded here, when a client is made, so a missing or unreadable file fails
the command at start with the setting's name.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import faust
from faust.types.auth import CredentialsT
from kafka import KafkaConsumer, KafkaProducer
from kafka.admin import KafkaAdminClient
from kafka.errors import KafkaError

from churnwatch.exceptions import ConfigError
from config.settings import SASL_PROTOCOLS, TLS_PROTOCOLS, KafkaSecuritySettings, Settings


def sasl_password(kafka: KafkaSecuritySettings) -> str | None:
    """The SASL password, read from `password_file` when it is given that way."""
    if kafka.password is not None and kafka.password_file is not None:
        raise ConfigError("kafka.password and kafka.password_file are both set: keep one")
    if kafka.password is not None:
        return kafka.password.get_secret_value()
    if kafka.password_file is None:
        return None
    try:
        secret = kafka.password_file.read_text(encoding="utf-8").rstrip("\r\n")
    except OSError as exc:
        raise ConfigError(f"kafka.password_file cannot be read: {exc.strerror}") from None
    if not secret:
        raise ConfigError(f"kafka.password_file is empty: {kafka.password_file}")
    return secret


def ssl_context(kafka: KafkaSecuritySettings) -> ssl.SSLContext | None:
    """A client TLS context (SSL, SASL_SSL), verifying the brokers; None without TLS."""
    if kafka.security_protocol not in TLS_PROTOCOLS:
        return None
    try:
        context = ssl.create_default_context(
            ssl.Purpose.SERVER_AUTH, cafile=None if kafka.ca_file is None else str(kafka.ca_file)
        )
        context.check_hostname = kafka.check_hostname
        if kafka.cert_file is not None and kafka.key_file is not None:
            context.load_cert_chain(str(kafka.cert_file), str(kafka.key_file))
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"kafka TLS files (ca_file, cert_file, key_file) cannot be loaded: {exc}"
        ) from None
    return context


def faust_credentials(kafka: KafkaSecuritySettings) -> CredentialsT | None:
    """Faust's `broker_credentials` for the settings; None for PLAINTEXT."""
    context = ssl_context(kafka)
    if kafka.security_protocol in SASL_PROTOCOLS:
        return faust.SASLCredentials(
            username=kafka.username,
            password=sasl_password(kafka),
            ssl_context=context,
            mechanism=kafka.sasl_mechanism,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def kafka_python_options(kafka: KafkaSecuritySettings) -> dict[str, Any]:
    """Keyword arguments kafka-python's clients take for the settings (SCRAM uses the
    `sasl_plain_*` names too)."""
    options: dict[str, Any] = {"security_protocol": kafka.security_protocol}
    context = ssl_context(kafka)
    if context is not None:
        options["ssl_context"] = context
    if kafka.security_protocol in SASL_PROTOCOLS:
        options |= {
            "sasl_mechanism": kafka.sasl_mechanism,
            "sasl_plain_username": kafka.username,
            "sasl_plain_password": sasl_password(kafka),
        }
    return options


def client_options(settings: Settings) -> dict[str, Any]:
    """Bootstrap servers and security: what every kafka-python client of churnwatch gets."""
    return {
        "bootstrap_servers": settings.bootstrap_servers,
        **kafka_python_options(settings.kafka),
    }


class _AuthFailures(logging.Handler):
    """Watches kafka-python's warnings for signs that the broker refused the credentials:
    an authentication error, or (Kafka closes the socket on a wrong SASL PLAIN password)
    connections that were made and then dropped, none refused."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.failed = self.dropped = self.refused = False

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage().lower()
        self.failed |= "authenticationfailed" in text or "authentication fail" in text
        self.dropped |= "disconnected" in text
        self.refused |= "refused" in text

    def credentials_refused(self, sasl: bool) -> bool:
        return self.failed or (sasl and self.dropped and not self.refused)


@contextmanager
def explained_auth_failure(settings: Settings) -> Iterator[None]:
    """Turn kafka-python's bootstrap timeout into a ConfigError when the broker refused the
    credentials (kafka-python only logs that, then times out as if no broker answered)."""
    watcher = _AuthFailures()
    logger = logging.getLogger("kafka")
    logger.addHandler(watcher)
    try:
        yield
    except KafkaError:
        kafka = settings.kafka
        if not watcher.credentials_refused(kafka.security_protocol in SASL_PROTOCOLS):
            raise
        raise ConfigError(
            f"Kafka at {settings.broker_url} did not let user {kafka.username!r} in "
            f"({kafka.security_protocol} {kafka.sasl_mechanism}): authentication failed; "
            "check kafka.username and kafka.password (or kafka.password_file), and that the "
            "listener speaks that protocol and mechanism"
        ) from None
    finally:
        logger.removeHandler(watcher)


def admin_client(settings: Settings, **options: Any) -> KafkaAdminClient:
    """A kafka-python admin client with the settings' broker and security."""
    with explained_auth_failure(settings):
        return KafkaAdminClient(**client_options(settings), **options)


def producer(settings: Settings, **options: Any) -> KafkaProducer:
    """A kafka-python producer with the settings' broker and security."""
    with explained_auth_failure(settings):
        return KafkaProducer(**client_options(settings), **options)


def consumer(settings: Settings, **options: Any) -> KafkaConsumer:
    """A kafka-python consumer with the settings' broker and security."""
    with explained_auth_failure(settings):
        return KafkaConsumer(**client_options(settings), **options)
