"""Errors churnwatch raises on purpose.

ChurnwatchError
├── ConfigError            settings file or environment value is invalid
├── InvalidEventError      an input message does not decode or validate (carries a reason code)
└── BrokerError            the embedded Kafka broker cannot be assembled, started or reached
    └── MissingToolError   Java or Maven is not installed
"""

from __future__ import annotations


class ChurnwatchError(Exception):
    """Root of every error churnwatch raises on purpose."""


class ConfigError(ChurnwatchError):
    """A setting in the file or the environment is invalid."""


class InvalidEventError(ChurnwatchError):
    """An input message does not decode or validate.

    `reason` is a short stable code (used as a metric label and in dead letters);
    `detail` says what exactly was wrong, for the people reading the dead letter.
    """

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"{reason}: {detail}")
        self.reason = reason
        self.detail = detail


class BrokerError(ChurnwatchError):
    """The embedded Kafka broker cannot be assembled, started or reached."""


class MissingToolError(BrokerError):
    """A tool the embedded broker needs (Java, Maven) is not installed."""
