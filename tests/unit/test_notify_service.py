"""The Notifier's decisions with a scripted in-memory transport (no network)."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
import structlog
from prometheus_client import CollectorRegistry

from churnwatch.notify.delivery import HttpReply
from churnwatch.notify.ledger import MemoryNotificationLedger
from churnwatch.notify.metrics import NotifierMetrics
from churnwatch.notify.service import Notifier
from config.notify import NotifySettings
from tests.unit.test_notify_routes import wire

NOW = datetime(2024, 3, 12, 1, 0, 5, tzinfo=UTC)
EVENT_TIME = datetime(2024, 3, 12, tzinfo=UTC)
ALERT = "168c3da3-4b83-5445-b94f-7312fe71fa44"
SLACK_URL = "https://hooks.slack.com/services/T0/B0/SECRETPATH"


class ScriptedTransport:
    """Answers POSTs from a script (then 200) and records them."""

    def __init__(self, *script: HttpReply) -> None:
        self.script = list(script)
        self.posts: list[tuple[str, Any, Mapping[str, str]]] = []

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpReply:
        self.posts.append((url, orjson.loads(body), headers))
        return self.script.pop(0) if self.script else HttpReply(200, body="ok")


class FailingLedger(MemoryNotificationLedger):
    def is_snoozed(self, alert_id: str, at: datetime) -> bool:
        raise ConnectionError("database is down")


def settings(**notify: Any) -> NotifySettings:
    base: dict[str, Any] = {
        "routes": [{"name": "slack", "target": {"kind": "slack", "url": SLACK_URL}}],
        "retry": {"attempts": 3, "backoff_seconds": 0.01, "max_backoff_seconds": 1},
    }
    return NotifySettings.model_validate(base | notify)


class Harness:
    def __init__(
        self,
        notify: NotifySettings,
        transport: ScriptedTransport | None = None,
        ledger: MemoryNotificationLedger | None = None,
    ) -> None:
        self.registry = CollectorRegistry()
        self.transport = transport or ScriptedTransport()
        self.ledger = ledger or MemoryNotificationLedger()
        self.slept: list[float] = []
        self.notifier = Notifier(
            notify,
            self.ledger,
            self.transport,
            NotifierMetrics(self.registry),
            sleep=self._sleep,
            wall_clock=lambda: NOW,
        )

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)

    def handle(self, message: Mapping[str, Any], now: datetime = NOW) -> dict[str, str]:
        return asyncio.run(self.notifier.handle(message, now))

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def test_a_matching_transition_is_sent_and_counted() -> None:
    h = Harness(settings())

    assert h.handle(wire()) == {"slack": "sent"}
    assert len(h.transport.posts) == 1
    assert h.transport.posts[0][0] == SLACK_URL
    assert h.count("churnwatch_notifications_total", route="slack", outcome="sent") == 1
    assert h.count("churnwatch_notification_attempts_total", route="slack", result="sent") == 1
    assert h.count("churnwatch_notification_messages_total", result="routed") == 1
    assert h.count("churnwatch_notification_delivery_seconds_count", route="slack") == 1


def test_a_redelivered_transition_is_sent_once() -> None:
    h = Harness(settings())
    resend = wire(emitted_at="2024-03-12T01:00:04+00:00")  # only the wall clock differs

    assert h.handle(wire()) == {"slack": "sent"}
    assert h.handle(resend) == {"slack": "deduplicated"}
    assert len(h.transport.posts) == 1
    assert h.count("churnwatch_notifications_total", route="slack", outcome="deduplicated") == 1


def test_each_status_and_day_of_an_alert_is_its_own_notification() -> None:
    h = Harness(settings())

    h.handle(wire())
    h.handle(wire(status="escalated"))
    h.handle(wire(status="escalated", event_time="2024-03-13T00:00:00+00:00"))

    assert len(h.transport.posts) == 3


def test_a_snoozed_alert_is_not_sent() -> None:
    h = Harness(settings())
    h.ledger.snooze(ALERT, NOW + timedelta(hours=1))

    assert h.handle(wire()) == {"slack": "snoozed"}
    assert h.transport.posts == []
    assert h.count("churnwatch_notifications_total", route="slack", outcome="snoozed") == 1
    assert h.ledger.claimed() == 0  # once the snooze ends, a redelivery may still notify
    assert h.handle(wire(), now=NOW + timedelta(hours=2)) == {"slack": "sent"}


def test_a_final_failure_releases_the_claim_so_a_redelivery_retries() -> None:
    h = Harness(settings(), ScriptedTransport(HttpReply(404, body="no_service")))

    assert h.handle(wire()) == {"slack": "failed"}
    assert h.ledger.claimed() == 0
    assert h.handle(wire()) == {"slack": "sent"}
    assert len(h.transport.posts) == 2


def test_retries_back_off_and_then_give_up() -> None:
    h = Harness(
        settings(),
        ScriptedTransport(HttpReply(503), HttpReply(None, error="timeout"), HttpReply(500)),
    )

    assert h.handle(wire()) == {"slack": "failed"}
    assert len(h.transport.posts) == 3
    assert len(h.slept) == 2
    assert h.slept[0] <= h.slept[1] * 2  # doubling, jittered in the upper half
    assert (
        h.count("churnwatch_notification_attempts_total", route="slack", result="server_error") == 2
    )
    assert h.count("churnwatch_notification_attempts_total", route="slack", result="timeout") == 1


def test_a_retry_after_longer_than_the_cap_fails_without_retrying_early() -> None:
    h = Harness(settings(), ScriptedTransport(HttpReply(429, retry_after="3600")))

    assert h.handle(wire()) == {"slack": "failed"}
    assert len(h.transport.posts) == 1
    assert h.slept == []


def test_failure_logs_name_the_host_and_status_but_no_secret() -> None:
    h = Harness(settings(), ScriptedTransport(HttpReply(403, body="denied SECRETPATH")))

    with structlog.testing.capture_logs() as logs:
        h.handle(wire())

    failed = [entry for entry in logs if entry["event"] == "notification_failed"]
    assert len(failed) == 1
    assert failed[0]["host"] == "https://hooks.slack.com"
    assert failed[0]["status"] == 403
    assert "SECRETPATH" not in repr(logs)


def test_the_rate_limit_drops_beyond_the_bounded_wait() -> None:
    h = Harness(settings(rate_limit={"per_minute": 60, "burst": 2, "max_delay_seconds": 1.5}))
    outcomes = [h.handle(wire(alert_id=f"a-{n}")) for n in range(5)]

    assert [o["slack"] for o in outcomes] == [
        "sent",
        "sent",
        "sent",
        "rate_limited",
        "rate_limited",
    ]
    assert h.slept == [pytest.approx(1.0)]  # the third waited for its token
    assert h.count("churnwatch_notifications_total", route="slack", outcome="rate_limited") == 2
    assert h.ledger.claimed() == 3  # dropped ones are unclaimed
    assert h.handle(wire(alert_id="a-3"), now=NOW + timedelta(seconds=10)) == {"slack": "sent"}


def test_a_route_rate_limit_overrides_the_shared_one() -> None:
    notify = settings(
        rate_limit={"per_minute": 1, "burst": 1, "max_delay_seconds": 0},
        routes=[
            {
                "name": "roomy",
                "target": {"kind": "slack", "url": SLACK_URL},
                "rate_limit": {"per_minute": 600, "burst": 10},
            },
            {"name": "tight", "target": {"kind": "webhook", "url": "https://w/x"}},
        ],
    )
    h = Harness(notify)

    outcomes = [h.handle(wire(alert_id=f"a-{n}")) for n in range(3)]

    assert [o["roomy"] for o in outcomes] == ["sent"] * 3
    assert [o["tight"] for o in outcomes] == ["sent", "rate_limited", "rate_limited"]


def test_an_old_transition_is_skipped_as_stale() -> None:
    h = Harness(settings(max_age_seconds=3600))

    assert h.handle(wire(), now=NOW + timedelta(hours=2)) == {}
    assert h.transport.posts == []
    assert h.count("churnwatch_notification_messages_total", result="stale") == 1


def test_max_age_zero_notifies_whatever_the_age() -> None:
    h = Harness(settings(max_age_seconds=0))

    assert h.handle(wire(), now=NOW + timedelta(days=400)) == {"slack": "sent"}


def test_a_malformed_message_is_counted_and_skipped() -> None:
    h = Harness(settings())

    assert asyncio.run(h.notifier.handle_bytes(b"{not json", NOW)) == {}
    assert asyncio.run(h.notifier.handle_bytes(orjson.dumps({"alert_id": 1}), NOW)) == {}
    assert h.count("churnwatch_notification_messages_total", result="malformed") == 2
    assert h.transport.posts == []


def test_a_transition_no_route_takes_is_counted_as_unrouted() -> None:
    h = Harness(
        settings(
            routes=[
                {
                    "name": "big",
                    "match": {"min_mrr_at_stake": 1000},
                    "target": {"kind": "slack", "url": SLACK_URL},
                }
            ]
        )
    )

    assert h.handle(wire()) == {}
    assert h.count("churnwatch_notification_messages_total", result="unrouted") == 1


def test_a_close_follows_the_alert_to_the_routes_it_was_sent_to() -> None:
    pager = {
        "name": "pager",
        "match": {"min_severity": "critical"},
        "target": {"kind": "pagerduty", "routing_key": "k" * 32, "url": "https://pd/enqueue"},
    }
    h = Harness(settings(routes=[pager]))
    resolved = wire(status="resolved", severity="info", reasons=[], risk_score=0)

    h.handle(wire(severity="critical"))
    h.handle(resolved)

    actions = [(body["event_action"], body["dedup_key"]) for _, body, _ in h.transport.posts]
    assert actions == [("trigger", ALERT), ("resolve", ALERT)]
    # Forgotten once closed: an unrelated close of the same id later goes through the filters.
    assert h.handle(wire(status="churned", severity="info", reasons=[])) == {}


def test_a_ledger_failure_fails_the_notifications_and_sends_nothing() -> None:
    h = Harness(settings(), ledger=FailingLedger())

    assert h.handle(wire()) == {"slack": "failed"}
    assert h.transport.posts == []


def test_routes_are_delivered_independently() -> None:
    notify = settings(
        routes=[
            {"name": "a", "target": {"kind": "webhook", "url": "https://a/x"}},
            {"name": "b", "target": {"kind": "webhook", "url": "https://b/x"}},
        ]
    )
    h = Harness(notify, ScriptedTransport(HttpReply(400)))

    outcomes = h.handle(wire())

    assert sorted(outcomes.values()) == ["failed", "sent"]
    assert h.ledger.claimed() == 1


def test_claims_are_keyed_by_alert_status_event_time_and_route() -> None:
    ledger = MemoryNotificationLedger(max_claims=2)

    assert ledger.claim_notification(ALERT, "opened", EVENT_TIME, "r")
    assert not ledger.claim_notification(ALERT, "opened", EVENT_TIME, "r")
    assert ledger.claim_notification(ALERT, "opened", EVENT_TIME, "other")
    assert ledger.claim_notification(ALERT, "escalated", EVENT_TIME, "r")
    assert ledger.claimed() == 2  # the oldest claim made room
    assert ledger.claim_notification(ALERT, "opened", EVENT_TIME, "r")
