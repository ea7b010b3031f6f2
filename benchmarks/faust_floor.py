"""Faust's floor: the worker's Faust setup with nothing of churnwatch in it.

Where Faust itself caps the speed, this shows it: the same app settings, transport and batch
agent (`stream.take_events`) as `churnwatch worker`, with the limit's plain per-customer dict
update (benchmarks/consumers.py) as the only work. Two modes, run as contenders:
- `take`: fetch, batch, decode and update the dict; Faust acks every event after the batch.
- `changelog`: also writes each customer the batch changed once to a table's `data` and sends
  its changelog record with Faust's own `send_changelog` (to the source partition), as
  churnwatch did before it sent its records straight to the producer (`ProducerChangelog`).
What churnwatch adds on top (validation, dedupe, rules, outputs, metrics) is the difference
to its own row on the same workload.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

import faust
import orjson

from benchmarks.consumers import fold
from benchmarks.handshake import report_done, report_first
from config.settings import load_settings
from streams.app import _table, stream_settings
from streams.transport import App

MODES = ("take", "changelog")


def make_app(
    mode: str, bootstrap: str, topic: str, app_id: str, messages: int, datadir: str
) -> faust.App:
    """The worker's Faust settings (streams/app.py), one agent, no churnwatch code."""
    settings = load_settings()
    app = App(
        app_id,
        broker=f"kafka://{bootstrap}",
        store="memory://",
        datadir=datadir,
        topic_partitions=4,
        web_enabled=False,
        **stream_settings(settings),
    )
    source = app.topic(topic, key_type=bytes, value_type=bytes, value_serializer="raw")
    table = _table(app, "floor", "raw", 4)  # the worker's table setup: raw keys, acks=all
    state: dict[str, list[Any]] = {}
    seen = 0

    @app.agent(source, name="floor")
    async def floor(stream: Any) -> None:
        nonlocal seen
        async for events in stream.take_events(
            settings.batch_max_events, within=settings.batch_within_seconds
        ):
            changed: dict[str, int] = {}
            for event in events:
                message = event.message
                customer = fold(state, message.value)
                if customer is not None:
                    changed[customer] = message.partition
            if mode == "changelog":
                for customer, partition in changed.items():
                    value = orjson.dumps(state[customer])
                    table.data[customer] = value
                    table.send_changelog(partition, customer, value, value_serializer="raw")
            if not seen:
                print(flush=True)  # Faust's worker leaves a cursor escape without a newline
                report_first(len(events))
            seen += len(events)
            if seen >= messages:
                report_done(seen)  # returns once the harness has sampled this process
                os._exit(0)  # measured; nothing of this run is kept

    return app


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.faust_floor", description=__doc__)
    parser.add_argument("mode", choices=MODES)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True, help="the Faust app id (its consumer group)")
    parser.add_argument("--messages", type=int, required=True, help="stop after this many")
    parser.add_argument("--datadir", required=True, help="Faust's data directory")
    args = parser.parse_args(argv)
    app = make_app(args.mode, args.bootstrap, args.topic, args.group, args.messages, args.datadir)
    worker = faust.Worker(app, loglevel="WARNING", quiet=True, redirect_stdouts=False)
    worker.execute_from_commandline()


if __name__ == "__main__":
    main()
