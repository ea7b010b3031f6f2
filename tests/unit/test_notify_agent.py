"""The notifier agent through Faust's test seam (`agent.test_context()`), no broker."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from agents import notifier
from config import Settings, load_settings
from config.notify import NotifySettings
from streams.app import MemoryPeriodSink, Worker, create_worker
from streams.ingest import NoBacklog
from tests.unit.test_notify_routes import wire
from tests.unit.test_notify_service import ScriptedTransport


class SettingsWithNotify:
    """The worker's settings plus a `notify` section (until `Settings` carries one)."""

    def __init__(self, settings: Settings, notify: NotifySettings) -> None:
        self._settings = settings
        self.notify = notify

    def __getattr__(self, name: str) -> Any:
        return getattr(self._settings, name)


def make_worker(tmp_path: Path, notify: NotifySettings | None) -> Worker:
    settings = load_settings(data_dir=tmp_path)
    worker = create_worker(
        settings,
        CollectorRegistry(),
        periods=MemoryPeriodSink(),
        backlog=NoBacklog(),
        owned=lambda: {0},
    )
    if notify is not None:
        worker.settings = SettingsWithNotify(settings, notify)  # type: ignore[assignment]
    return worker


def counted(worker: Worker, result: str) -> float:
    value = worker.registry.get_sample_value(
        "churnwatch_notification_messages_total", {"result": result}
    )
    return value or 0.0


def outcome(worker: Worker, outcome: str) -> float:
    value = worker.registry.get_sample_value(
        "churnwatch_notifications_total", {"route": "hook", "outcome": outcome}
    )
    return value or 0.0


@pytest.mark.parametrize(
    "notify",
    [
        None,
        NotifySettings(),
        NotifySettings.model_validate(
            {"enabled": False, "routes": [{"name": "x", "target": {"kind": "webhook", "url": "u"}}]}
        ),
    ],
    ids=["no-section", "no-routes", "disabled"],
)
def test_nothing_is_installed_without_an_enabled_route(
    tmp_path: Path, notify: NotifySettings | None
) -> None:
    worker = make_worker(tmp_path, notify)

    notifier.install(worker, transport=ScriptedTransport())

    assert "notifier" not in worker.agents
    assert not any("notifier" in name for name in worker.app.agents)


def test_the_agent_notifies_and_skips_malformed_messages(tmp_path: Path) -> None:
    notify = NotifySettings.model_validate(
        {
            "routes": [
                {"name": "hook", "target": {"kind": "webhook", "url": "https://hook.test/x"}}
            ],
            "max_age_seconds": 0,
        }
    )
    worker = make_worker(tmp_path, notify)
    transport = ScriptedTransport()
    notifier.install(worker, transport=transport)
    worker.app.finalize()
    worker.app.flow_control.resume()

    async def scenario() -> None:
        async with worker.agents["notifier"].test_context() as agent:
            await agent.put(b"{not json", key=b"c-42")
            await agent.put(orjson.dumps(wire()), key=b"c-42")
            await agent.put(orjson.dumps(wire()), key=b"c-42")  # redelivered
            for _ in range(300):
                handled = outcome(worker, "sent") + outcome(worker, "deduplicated")
                if counted(worker, "malformed") + handled >= 3:
                    break
                await asyncio.sleep(0.01)

    asyncio.run(scenario())
    assert counted(worker, "malformed") == 1
    assert counted(worker, "routed") == 2
    assert [(url, body["alert_id"]) for url, body, _ in transport.posts] == [
        ("https://hook.test/x", "168c3da3-4b83-5445-b94f-7312fe71fa44")
    ]
    assert (outcome(worker, "sent"), outcome(worker, "deduplicated")) == (1, 1)
