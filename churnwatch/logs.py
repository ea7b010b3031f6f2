"""structlog set up once: JSON lines in production, readable lines on a terminal.

Faust, mode and aiokafka log through the standard library; the same formatter renders them,
so a worker's whole output is one format. Their chatty loggers sit at WARNING.
"""

from __future__ import annotations

import logging.config
import sys
from typing import Any, Literal

import structlog

QUIET_LOGGERS = ("aiokafka", "faust", "mode", "kafka", "aiohttp.access")


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
