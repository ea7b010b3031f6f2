"""The notifier agent: alert transitions from the alerts topic to the configured webhooks.

Installs nothing unless `[notify]` has a route and is enabled. Without a ledger it keeps its
claims in memory: a redelivery after a restart or a rebalance may then page again (log line
`notifier_ledger_in_memory`); pass the SQL alert store for dedupe across workers and restarts.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import structlog

from churnwatch.notify.delivery import AiohttpTransport, HttpTransport
from churnwatch.notify.ledger import MemoryNotificationLedger, NotificationLedger
from churnwatch.notify.metrics import NotifierMetrics
from churnwatch.notify.service import Notifier
from config.notify import NotifySettings

if TYPE_CHECKING:
    from streams.app import Worker

log = structlog.get_logger(__name__)


def install(
    worker: Worker,
    ledger: NotificationLedger | None = None,
    transport: HttpTransport | None = None,
) -> None:
    settings: NotifySettings = getattr(worker.settings, "notify", None) or NotifySettings()
    if not settings.active:
        return
    if ledger is None:
        log.warning("notifier_ledger_in_memory", routes=[r.name for r in settings.routes])
        ledger = MemoryNotificationLedger()
    if transport is None:
        proxy = settings.proxy_url.get_secret_value() if settings.proxy_url else None
        transport = AiohttpTransport(proxy=proxy)
    notifier = Notifier(settings, ledger, transport, NotifierMetrics(worker.registry))
    alerts = worker.app.topic(
        worker.settings.topics.alerts,
        key_type=bytes,
        value_type=bytes,
        key_serializer="raw",
        value_serializer="raw",
        partitions=worker.settings.partitions,
    )

    @worker.app.agent(alerts, name="notifier")
    async def notify(stream: Any) -> None:
        """One transition at a time, in partition order: a close never overtakes its open."""
        try:
            async for value in stream:
                await notifier.handle_bytes(value, datetime.now(UTC))
        finally:
            await notifier.close()

    worker.agents["notifier"] = notify
