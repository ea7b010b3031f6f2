"""Errors churnwatch raises on purpose.

ChurnwatchError
├── ConfigError            settings file or environment value is invalid
├── InvalidEventError      an input message does not decode or validate (carries a reason code)
│   └── InvalidAlertError  an alert message does not decode or validate (churnwatch.alert/1)
├── BrokerError            the embedded Kafka broker cannot be assembled, started or reached
│   └── MissingToolError   Java or Maven is not installed
├── AlertNotFoundError     the alert store has no alert with that id (also a LookupError)
└── InvalidAlertRequestError  an alert store filter, cursor, limit or time is invalid (ValueError)
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


class InvalidAlertError(InvalidEventError):
    """An alert message does not decode or validate; `reason` is a stable code as above."""


class AlertNotFoundError(ChurnwatchError, LookupError):
    """The alert store has no alert with this id (yet: the sink may not have written it)."""

    def __init__(self, alert_id: str) -> None:
        super().__init__(f"no alert with id {alert_id!r} in the store")
        self.alert_id = alert_id


class InvalidAlertRequestError(ChurnwatchError, ValueError):
    """A request to the alert store is invalid: a filter, cursor, limit, name or time."""
