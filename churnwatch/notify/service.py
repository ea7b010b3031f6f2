"""The Notifier: one alert transition in, a notification out on every route that takes it.

Per transition: parse (malformed: counted, skipped), skip it if older than `max_age_seconds`,
pick the routes, skip them all if the alert is snoozed, then per route, concurrently: claim it
in the ledger (a redelivery finds the claim and is `deduplicated`), take a rate-limit token
(waiting at most `max_delay_seconds`, else `rate_limited`), POST with retries (`sent` or
`failed`). A claim is released when the notification is not sent, so a later redelivery may
try again. The ledger failing (database down) fails the transition's notifications: never two
pages for one transition, at the price of a missed one, logged as `notification_ledger_failed`.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime
from typing import Any, Final

import orjson
import structlog

from churnwatch.domain.alertwire import Transition
from churnwatch.exceptions import InvalidEventError
from churnwatch.notify.delivery import Deliverer, HttpTransport
from churnwatch.notify.ledger import NotificationLedger
from churnwatch.notify.metrics import NotifierMetrics
from churnwatch.notify.payloads import outbound_for
from churnwatch.notify.ratelimit import TokenBucket
from churnwatch.notify.routes import select_routes
from churnwatch.notify.transition import parse_transition
from config.notify import NotifySettings, Route

log = structlog.get_logger(__name__)

REMEMBERED_ALERTS: Final = 50_000  # open alerts whose routes are remembered for their close


class Notifier:
    """Routes alert transitions to webhooks; see the module docstring for the steps."""

    def __init__(
        self,
        settings: NotifySettings,
        ledger: NotificationLedger,
        transport: HttpTransport,
        metrics: NotifierMetrics,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._ledger = ledger
        self._transport = transport
        self._metrics = metrics
        self._sleep = sleep
        self._monotonic = monotonic
        self._deliverer = Deliverer(
            transport,
            settings.retry,
            clock=wall_clock,
            sleep=sleep,
            rng=rng,
            on_attempt=metrics.count_attempt,
        )
        self._buckets: dict[str, TokenBucket] = {}
        # alert id -> routes sent one of its transitions, so its close reaches them too.
        self._notified: OrderedDict[str, set[str]] = OrderedDict()

    async def handle_bytes(self, value: bytes | None, now: datetime) -> dict[str, str]:
        """Decode a message of the alerts topic and handle it; never raises (but cancels)."""
        try:
            message = orjson.loads(value or b"")
        except orjson.JSONDecodeError:
            self._malformed("not_json", "the message value is not JSON")
            return {}
        try:
            return await self.handle(message, now)
        except Exception as exc:  # a bug here must not stop the agent: count, log, go on
            self._metrics.messages.labels(result="error").inc()
            log.error("notifier_crashed", error=repr(exc)[:300])
            return {}

    async def handle(self, transition: Mapping[str, Any], now: datetime) -> dict[str, str]:
        """Notify the routes that take `transition` as of `now`: route name -> outcome."""
        try:
            parsed = parse_transition(transition)
        except InvalidEventError as exc:
            self._malformed(exc.reason, exc.detail)
            return {}
        max_age = self._settings.max_age_seconds
        if max_age and (now - parsed.emitted_at).total_seconds() > max_age:
            self._metrics.messages.labels(result="stale").inc()
            return {}
        routes = select_routes(
            self._settings.routes, parsed, self._notified.get(parsed.alert_id, ())
        )
        if not routes:
            self._metrics.messages.labels(result="unrouted").inc()
            self._forget_if_closed(parsed)
            return {}
        self._metrics.messages.labels(result="routed").inc()
        try:
            snoozed = await asyncio.to_thread(self._ledger.is_snoozed, parsed.alert_id, now)
        except Exception as exc:
            return self._ledger_failed(routes, parsed, exc)
        if snoozed:
            self._forget_if_closed(parsed)
            for route in routes:
                self._count(route, "snoozed")
            return {route.name: "snoozed" for route in routes}
        outcomes = await asyncio.gather(*(self._notify(r, parsed, now) for r in routes))
        self._remember(parsed, routes, outcomes)
        return {route.name: outcome for route, outcome in zip(routes, outcomes, strict=True)}

    async def close(self) -> None:
        """Close the HTTP transport, if it holds anything open."""
        close = getattr(self._transport, "close", None)
        if close is not None:
            await close()

    async def _notify(self, route: Route, transition: Transition, now: datetime) -> str:
        key = (transition.alert_id, transition.status, transition.event_time, route.name)
        try:
            claimed = await asyncio.to_thread(self._ledger.claim_notification, *key)
        except Exception as exc:
            return self._ledger_failed([route], transition, exc)[route.name]
        if not claimed:
            return self._count(route, "deduplicated")
        try:
            outcome = await self._send(route, transition, now)
        except Exception as exc:  # a bug: this route fails, the others go on
            log.error("notification_crashed", route=route.name, error=repr(exc)[:300])
            outcome = "failed"
        except BaseException:
            # Cancelled (the worker stops): unclaim at once, so the redelivery after restart
            # sends it.
            self._ledger.release_notification(*key)
            raise
        if outcome != "sent":
            try:
                await asyncio.to_thread(self._ledger.release_notification, *key)
            except Exception as exc:
                log.error("notification_ledger_failed", route=route.name, error=repr(exc)[:300])
        return self._count(route, outcome)

    async def _send(self, route: Route, transition: Transition, now: datetime) -> str:
        limit = self._settings.rate_limit_of(route)
        stamp = now.timestamp()
        bucket = self._buckets.get(route.name)
        if bucket is None:
            bucket = TokenBucket.per_minute(limit.per_minute, limit.burst, stamp)
            self._buckets[route.name] = bucket
        wait = bucket.reserve(stamp, limit.max_delay_seconds)
        if wait is None:
            log.warning(
                "notification_rate_limited",
                route=route.name,
                alert_id=transition.alert_id,
                status=transition.status,
                per_minute=limit.per_minute,
            )
            return "rate_limited"
        if wait > 0:
            await self._sleep(wait)
        outbound = outbound_for(route.target, transition)
        if outbound is None:  # a status the target has no message for
            return "failed"
        started = self._monotonic()
        result = await self._deliverer.deliver(outbound, route.name)
        self._metrics.latency.labels(route=route.name).observe(self._monotonic() - started)
        if not result.sent:
            return "failed"
        log.info(
            "notification_sent",
            route=route.name,
            alert_id=transition.alert_id,
            status=transition.status,
            attempts=result.attempts,
        )
        return "sent"

    def _count(self, route: Route, outcome: str) -> str:
        self._metrics.notifications.labels(route=route.name, outcome=outcome).inc()
        return outcome

    def _ledger_failed(
        self, routes: list[Route], transition: Transition, exc: Exception
    ) -> dict[str, str]:
        log.error(
            "notification_ledger_failed",
            alert_id=transition.alert_id,
            status=transition.status,
            routes=[route.name for route in routes],
            error=repr(exc)[:300],
        )
        return {route.name: self._count(route, "failed") for route in routes}

    def _malformed(self, reason: str, detail: str) -> None:
        self._metrics.messages.labels(result="malformed").inc()
        log.warning("notification_message_malformed", reason=reason, detail=detail[:300])

    def _remember(self, transition: Transition, routes: list[Route], outcomes: list[str]) -> None:
        if self._forget_if_closed(transition):
            return
        reached = {r.name for r, o in zip(routes, outcomes, strict=True) if o in _REACHED}
        if not reached:
            return
        self._notified.setdefault(transition.alert_id, set()).update(reached)
        self._notified.move_to_end(transition.alert_id)
        while len(self._notified) > REMEMBERED_ALERTS:
            self._notified.popitem(last=False)

    def _forget_if_closed(self, transition: Transition) -> bool:
        if transition.closing:
            self._notified.pop(transition.alert_id, None)
        return transition.closing


_REACHED: Final = frozenset({"sent", "deduplicated"})  # the route has this alert
