"""Billing parsing edge cases and billing rules that once crashed a batch."""

from __future__ import annotations

import orjson
import pytest

from churnwatch.domain.billing import BillingEvent, Timeline, parse_billing_message
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.rules import payment_failed
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits, RuleSettings

NOW = 1_700_000_000.0
DAY = 86_400


@pytest.mark.parametrize("kind", [["subscription.started"], {"a": 1}, 7, True])
def test_a_billing_type_that_is_not_a_string_is_refused_not_crashed(kind: object) -> None:
    raw = orjson.dumps({"event_id": "e", "customer_id": "c", "occurred_at": NOW, "type": kind})
    with pytest.raises(InvalidEventError) as refused:
        parse_billing_message(raw, None, now=NOW, limits=EventLimits())
    assert refused.value.reason == "invalid_value"


def test_a_bad_effective_at_names_the_right_field() -> None:
    raw = orjson.dumps(
        {"event_id": "e", "customer_id": "c", "occurred_at": NOW,
         "type": "subscription.canceled", "effective_at": "next tuesday"}
    )  # fmt: skip
    with pytest.raises(InvalidEventError) as refused:
        parse_billing_message(raw, None, now=NOW, limits=EventLimits())
    assert "effective_at" in refused.value.detail


def test_payment_failed_with_no_grace_fires_at_full_strength() -> None:
    state = CustomerState.new("c", 0, None, 38)
    state.billing = Timeline()
    for event_id, kind, at in (("s", "subscription.started", 0), ("f", "payment.failed", DAY)):
        payload = {"event_id": event_id, "customer_id": "c", "occurred_at": NOW + at,
                   "type": kind, "mrr": 10}  # fmt: skip
        event = parse_billing_message(orjson.dumps(payload), None, now=NOW + 9 * DAY,
                                      limits=EventLimits())  # fmt: skip
        assert isinstance(event, BillingEvent)
        assert state.billing.insert(event)
    as_of_day = int((NOW + 3 * DAY) // DAY)
    reason = payment_failed(state, as_of_day, RuleSettings(payment_grace_days=0))
    assert reason is not None
    assert reason.strength == 1.0
