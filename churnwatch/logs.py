"""structlog set up once: JSON lines in production, readable lines on a terminal.

Faust, mode and aiokafka log through the standard library; the same formatter renders them,
so a worker's whole output is one format. Their chatty loggers sit at WARNING. Every line, ours
or theirs, passes `redact_secrets` last: values under secret-sounding keys and passwords inside
URLs become stars (docs/security.md).
"""

from __future__ import annotations

import logging.config
import re
import sys
from collections.abc import MutableMapping
from typing import Any, Literal

import structlog

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "aiohttp.access")
MASK = "**********"  # what pydantic prints for a SecretStr
# Keys whose values are secrets wherever they appear (substring, case-insensitive).
SECRET_KEYS = re.compile(
    r"passw|secret|token|authorization|api[_-]?key|credential|routing_key|private[_-]?key|cookie",
    re.IGNORECASE,
)
# The password of a URL's userinfo: scheme://user:PASSWORD@host
URL_PASSWORD = re.compile(
    r"(?P<head>[a-z][a-z0-9+.-]*://[^:/@\s]*:)[^@\s]*(?P<at>@)", re.IGNORECASE
)


def redact(value: Any) -> Any:
    """`value` with secrets masked: under secret-sounding keys, and in URLs, at any depth."""
    if isinstance(value, str):
        return URL_PASSWORD.sub(rf"\g<head>{MASK}\g<at>", value)
    if isinstance(value, dict):
        return {
            key: MASK if _secret_key(key, item) else redact(item) for key, item in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(item) for item in value)
    return value


def _secret_key(key: object, item: object) -> bool:
    """A secret-sounding key holding something; `*_file` keys hold paths, not secrets."""
    if not isinstance(key, str) or item is None or key.endswith("_file"):
        return False
    return bool(SECRET_KEYS.search(key))


def redact_secrets(_: Any, __: str, event_dict: MutableMapping[str, Any]) -> Any:
    """structlog processor: mask secrets in every field of the event (see `redact`)."""
    return {
        key: value if key.startswith("_") else redact({key: value})[key]
        for key, value in event_dict.items()
    }


def _renderer(fmt: Literal["auto", "json", "console"]) -> Any:
    if fmt == "json" or (fmt == "auto" and not sys.stderr.isatty()):
        return structlog.processors.JSONRenderer()
    return structlog.dev.ConsoleRenderer(colors=sys.stderr.isatty())


def logging_config(fmt: Literal["auto", "json", "console"], level: str) -> dict[str, Any]:
    """A `logging.config.dictConfig` routing stdlib records through structlog's renderer."""
    shared = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "structlog": {
                "()": structlog.stdlib.ProcessorFormatter,
                "processors": [
                    structlog.stdlib.ProcessorFormatter.remove_processors_meta,
                    structlog.processors.format_exc_info,
                    redact_secrets,
                    _renderer(fmt),
                ],
                "foreign_pre_chain": shared,
            }
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "structlog",
                "stream": "ext://sys.stderr",
            }
        },
        "root": {"handlers": ["stderr"], "level": level},
        "loggers": {name: {"level": "WARNING"} for name in QUIET_LOGGERS},
    }


def configure_logging(
    fmt: Literal["auto", "json", "console"] = "auto", level: str = "INFO"
) -> dict[str, Any]:
    """Configure structlog and stdlib logging; return the dict config (Faust's worker wants it)."""
    config = logging_config(fmt, level)
    logging.config.dictConfig(config)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.stdlib.filter_by_level,
            structlog.stdlib.add_log_level,
            structlog.stdlib.add_logger_name,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.StackInfoRenderer(),
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    return config
