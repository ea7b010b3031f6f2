"""POST a notification, retrying what may pass later; the HTTP client sits behind a Protocol.

Retried: 5xx, 429, timeouts and connection errors, with doubling jittered backoff capped at
`retry.max_backoff_seconds`. A Retry-After header (seconds or an HTTP date) replaces the
backoff; one longer than the cap fails the notification rather than retrying early. Any other
answer (4xx, 3xx: redirects are not followed) is final. Logs name the route, the host and the
status, never a URL's path or query (Slack's token) nor a routing key.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol
from urllib.parse import urlsplit

import aiohttp
import orjson
import structlog

from churnwatch.notify.payloads import Outbound
from churnwatch.notify.retry import backoff_delay, retry_after_seconds, verdict
from config.notify import RetrySettings

log = structlog.get_logger(__name__)

USER_AGENT = "churnwatch-notifier"
BODY_EXCERPT_BYTES = 512


@dataclass(frozen=True, slots=True)
class HttpReply:
    """What one POST came back with; `status` None: no answer (`error` says why)."""

    status: int | None
    retry_after: str | None = None
    body: str = ""
    error: str | None = None  # timeout, connection_error, invalid_request


class HttpTransport(Protocol):
    """Sends one POST; never raises for network trouble (it is a reply without a status)."""

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpReply: ...


class AiohttpTransport:
    """HttpTransport on one aiohttp session, opened on first use (inside the running loop)."""

    def __init__(self, proxy: str | None = None) -> None:
        self._proxy = proxy
        self._session: aiohttp.ClientSession | None = None

    async def post(
        self, url: str, body: bytes, headers: Mapping[str, str], timeout: float
    ) -> HttpReply:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(headers={"User-Agent": USER_AGENT})
        try:
            async with self._session.post(
                url,
                data=body,
                headers={"Content-Type": "application/json", **headers},
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
                proxy=self._proxy,
            ) as response:
                excerpt = await response.content.read(BODY_EXCERPT_BYTES)
                return HttpReply(
                    status=response.status,
                    retry_after=response.headers.get("Retry-After"),
                    body=excerpt.decode("utf-8", "replace"),
                )
        except TimeoutError:
            return HttpReply(None, error="timeout")
        except (aiohttp.InvalidURL, ValueError):
            return HttpReply(None, error="invalid_request")
        except (aiohttp.ClientError, OSError):
            return HttpReply(None, error="connection_error")

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """How a notification ended: sent or not, after how many attempts, and why."""

    sent: bool
    attempts: int
    status: int | None
    detail: str  # sent, http_<status>, timeout, connection_error, retry_after_too_long, ...


def attempt_result(reply: HttpReply) -> str:
    """Bounded label of one attempt's outcome."""
    if reply.status is None:
        return reply.error or "connection_error"
    if 200 <= reply.status < 300:
        return "sent"
    if reply.status == 429:
        return "throttled"
    if reply.status >= 500:
        return "server_error"
    return "rejected"


def log_safe_host(url: str) -> str:
    """Scheme, host and port of `url`: what a log may say about a webhook."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")


def redact(text: str, secrets: tuple[str, ...]) -> str:
    """`text` with every secret replaced (a service may echo the request back)."""
    for secret in secrets:
        if secret:
            text = text.replace(secret, "***")
    return text


class Deliverer:
    """Delivers an Outbound with the retry policy; counts each attempt through `on_attempt`."""

    def __init__(
        self,
        transport: HttpTransport,
        retry: RetrySettings,
        *,
        clock: Callable[[], datetime],
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        on_attempt: Callable[[str, str], None] = lambda route, result: None,
    ) -> None:
        self._transport = transport
        self._retry = retry
        self._clock = clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._on_attempt = on_attempt

    async def deliver(self, outbound: Outbound, route: str) -> DeliveryResult:
        """POST until sent, a final answer, or the attempts run out."""
        retry = self._retry
        body = orjson.dumps(outbound.body)
        reply = HttpReply(None, error="not_attempted")
        for attempt in range(1, retry.attempts + 1):
            reply = await self._transport.post(
                outbound.url, body, outbound.headers, retry.timeout_seconds
            )
            self._on_attempt(route, attempt_result(reply))
            outcome = verdict(reply.status)
            if outcome == "sent":
                return DeliveryResult(True, attempt, reply.status, "sent")
            if outcome == "final" or reply.error == "invalid_request":
                return self._failed(outbound, route, attempt, reply, _detail(reply))
            if attempt == retry.attempts:
                break
            wait = backoff_delay(
                attempt, retry.backoff_seconds, retry.max_backoff_seconds, self._rng.random()
            )
            asked = retry_after_seconds(reply.retry_after, self._clock())
            if asked is not None:
                if asked > retry.max_backoff_seconds:
                    return self._failed(outbound, route, attempt, reply, "retry_after_too_long")
                wait = asked
            await self._sleep(wait)
        return self._failed(outbound, route, retry.attempts, reply, _detail(reply))

    def _failed(
        self, outbound: Outbound, route: str, attempts: int, reply: HttpReply, detail: str
    ) -> DeliveryResult:
        log.warning(
            "notification_failed",
            route=route,
            host=log_safe_host(outbound.url),
            status=reply.status,
            attempts=attempts,
            detail=detail,
            response=redact(reply.body, outbound.secrets)[:200] or None,
            retry_after=reply.retry_after,
        )
        return DeliveryResult(False, attempts, reply.status, detail)


def _detail(reply: HttpReply) -> str:
    return f"http_{reply.status}" if reply.status is not None else reply.error or "no_answer"
