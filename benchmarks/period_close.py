"""What closing a period costs, against closing an ordinary day, in one process.

`python -m benchmarks.period_close` folds every customer's daily usage across a month's end
(2024-01-20 to 2024-02-05 by default) through the real `IngestBatch`, as `benchmarks.fold`
does (no Kafka, no Faust; records are encoded for a changelog that counts them), and times
each batch in CPU seconds. The batches that evaluate a new day are told apart by the
partitions' clocks; the one that evaluates February 1 also closes January. It reports that
batch's CPU time and changelog records beside the median of the other day closes, and the
first day close (every customer's health published for the first time) apart.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchmarks.fold import MemoryTable, Sink, batches, ingest_for, messages
from benchmarks.report import _git
from benchmarks.workload import EVENT_TYPES, customer_id
from churnwatch.domain.engagement import SECONDS_PER_DAY
from streams.state import ClockBook

FIRST_DAY = datetime(2024, 1, 20, tzinfo=UTC).timestamp()
PERIOD_START = datetime(2024, 2, 1, tzinfo=UTC).timestamp()
PARTITIONS = 4


def daily_events(customers: int, days: int, per_day: int, seed: int) -> list[dict[str, Any]]:
    """`per_day` usage events of every customer on each of `days` days, in event-time order."""
    rng = random.Random(seed)
    made = []
    for number in range(customers):
        cid = customer_id(number)
        for day in range(days):
            for k in range(per_day):
                made.append(
                    {
                        "event_id": f"{cid}-{day}-{k}",
                        "customer_id": cid,
                        "occurred_at": round(
                            FIRST_DAY + day * SECONDS_PER_DAY + rng.uniform(0, SECONDS_PER_DAY), 3
                        ),
                        "event_type": rng.choice(EVENT_TYPES),
                        "user_id": f"u{rng.randint(1, 4)}",
                        "quantity": 1.0,
                    }
                )
    made.sort(key=lambda event: event["occurred_at"])
    return made


def measure(customers: int, days: int, per_day: int, batch_size: int, seed: int) -> dict[str, Any]:
    """Each batch's CPU seconds and changelog records, grouped by what the batch closed."""
    made = messages(daily_events(customers, days, per_day, seed), PARTITIONS, 1)
    table, sink = MemoryTable(), Sink()
    ingest = ingest_for(table, sink)
    clocks = ClockBook(table)
    loop = asyncio.new_event_loop()
    work = list(batches(made, batch_size))
    gc.collect()
    gc.freeze()  # as a worker does (cli.py): the pre-built input is not the worker's
    period_day = int(PERIOD_START // SECONDS_PER_DAY)
    first_close: dict[str, Any] | None = None
    period_close: dict[str, Any] | None = None
    day_closes: list[dict[str, Any]] = []
    other: list[float] = []
    for batch in work:
        before = {p: clocks.get(p).evaluated_day for p in range(PARTITIONS)}
        records = table.changelog_records
        started = time.process_time()
        loop.run_until_complete(ingest.handle(batch))
        seconds = time.process_time() - started
        after = {p: clocks.get(p).evaluated_day for p in range(PARTITIONS)}
        row = {"cpu_ms": round(seconds * 1000, 1), "records": table.changelog_records - records}
        # (day before, day after) of each partition whose clock evaluated a new day
        advanced = [
            (was, now)
            for was, now in zip(before.values(), after.values(), strict=True)
            if was is not None and now is not None and now != was
        ]
        if not advanced:
            other.append(seconds)
        elif first_close is None:
            first_close = row
        elif any(was < period_day <= now for was, now in advanced):
            period_close = row
        else:
            day_closes.append(row)
    gc.unfreeze()
    loop.close()
    if period_close is None or not day_closes:
        raise SystemExit("the workload closed no period, or no other day: give it more days")
    median_cpu = statistics.median(row["cpu_ms"] for row in day_closes)
    median_records = statistics.median(row["records"] for row in day_closes)
    return {
        "customers": customers,
        "events": len(made),  # one per message
        "batches": len(work),
        "period_close": period_close,
        "day_close_median": {"cpu_ms": median_cpu, "records": median_records},
        "day_closes": len(day_closes),
        "first_day_close": first_close,
        "batch_without_close_median_cpu_ms": round(statistics.median(other) * 1000, 1),
        "period_close_cpu_ratio": round(period_close["cpu_ms"] / median_cpu, 2),
        "period_close_records_ratio": round(period_close["records"] / median_records, 2),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.period_close",
        description="CPU and changelog records of the batch closing a month, against a day's.",
    )
    parser.add_argument("--customers", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=16, help="from 2024-01-20 (≥ 13)")
    parser.add_argument("--per-day", type=int, default=2, help="events per customer per day")
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, help="also write the result here (JSON)")
    args = parser.parse_args(argv)
    print(f"folding {args.customers:,} customers, {args.days} days ...", file=sys.stderr)
    result = measure(args.customers, args.days, args.per_day, args.batch, args.seed)
    result = {"benchmark": "period_close", "git": _git(), **result}
    text = json.dumps(result, indent=2)
    print(text)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
