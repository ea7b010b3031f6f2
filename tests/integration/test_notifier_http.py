"""The notifier against a real local HTTP server (aiohttp.web on 127.0.0.1, a random port)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from churnwatch.notify.delivery import AiohttpTransport
from churnwatch.notify.ledger import MemoryNotificationLedger
from churnwatch.notify.metrics import NotifierMetrics
from churnwatch.notify.service import Notifier
from config.notify import NotifySettings
from tests.unit.test_notify_routes import wire

pytestmark = pytest.mark.integration

NOW = datetime(2024, 3, 12, 1, 0, 5, tzinfo=UTC)
ALERT = "168c3da3-4b83-5445-b94f-7312fe71fa44"
ROUTING_KEY = "0123456789abcdef0123456789abcdef"  # Events API v2 keys are 32 characters
SLACK_BLOCK_TYPES = {"header", "section", "context", "divider", "actions", "image", "rich_text"}
T = TypeVar("T")


@dataclass
class Reply:
    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    body: str = "ok"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: Any


class HookServer:
    """Answers POSTs on any path from a per-path script (then 200 "ok") and records them."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self.script: dict[str, list[Reply]] = {}
        self.base_url = ""

    def url(self, path: str) -> str:
        return f"{self.base_url}{path}"

    def paths(self) -> list[str]:
        return [r.path for r in self.received]

    async def _handle(self, request: web.Request) -> web.Response:
        self.received.append(Received(request.path_qs, dict(request.headers), await request.json()))
        queue = self.script.get(request.path, [])
        reply = queue.pop(0) if queue else Reply()
        if reply.delay:
            await asyncio.sleep(reply.delay)
        return web.Response(status=reply.status, headers=reply.headers, text=reply.body)


@asynccontextmanager
async def hook_server() -> AsyncIterator[HookServer]:
    server = HookServer()
    app = web.Application()
    app.router.add_post("/{tail:.*}", server._handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    server.base_url = f"http://{host}:{port}"
    try:
        yield server
    finally:
        await runner.cleanup()


class Run:
    """A Notifier with a real aiohttp transport; sleeps are real but recorded."""

    def __init__(self, notify: NotifySettings) -> None:
        self.registry = CollectorRegistry()
        self.ledger = MemoryNotificationLedger()
        self.transport = AiohttpTransport()
        self.slept: list[float] = []
        self.notifier = Notifier(
            notify,
            self.ledger,
            self.transport,
            NotifierMetrics(self.registry),
            sleep=self._sleep,
        )

    async def _sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        await asyncio.sleep(seconds)

    async def handle(self, message: dict[str, Any], now: datetime = NOW) -> dict[str, str]:
        return await self.notifier.handle(message, now)

    def count(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def settings(*routes: dict[str, Any], **notify: Any) -> NotifySettings:
    retry = {"attempts": 4, "backoff_seconds": 0.01, "max_backoff_seconds": 2, "timeout_seconds": 5}
    return NotifySettings.model_validate({"routes": list(routes), "retry": retry} | notify)


def run(scenario: Callable[[HookServer], Awaitable[T]]) -> T:
    async def main() -> T:
        async with hook_server() as server:
            return await scenario(server)

    return asyncio.run(main())


def slack(server: HookServer, name: str = "slack", **route: Any) -> dict[str, Any]:
    url = server.url(f"/services/T000/B000/{name}SECRET")
    return {"name": name, "target": {"kind": "slack", "url": url}} | route


def pagerduty(server: HookServer, **route: Any) -> dict[str, Any]:
    target = {"kind": "pagerduty", "url": server.url("/v2/enqueue"), "routing_key": ROUTING_KEY}
    return {"name": "pager", "target": target} | route


def assert_slack_incoming_webhook(request: Received) -> None:
    """Checks the message as Slack documents incoming webhooks and Block Kit limits."""
    assert request.headers["Content-Type"].startswith("application/json")
    message = request.body
    assert isinstance(message["text"], str)
    assert message["text"]
    blocks = message["blocks"]
    assert 0 < len(blocks) <= 50
    for block in blocks:
        assert block["type"] in SLACK_BLOCK_TYPES
        if block["type"] == "header":
            assert block["text"]["type"] == "plain_text"
            assert 0 < len(block["text"]["text"]) <= 150
        if block["type"] == "section":
            assert "text" in block or "fields" in block
            if "text" in block:
                assert block["text"]["type"] in {"mrkdwn", "plain_text"}
                assert 0 < len(block["text"]["text"]) <= 3000
            for item in block.get("fields", []):
                assert item["type"] in {"mrkdwn", "plain_text"}
                assert 0 < len(item["text"]) <= 2000
            assert len(block.get("fields", [])) <= 10
        if block["type"] == "context":
            assert 0 < len(block["elements"]) <= 10


def assert_pagerduty_event(request: Received) -> None:
    """Checks an Events API v2 event as PagerDuty documents it."""
    event = request.body
    assert event["routing_key"] == ROUTING_KEY
    assert event["event_action"] in {"trigger", "acknowledge", "resolve"}
    assert 0 < len(event["dedup_key"]) <= 255
    if event["event_action"] != "trigger":
        return
    payload = event["payload"]
    assert {"summary", "source", "severity"} <= set(payload)
    assert 0 < len(payload["summary"]) <= 1024
    assert payload["severity"] in {"critical", "error", "warning", "info"}
    assert datetime.fromisoformat(payload["timestamp"]).tzinfo is not None
    assert isinstance(payload["custom_details"], dict)


def test_slack_gets_an_incoming_webhook_message() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[Received]]:
        notifier = Run(settings(slack(server)))
        try:
            return await notifier.handle(wire(severity="critical")), server.received
        finally:
            await notifier.notifier.close()

    outcomes, received = run(scenario)
    assert outcomes == {"slack": "sent"}
    (request,) = received
    assert request.path == "/services/T000/B000/slackSECRET"
    assert request.headers["User-Agent"] == "churnwatch-notifier"
    assert_slack_incoming_webhook(request)
    text = repr(request.body)
    for shown in ("c-42", "critical", "55/100", "129.00 EUR", "usage_drop", "observed 2.1"):
        assert shown in text


def test_pagerduty_triggers_then_resolves_the_same_incident() -> None:
    async def scenario(server: HookServer) -> tuple[list[dict[str, str]], list[Received]]:
        accepted = Reply(202, body='{"status":"success","message":"Event processed"}')
        server.script["/v2/enqueue"] = [accepted] * 3
        notifier = Run(settings(pagerduty(server, match={"min_severity": "critical"})))
        transitions = [
            wire(severity="critical"),
            wire(status="escalated", severity="critical", risk_score=90),
            wire(status="resolved", severity="info", reasons=[], risk_score=0),
        ]
        try:
            return [await notifier.handle(t) for t in transitions], server.received
        finally:
            await notifier.notifier.close()

    outcomes, received = run(scenario)
    assert outcomes == [{"pager": "sent"}] * 3
    for request in received:
        assert_pagerduty_event(request)
    events = [(r.body["event_action"], r.body["dedup_key"]) for r in received]
    assert events == [("trigger", ALERT), ("trigger", ALERT), ("resolve", ALERT)]
    assert received[0].body["payload"]["severity"] == "critical"


def test_a_500_is_retried_until_it_succeeds() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[str], Run]:
        server.script["/services/T000/B000/slackSECRET"] = [Reply(500), Reply(502)]
        notifier = Run(settings(slack(server)))
        try:
            return await notifier.handle(wire()), server.paths(), notifier
        finally:
            await notifier.notifier.close()

    outcomes, paths, notifier = run(scenario)
    assert outcomes == {"slack": "sent"}
    assert len(paths) == 3
    assert len(notifier.slept) == 2
    attempts = "churnwatch_notification_attempts_total"
    assert notifier.count(attempts, route="slack", result="server_error") == 2
    assert notifier.count(attempts, route="slack", result="sent") == 1


def test_retry_after_on_429_is_waited_before_the_retry() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[str], Run]:
        server.script["/services/T000/B000/slackSECRET"] = [
            Reply(429, headers={"Retry-After": "1"}, body="rate_limited")
        ]
        notifier = Run(settings(slack(server)))
        try:
            return await notifier.handle(wire()), server.paths(), notifier
        finally:
            await notifier.notifier.close()

    outcomes, paths, notifier = run(scenario)
    assert outcomes == {"slack": "sent"}
    assert len(paths) == 2
    assert notifier.slept == [1.0]  # the server's word, not the 10 ms backoff


def test_a_400_is_final_and_releases_the_claim() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[str], Run]:
        server.script["/services/T000/B000/slackSECRET"] = [Reply(400, body="invalid_payload")]
        notifier = Run(settings(slack(server)))
        try:
            return await notifier.handle(wire()), server.paths(), notifier
        finally:
            await notifier.notifier.close()

    outcomes, paths, notifier = run(scenario)
    assert outcomes == {"slack": "failed"}
    assert len(paths) == 1
    assert notifier.slept == []
    assert notifier.ledger.claimed() == 0
    assert notifier.count("churnwatch_notifications_total", route="slack", outcome="failed") == 1


def test_a_timeout_is_retried() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[str], Run]:
        server.script["/services/T000/B000/slackSECRET"] = [Reply(delay=2.0)]
        notifier = Run(settings(slack(server), retry={"timeout_seconds": 0.2, "attempts": 3}))
        try:
            return await notifier.handle(wire()), server.paths(), notifier
        finally:
            await notifier.notifier.close()

    outcomes, paths, notifier = run(scenario)
    assert outcomes == {"slack": "sent"}
    assert len(paths) == 2
    attempts = "churnwatch_notification_attempts_total"
    assert notifier.count(attempts, route="slack", result="timeout") == 1


def test_an_unreachable_endpoint_fails_after_every_attempt() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], Run]:
        notifier = Run(
            settings(
                {"name": "gone", "target": {"kind": "webhook", "url": server.url("/x")}},
                retry={"attempts": 2, "backoff_seconds": 0.01, "max_backoff_seconds": 0.02},
            )
        )
        try:
            return await notifier.handle(wire()), notifier
        finally:
            await notifier.notifier.close()

    async def main() -> tuple[dict[str, str], Run]:
        async with hook_server() as server:
            pass  # closed: its port now refuses connections
        return await scenario(server)

    outcomes, notifier = asyncio.run(main())
    assert outcomes == {"gone": "failed"}
    attempts = "churnwatch_notification_attempts_total"
    assert notifier.count(attempts, route="gone", result="connection_error") == 2


def test_the_same_transition_delivered_twice_pages_once() -> None:
    async def scenario(server: HookServer) -> tuple[list[dict[str, str]], list[str]]:
        notifier = Run(settings(pagerduty(server), slack(server)))
        try:
            first = await notifier.handle(wire())
            again = await notifier.handle(wire(emitted_at="2024-03-12T01:07:00+00:00"))
            return [first, again], server.paths()
        finally:
            await notifier.notifier.close()

    outcomes, paths = run(scenario)
    assert outcomes == [
        {"pager": "sent", "slack": "sent"},
        {"pager": "deduplicated", "slack": "deduplicated"},
    ]
    assert sorted(paths) == ["/services/T000/B000/slackSECRET", "/v2/enqueue"]


def test_a_snoozed_alert_is_not_sent() -> None:
    async def scenario(server: HookServer) -> tuple[dict[str, str], list[str]]:
        notifier = Run(settings(pagerduty(server)))
        notifier.ledger.snooze(ALERT, NOW + timedelta(days=1))
        try:
            return await notifier.handle(wire()), server.paths()
        finally:
            await notifier.notifier.close()

    outcomes, paths = run(scenario)
    assert outcomes == {"pager": "snoozed"}
    assert paths == []


def test_the_rate_limit_is_respected() -> None:
    async def scenario(server: HookServer) -> tuple[list[str], list[str]]:
        limit = {"per_minute": 6, "burst": 2, "max_delay_seconds": 0}
        notifier = Run(settings(slack(server), rate_limit=limit))
        try:
            outcomes = [
                (await notifier.handle(wire(alert_id=f"alert-{n}")))["slack"] for n in range(5)
            ]
            return outcomes, server.paths()
        finally:
            await notifier.notifier.close()

    outcomes, paths = run(scenario)
    assert outcomes == ["sent", "sent", "rate_limited", "rate_limited", "rate_limited"]
    assert len(paths) == 2


def test_a_generic_webhook_gets_the_alert_itself_with_its_token() -> None:
    async def scenario(server: HookServer) -> list[Received]:
        target = {"kind": "webhook", "url": server.url("/hooks/churn"), "bearer_token": "tok"}
        notifier = Run(settings({"name": "crm", "target": target}))
        try:
            await notifier.handle(wire(extra={"kept": True}))
            return server.received
        finally:
            await notifier.notifier.close()

    (request,) = run(scenario)
    assert request.headers["Authorization"] == "Bearer tok"
    assert request.body == wire(extra={"kept": True})
