"""The notifier's reading of an alert transition: `churnwatch.domain.alertwire`, not strict.

A router may take what the store refuses: a status it does not know (no route takes it, and
PagerDuty has no action for it), a time without offset (read as UTC), a long currency text.
Everything else is validated exactly as the store validates it.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from churnwatch.domain import alertwire
from churnwatch.domain.alertwire import Transition as Transition


def parse_transition(message: Mapping[str, Any]) -> Transition:
    """The transition in `message`; InvalidAlertError (an InvalidEventError) if malformed."""
    return alertwire.parse_transition(message, strict=False)
