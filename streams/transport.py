"""Faust's aiokafka transport with the consumer's fetch long-poll as a setting, seeks made in
the consumer's own thread (`seek`), and no dropping of messages read again after churnwatch
seeks back (`ReadOffsets`).

faust-streaming 0.15.3 creates the worker's consumer with `fetch_max_wait_ms=1500` fixed. The
aiokafka fetcher keeps one fetch in flight per broker, and partitions that returned records are
left out of the next fetch until they are drained; that next fetch holds only partitions with
nothing new (the billing topic, the alerts the sink reads, ...), so the broker keeps it for the
whole 1.5 s and no new usage records can be asked for meanwhile: up to 1.5 s of latency per
fetch cycle at any rate. Measured in benchmarks/README.md (Latency); a short wait fixes it.
"""

from __future__ import annotations

from collections import defaultdict
from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

FAUST_FETCH_MAX_WAIT_MS = 1500  # what faust-streaming 0.15.3 passes


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka builds its fetcher from this at start(); the thread has not started it yet.
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS
        )
        return consumer


class ReadOffsets(defaultdict[TP, int | None]):
    """Faust's read offsets, which stop filtering a partition that churnwatch rewound.

    Faust drops a fetched message older than the last offset it read from that partition.
    After churnwatch seeks an input back (a jump past the offset its clock expects), Faust's
    fetch loop can still be handing over messages it fetched before the seek, and records
    their offsets as read *after* it: the messages fetched again from the seek were then all
    dropped, and where they were the last of their partition it stalled for good (seen: a
    takeover in the fault tests, a survivor silent after `input_rewound`). From a rewind until
    the message at its offset comes back, nothing of that partition is dropped (a message
    applied already is skipped by the offset in its customer's record).
    """

    def __init__(self) -> None:
        super().__init__(lambda: None)
        self.rewound: dict[TP, int] = {}

    def rewind(self, tp: TP, offset: int) -> None:
        """Call after seeking `tp` back to `offset`."""
        self.rewound[tp] = offset

    def __getitem__(self, tp: TP) -> int | None:
        if tp in self.rewound:
            return None
        return super().__getitem__(tp)

    def __setitem__(self, tp: TP, offset: int | None) -> None:
        if tp in self.rewound and self.rewound[tp] == offset:
            del self.rewound[tp]
        super().__setitem__(tp, offset)


class _Consumer(faust_aiokafka.Consumer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._read_offset = ReadOffsets()

    def _new_consumer_thread(self) -> faust_aiokafka.AIOKafkaConsumerThread:
        return _ConsumerThread(self, loop=self.loop, beacon=self.beacon)


class _Transport(faust_aiokafka.Transport):
    Consumer = _Consumer


class App(faust.App):
    """faust.App whose consumer long-polls the broker for at most `fetch_max_wait_ms`."""

    def __init__(self, *args: Any, fetch_max_wait_ms: int, **kwargs: Any) -> None:
        self.fetch_max_wait_ms = fetch_max_wait_ms
        super().__init__(*args, **kwargs)

    def _new_transport(self) -> Any:
        scheme = str(self.conf.broker_consumer[0]).split(":", 1)[0]
        if scheme not in ("kafka", "aiokafka"):
            return super()._new_transport()
        return _Transport(self.conf.broker_consumer, self)


async def seek(app: faust.App, tp: TP, offset: int) -> None:
    """Move the consumer of `tp` to `offset`, in the consumer's own thread.

    Faust's `Consumer.seek` calls aiokafka's `seek` from the event loop's thread while the
    consumer thread may be handing out fetched records: seen as a fetcher crash
    (`KeyError` in aiokafka's `fetched_records`) when a second worker joined. Then, as Faust's
    seek does, the partition's read offset moves there, and nothing of it is dropped until
    the message at `offset` is read again (`ReadOffsets`).
    """
    consumer = app.consumer
    thread = getattr(consumer, "_thread", None)
    if thread is None:  # not Faust's threaded aiokafka consumer
        await consumer.seek(tp, offset)
        return
    await thread.call_thread(thread.seek, tp, offset)
    read_offsets = consumer._read_offset  # type: ignore[attr-defined]
    read_offsets[tp] = offset if offset else None
    if isinstance(read_offsets, ReadOffsets):
        read_offsets.rewind(tp, offset)
