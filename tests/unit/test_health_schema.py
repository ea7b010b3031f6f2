"""The customer-health and snooze-control schemas agree with the code that writes and reads them."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator

from churnwatch.domain.alerts import AlertEvent
from churnwatch.domain.billing import BillingEvent, parse_billing_message
from churnwatch.domain.customer import CustomerState
from churnwatch.domain.engagement import SECONDS_PER_DAY, day_of, ring_days_needed
from churnwatch.domain.events import Heartbeat, Snooze, UsageEvent, parse_usage_message
from churnwatch.domain.health import CustomerHealth, health_digest, health_of
from churnwatch.domain.partition import Item, PartitionClock, PartitionEngine
from churnwatch.exceptions import InvalidEventError
from config.settings import EventLimits, RuleSettings

SCHEMAS = Path(__file__).resolve().parents[2] / "docs" / "schemas"
HEALTH = "customer-health.schema.json"
SNOOZE = "snooze-control.schema.json"
FORMATS = Draft202012Validator.FORMAT_CHECKER
LIMITS = EventLimits()
NOW = datetime(2024, 3, 20, tzinfo=UTC).timestamp()

START = datetime(2024, 2, 1, tzinfo=UTC).timestamp()
DAY0 = day_of(START)
DAYS = 45
RULES = RuleSettings(milestones={"report_run": 1})
ENGINE = PartitionEngine(RULES, 3600.0, ring_days_needed(35, 3600.0))


def _schema(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMAS / name).read_text(encoding="utf-8"))
    return schema


def _validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(_schema(name), format_checker=FORMATS)


class DictStore:
    """CustomerStore over a dict."""

    def __init__(self) -> None:
        self.states: dict[str, CustomerState] = {}

    def get(self, customer_id: str) -> CustomerState | None:
        return self.states.get(customer_id)

    def put(self, state: CustomerState) -> None:
        self.states[state.customer_id] = state

    def in_partition(self, partition: int) -> Iterable[CustomerState]:
        return [s for s in self.states.values() if s.partition == partition]


def _at(day: int, hour: float = 12.0) -> float:
    return START + day * SECONDS_PER_DAY + hour * 3600


def _bill(customer: str, number: int, day: int, kind: Any, **fields: Any) -> BillingEvent:
    return BillingEvent(f"{customer}-b{number}", customer, _at(day, 1.0), kind, **fields)


def _started(customer: str, plan: str, channel: str, mrr_cents: int, seats: int) -> BillingEvent:
    return _bill(
        customer, 0, 0, "subscription.started", mrr_cents=mrr_cents, plan=plan, seats=seats,
        currency="EUR", attributes=(("channel", channel),),
    )  # fmt: skip


def _usage(customer: str, days: range, quantity: float, users: int = 2) -> list[UsageEvent]:
    return [
        UsageEvent(f"{customer}-{day}-{user}", customer, _at(day, 9 + user), "report_run",
                   quantity, f"{customer}-u{user}")
        for day in days
        for user in range(users)
    ]  # fmt: skip


def _history() -> list[Item]:
    """Six customers, one for each kind of health the topic carries."""
    billing: list[BillingEvent] = [
        _started("c-risk", "team", "sales", 19_900, 5),
        _started("c-steady", "starter", "self-serve", 4_900, 1),
        _started("c-gone", "team", "partner", 19_900, 3),
        _bill("c-gone", 1, 15, "subscription.canceled", effective_at=_at(25, 0.0)),
        _bill("c-gone", 2, 25, "subscription.ended"),
        _started("c-dunning", "business", "sales", 79_900, 20),
        _bill("c-dunning", 1, 30, "payment.failed"),
        _bill("c-dunning", 2, 35, "subscription.canceled", effective_at=_at(60, 0.0)),
        _started("c-idle", "starter", "sales", 4_900, 1),  # never uses the product
    ]
    usage: list[UsageEvent] = [
        *_usage("c-risk", range(0, 38), 8.0, users=3),
        *_usage("c-risk", range(38, DAYS), 0.5, users=1),  # usage falls: at risk
        *_usage("c-steady", range(DAYS), 10.0),
        *_usage("c-usage", range(DAYS), 5.0),  # no billing: unsubscribed
        *_usage("c-gone", range(0, 25), 10.0),
        *_usage("c-dunning", range(DAYS), 10.0),
    ]
    usage.sort(key=lambda event: event.occurred_at)
    items: list[Item] = [*billing, *usage, Heartbeat(_at(DAYS, 2.0), "usage")]
    return items


def _run(items: Sequence[Item]) -> tuple[DictStore, PartitionClock, list[CustomerHealth]]:
    store, clock = DictStore(), PartitionClock(0)
    result = ENGINE.process(clock, list(enumerate(items)), store)
    return store, clock, result.health


STORE, CLOCK, PUBLISHED = _run(_history())


def _wire(health: CustomerHealth) -> dict[str, Any]:
    """As a consumer of the topic receives it: through JSON."""
    wire: dict[str, Any] = json.loads(orjson.dumps(health.to_json_dict()))
    return wire


def test_the_history_publishes_every_kind_of_health() -> None:
    # What the schema tests below validate covers every status, both kinds of account and
    # alert id, and reasons with and without a measure.
    wires = [_wire(h) for h in PUBLISHED]
    latest = {w["customer_id"]: w["status"] for w in wires}
    assert latest == {
        "c-risk": "at_risk",
        "c-steady": "healthy",
        "c-usage": "unsubscribed",
        "c-gone": "churned",
        "c-dunning": "at_risk",
        "c-idle": "at_risk",
    }
    assert {w["account"] == {} for w in wires} == {True, False}
    assert {w["alert_id"] is None for w in wires} == {True, False}
    assert any(
        w["account"].get("cancel_at") and w["account"]["payment_failing_since"] for w in wires
    )
    assert any(w["window"]["first_seen"] is None for w in wires)
    reasons = [r for w in wires for r in w["reasons"]]
    assert {"measure" in r for r in reasons} == {True, False}
    assert {r["code"] for r in reasons} >= {
        "usage_drop", "onboarding_stalled", "payment_failed", "cancel_scheduled"
    }  # fmt: skip


def test_every_published_health_matches_the_schema() -> None:
    validator = _validator(HEALTH)
    for health in PUBLISHED:
        validator.validate(_wire(health))


def test_queried_health_matches_the_schema() -> None:
    validator = _validator(HEALTH)
    assert CLOCK.evaluated_day is not None
    for state in STORE.states.values():
        health = ENGINE.health(state, CLOCK.evaluated_day)
        validator.validate(_wire(health))


def test_the_digest_without_window_figures_is_the_published_healths() -> None:
    """The daily evaluation checks for a change without building the health to publish."""
    assert CLOCK.evaluated_day is not None
    digests = set()
    for state in STORE.states.values():
        for day in (CLOCK.evaluated_day, CLOCK.evaluated_day - 20):
            found, churned = ENGINE.assess(state, day)
            expected = health_of(state, day, found, churned, RULES).digest()
            assert health_digest(state, day, found, churned) == expected
            digests.add(expected)
    assert len(digests) > 3  # statuses, alerts and accounts differ among these customers


def test_health_of_a_customer_without_usage_or_billing_matches_the_schema() -> None:
    # A snooze can create a customer record before any event: empty window, no account.
    state = CustomerState.new("c-blank", 0, None, ENGINE.ring_days)
    found, churned = ENGINE.assess(state, DAY0 + 3)
    wire = _wire(health_of(state, DAY0 + 3, found, churned, RULES))

    _validator(HEALTH).validate(wire)
    assert (wire["status"], wire["account"], wire["segment"]) == ("unsubscribed", {}, {})


def test_schema_names_exactly_the_fields_written() -> None:
    schema = _schema(HEALTH)
    window = schema["properties"]["window"]
    account = schema["$defs"]["account"]
    for health in PUBLISHED:
        wire = _wire(health)
        assert set(wire) == set(schema["required"]) == set(schema["properties"])
        assert set(wire["window"]) == set(window["required"]) == set(window["properties"])
        if wire["account"]:
            assert set(wire["account"]) == set(account["required"]) == set(account["properties"])


def test_reasons_are_described_as_on_alerts() -> None:
    assert _schema(HEALTH)["$defs"]["reason"] == _schema("alert.schema.json")["$defs"]["reason"]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("status", "sick"),
        ("risk_score", 101),
        ("severity", "high"),
        ("alert_id", "not-a-uuid"),
        ("as_of", "2024-03-13"),
        ("mrr_at_stake", -1),
        ("account", {"subscribed": True}),
        ("window", {"recent_days": 7.0}),
        ("schema", "churnwatch.customer-health/2"),
    ],
)
def test_schema_refuses_what_the_code_never_writes(field: str, value: Any) -> None:
    wire = _wire(next(h for h in PUBLISHED if h.status == "at_risk"))
    validator = _validator(HEALTH)
    assert validator.is_valid(wire)
    assert not validator.is_valid({**wire, field: value})


def test_schema_tolerates_new_fields() -> None:
    wire = _wire(PUBLISHED[-1])
    wire["next_best_action"] = "call"
    wire["window"]["recent_sessions"] = 4
    _validator(HEALTH).validate(wire)


# --- snooze control messages ----------------------------------------------------------------


def _parse(message: Any, key: bytes | None = b"c-42") -> Any:
    return parse_usage_message(orjson.dumps(message), key, now=NOW, limits=LIMITS)


APRIL_FIRST = datetime(2024, 4, 1, tzinfo=UTC).timestamp()

VALID_SNOOZES: dict[str, tuple[dict[str, Any], float | None]] = {
    "rfc3339_z": ({"until": "2024-04-01T00:00:00Z"}, APRIL_FIRST),
    "rfc3339_offset": ({"until": "2024-04-01T02:00:00+02:00"}, APRIL_FIRST),
    "epoch": ({"until": 1_711_929_600}, APRIL_FIRST),
    "epoch_fraction": ({"until": 1_711_929_600.5}, APRIL_FIRST + 0.5),
    "lift": ({"until": None}, None),
    "extra_field": ({"until": None, "by": "ana"}, None),
}

INVALID_SNOOZES: dict[str, tuple[dict[str, Any], str]] = {
    "no_customer": ({"customer_id": ..., "until": None}, "missing_field"),
    "numeric_customer": ({"customer_id": 42, "until": None}, "wrong_type"),
    "empty_customer": ({"customer_id": "", "until": None}, "invalid_value"),
    "long_customer": ({"customer_id": "c" * 257, "until": None}, "invalid_value"),
    "naive_until": ({"until": "2024-04-01T00:00:00"}, "invalid_value"),
    "date_only_until": ({"until": "2024-04-01"}, "invalid_value"),
    "words_until": ({"until": "next week"}, "invalid_value"),
    "boolean_until": ({"until": True}, "wrong_type"),
    "list_until": ({"until": [2024, 4, 1]}, "wrong_type"),
}


def _snooze(fields: dict[str, Any]) -> dict[str, Any]:
    message = {"control": "snooze", "customer_id": "c-42", **fields}
    return {k: v for k, v in message.items() if v is not ...}


@pytest.mark.parametrize(("fields", "until"), VALID_SNOOZES.values(), ids=VALID_SNOOZES.keys())
def test_valid_snooze_passes_schema_and_parser(fields: dict[str, Any], until: float | None) -> None:
    message = _snooze(fields)
    _validator(SNOOZE).validate(message)
    assert _parse(message) == Snooze("c-42", until)


@pytest.mark.parametrize(("fields", "reason"), INVALID_SNOOZES.values(), ids=INVALID_SNOOZES.keys())
def test_invalid_snooze_fails_schema_and_parser(fields: dict[str, Any], reason: str) -> None:
    message = _snooze(fields)
    assert not _validator(SNOOZE).is_valid(message)
    with pytest.raises(InvalidEventError) as caught:
        _parse(message, key=None)
    assert caught.value.reason == reason


def test_schema_examples_parse_as_snoozes() -> None:
    for example in _schema(SNOOZE)["examples"]:
        assert isinstance(_parse(example, key=example["customer_id"].encode()), Snooze)


def test_a_snooze_keyed_by_another_customer_is_refused() -> None:
    with pytest.raises(InvalidEventError) as caught:
        _parse(_snooze({"until": None}), key=b"c-43")
    assert caught.value.reason == "key_mismatch"


def test_missing_until_lifts_though_the_schema_asks_for_it() -> None:
    # Documented: send `until` explicitly; the worker reads its absence as null (lift).
    message = _snooze({})
    assert not _validator(SNOOZE).is_valid(message)
    assert _parse(message) == Snooze("c-42", None)


def test_a_snooze_is_not_a_usage_event_nor_a_billing_message() -> None:
    message = _snooze({"until": None})
    assert not _validator("usage-event.schema.json").is_valid(message)
    with pytest.raises(InvalidEventError) as caught:
        parse_billing_message(orjson.dumps(message), b"c-42", now=NOW, limits=LIMITS)
    assert caught.value.reason == "invalid_value"


# --- what a parsed snooze does (docs/rules.md#snooze) -----------------------------------------


def _goes_quiet(controls: Sequence[dict[str, Any]]) -> list[AlertEvent]:
    """A usage-only customer used daily until day 19, then silent: usage_drop on day 24."""
    items: list[Item] = [_parse(message, key=b"c-q") for message in controls]
    items += _usage("c-q", range(20), 10.0)
    items.append(Heartbeat(_at(35, 2.0), "usage"))
    store, clock = DictStore(), PartitionClock(0)
    return ENGINE.process(clock, list(enumerate(items)), store).alerts


def _opened_day(alerts: list[AlertEvent]) -> int:
    return next(a.as_of_day for a in alerts if a.status == "opened") - DAY0


def test_a_snooze_keeps_the_alert_from_opening_until_it_ends() -> None:
    until = datetime(2024, 3, 2, tzinfo=UTC).isoformat()  # day 30, 00:00 UTC
    snooze = {"control": "snooze", "customer_id": "c-q", "until": until}

    assert _opened_day(_goes_quiet([])) == 24
    assert _opened_day(_goes_quiet([snooze])) == 30


def test_a_later_snooze_with_null_until_lifts_it() -> None:
    snooze = {"control": "snooze", "customer_id": "c-q", "until": "2024-03-02T00:00:00Z"}
    lift = {"control": "snooze", "customer_id": "c-q", "until": None}

    assert _opened_day(_goes_quiet([snooze, lift])) == 24
