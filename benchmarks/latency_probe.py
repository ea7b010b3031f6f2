"""`churnwatch worker` with timestamps along a message's path, for finding where latency goes.

Run in place of `benchmarks.cw_entry` (WorkerProcess(entry="benchmarks.latency_probe")). Writes
JSON lines to $CWPROBE_OUT: `fetch` when aiokafka's fetcher gets a broker response (request sent,
answered, records per partition), `drain` when Faust's consumer thread takes records out of the
fetcher (with their produce timestamps), `batch` when the ingest agent's take_events hands a
batch over (with the produce timestamps), and `done` when the batch's state and changelog records
were handed to the producer.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from aiokafka.consumer.fetcher import Fetcher

from churnwatch.cli import main
from streams.ingest import IngestBatch

_out = open(os.environ.get("CWPROBE_OUT", "/tmp/cwprobe.jsonl"), "a", buffering=1)  # noqa: SIM115


def _log(kind: str, **fields: Any) -> None:
    _out.write(json.dumps({"k": kind, "t": time.time(), **fields}) + "\n")


_proc_fetch = Fetcher._proc_fetch_request
_fetched = Fetcher.fetched_records
_handle = IngestBatch.handle


async def _proc_fetch_request(self: Any, assignment: Any, node_id: Any, request: Any) -> Any:
    sent = time.time()
    result = await _proc_fetch(self, assignment, node_id, request)
    parts = sum(len(p) for _, p in getattr(request, "topics", []) or [])
    _log("fetch", sent=sent, data=bool(result), partitions=parts)
    return result


async def fetched_records(
    self: Any, partitions: Any, timeout: float = 0, max_records: Any = None
) -> Any:
    asked = time.time()
    drained = await _fetched(self, partitions, timeout=timeout, max_records=max_records)
    stamps = [r.timestamp for records in drained.values() for r in records]
    if stamps:
        topics: dict[str, int] = {}
        for tp, records in drained.items():
            topics[tp.topic] = topics.get(tp.topic, 0) + len(records)
        _log(
            "drain",
            asked=asked,
            n=len(stamps),
            ts_min=min(stamps),
            ts_max=max(stamps),
            topics=topics,
        )
    return drained


async def handle(self: Any, messages: Any) -> None:
    started = time.time()
    stamps = [m.timestamp * 1000 for m in messages]  # Faust's are seconds
    await _handle(self, messages)
    if stamps:
        _log("batch", started=started, n=len(stamps), ts_min=min(stamps), ts_max=max(stamps))


Fetcher._proc_fetch_request = _proc_fetch_request  # type: ignore[method-assign]
Fetcher.fetched_records = fetched_records  # type: ignore[method-assign]
IngestBatch.handle = handle  # type: ignore[method-assign]

raise SystemExit(main(["worker"]))
