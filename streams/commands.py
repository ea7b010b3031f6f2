"""Operator commands to the stream: control messages the worker owning a customer applies.

A command goes to the customer's partition of the usage topic (keyed by its id, as its events
are), so the owning worker applies it in order with the customer's events (docs/topics.md).
"""

from __future__ import annotations

from datetime import UTC, datetime

import faust
import orjson


def snooze_message(customer_id: str, until: datetime | None) -> tuple[bytes, bytes]:
    """Key and value of a snooze control message; `until` None lifts a snooze."""
    if until is not None and until.tzinfo is None:
        raise ValueError(f"snooze until needs a time zone: {until!r}")
    value = {
        "control": "snooze",
        "customer_id": customer_id,
        "until": None if until is None else until.astimezone(UTC).isoformat(),
    }
    return customer_id.encode(), orjson.dumps(value)


async def send_snooze(app: faust.App, topic: str, customer_id: str, until: datetime | None) -> None:
    """Tell the stream to open no alert for the customer before `until`; wait for the broker.

    `app` is the worker's Faust app (started: its producer sends). The default partitioner
    puts the message in the partition of the customer's events.
    """
    key, value = snooze_message(customer_id, until)
    await app.producer.send_and_wait(topic, key, value, None, None, None)
