"""The peer: a Quix Streams application doing the same stateful per-customer update.

Runs in the Quix venv (`python -m benchmarks.quix_app ...` from the repository root), so it
imports nothing of churnwatch. Quix's defaults otherwise: RocksDB state with its changelog
topic, at-least-once, commit every 5 s. Control messages (heartbeats, no key) are filtered out
before the stateful step, which Quix keys by the message key.
"""

from __future__ import annotations

import argparse
from typing import Any

from quixstreams import Application, State

from benchmarks.handshake import report_done, report_first


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.quix_app", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--topic", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--messages", type=int, required=True, help="stop after this many")
    parser.add_argument("--state-dir", required=True)
    args = parser.parse_args(argv)

    app = Application(
        broker_address=args.bootstrap,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )
    topic = app.topic(args.topic, key_deserializer="str", value_deserializer="json")
    seen = 0

    def counted() -> None:
        nonlocal seen
        seen += 1
        if seen == 1:
            report_first(seen)  # the window opens after the first message, without it
        if seen >= args.messages:
            report_done(seen)
            app.stop()

    def is_event(value: dict[str, Any]) -> bool:
        if "customer_id" in value:
            return True
        counted()  # a control message ends here
        return False

    def fold(value: dict[str, Any], state: State) -> None:
        entry = state.get("customer")
        if entry is None:
            entry = [1, value["quantity"], value["occurred_at"]]
        else:
            entry[0] += 1
            entry[1] += value["quantity"]
            entry[2] = max(entry[2], value["occurred_at"])
        state.set("customer", entry)
        counted()

    app.dataframe(topic).filter(is_event).update(fold, stateful=True)
    app.run()


if __name__ == "__main__":
    main()
