"""The limit: raw aiokafka consumers, what Python can do at all on this broker.

`fetch` only fetches and counts; `decode_update` also decodes each JSON value with orjson and
folds it into a plain dict per customer (events, quantity, last seen): the same per-customer
update the other contenders do, without framework, validation, rules or durable state.
Each runs in its own process (`python -m benchmarks.consumers MODE ...`), joins a fresh group,
reads from offset 0 and stops once it has read the known number of messages.
"""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer

from benchmarks.handshake import report_done, report_first

MODES = ("fetch", "decode_update")
BATCH = 5000  # records per getmany: enough to make its own cost vanish


def fold(state: dict[str, list[Any]], value: bytes) -> str | None:
    """Apply one usage event to its customer's entry; return the customer (None for a
    control message, which carries none)."""
    event = orjson.loads(value)
    customer: str | None = event.get("customer_id")
    if customer is None:
        return None
    entry = state.get(customer)
    if entry is None:
        state[customer] = [1, event["quantity"], event["occurred_at"]]
        return customer
    entry[0] += 1
    entry[1] += event["quantity"]
    if event["occurred_at"] > entry[2]:
        entry[2] = event["occurred_at"]
    return customer


async def consume(mode: str, bootstrap: str, topic: str, group: str, messages: int) -> None:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    state: dict[str, list[Any]] = {}
    decode = mode == "decode_update"
    seen = 0
    started = False
    try:
        while seen < messages:
            batches = await consumer.getmany(timeout_ms=1000, max_records=BATCH)
            for records in batches.values():
                if decode:
                    for record in records:
                        fold(state, record.value)
                seen += len(records)
            if seen and not started:
                report_first(seen)  # the window opens after the first batch, without it
                started = True
        report_done(seen)
    finally:
        await consumer.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.consumers", description=__doc__)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--messages", type=int, required=True, help="stop after this many")
    args = parser.parse_args(argv)
    asyncio.run(consume(args.mode, args.bootstrap, args.topic, args.group, args.messages))


if __name__ == "__main__":
    main()
