"""No secret reaches a log line or `churnwatch config`: keys and URLs are masked."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog

from churnwatch.cli import main
from churnwatch.logs import MASK, logging_config, redact
from config.settings import CONFIG_FILE_VARIABLE, ENV_PREFIX, load_settings

SECRET = "hunter2-Secret"


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(CONFIG_FILE_VARIABLE, "")
    for name in [name for name in os.environ if name.startswith(ENV_PREFIX)]:
        monkeypatch.delenv(name)


@pytest.fixture
def output() -> Iterator[tuple[io.StringIO, logging.Logger]]:
    """A stdlib logger rendering through churnwatch's formatter (JSON) into a buffer."""
    spec = logging_config("json", "INFO")["formatters"]["structlog"]
    formatter = structlog.stdlib.ProcessorFormatter(
        processors=spec["processors"], foreign_pre_chain=spec["foreign_pre_chain"]
    )
    buffer = io.StringIO()
    handler = logging.StreamHandler(buffer)
    handler.setFormatter(formatter)
    logger = logging.getLogger("churnwatch.test_redaction")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    logger.propagate = False
    yield buffer, logger
    logger.removeHandler(handler)


def test_structlog_events_with_secrets_are_masked(
    output: tuple[io.StringIO, logging.Logger],
) -> None:
    buffer, stdlib_logger = output
    log = structlog.wrap_logger(
        stdlib_logger,
        processors=[structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        wrapper_class=structlog.stdlib.BoundLogger,
    )
    settings = load_settings(
        api_token=SECRET,
        database_url=f"postgresql+psycopg://cw:{SECRET}@db/cw",
        kafka={"security_protocol": "SASL_SSL", "username": "cw", "password": SECRET},
    )

    log.info(
        "worker_starting",
        password=SECRET,
        headers={"Authorization": f"Bearer {SECRET}"},
        settings=settings.model_dump(mode="json"),
        database_url=settings.database_url,
        kafka=settings.kafka,  # rendered with repr: SecretStr shows stars
    )

    line = buffer.getvalue()
    assert SECRET not in line
    event = json.loads(line)
    assert event["password"] == MASK
    assert event["headers"]["Authorization"] == MASK
    assert event["settings"]["kafka"]["username"] == "cw"  # not a secret: kept
    assert event["database_url"] == f"postgresql+psycopg://cw:{MASK}@db/cw"


def test_library_log_lines_with_urls_are_masked(output: tuple[io.StringIO, logging.Logger]) -> None:
    buffer, logger = output

    logger.info("connecting to %s", f"https://user:{SECRET}@hooks.example.com/x")

    assert SECRET not in buffer.getvalue()
    assert f"user:{MASK}@hooks.example.com" in buffer.getvalue()


def test_redact_keeps_what_is_not_secret() -> None:
    plain = {"customer_id": "c-1", "password_file": "/run/secrets/kafka", "token": None}

    assert redact(plain) == plain
    assert redact(["kafka://k1:9092", ("a", 1)]) == ["kafka://k1:9092", ("a", 1)]


def test_churnwatch_config_prints_no_secret(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CHURNWATCH_API_TOKEN", SECRET)
    monkeypatch.setenv("CHURNWATCH_DATABASE_URL", f"postgresql+psycopg://cw:{SECRET}@db/cw")
    monkeypatch.setenv("CHURNWATCH_KAFKA__SECURITY_PROTOCOL", "SASL_PLAINTEXT")
    monkeypatch.setenv("CHURNWATCH_KAFKA__USERNAME", "cw")
    monkeypatch.setenv("CHURNWATCH_KAFKA__PASSWORD", SECRET)

    assert main(["config"]) == 0

    printed = capsys.readouterr().out
    assert SECRET not in printed
    shown = json.loads(printed)
    assert shown["kafka"]["password"] == MASK
    assert shown["database_url"] == f"postgresql+psycopg://cw:{MASK}@db/cw"
