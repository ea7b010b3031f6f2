"""Prometheus metrics of the notifier, on a registry passed in.

Labels are bounded: route names come from the configuration; outcomes, attempt results and
message results are fixed sets (docs/notifier.md lists them).
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Delivery takes milliseconds to a minute (retries with backoff).
LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class NotifierMetrics:
    """Counters of messages, notifications and attempts; a histogram of delivery time."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.messages = Counter(
            "churnwatch_notification_messages",
            "Alert transitions read by the notifier: routed, unrouted, stale or malformed.",
            ["result"],
            registry=registry,
        )
        self.notifications = Counter(
            "churnwatch_notifications",
            "Notifications per route: sent, failed, deduplicated, snoozed or rate_limited.",
            ["route", "outcome"],
            registry=registry,
        )
        self.attempts = Counter(
            "churnwatch_notification_attempts",
            "HTTP attempts per route, by result (sent, throttled, server_error, rejected, "
            "timeout, connection_error, invalid_request).",
            ["route", "result"],
            registry=registry,
        )
        self.latency = Histogram(
            "churnwatch_notification_delivery_seconds",
            "Time to deliver a notification, retries included, rate-limit wait excluded.",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )

    def count_attempt(self, route: str, result: str) -> None:
        self.attempts.labels(route=route, result=result).inc()
