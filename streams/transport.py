"""Faust's aiokafka transport with the consumer's fetch long-poll as a setting.

faust-streaming 0.15.3 creates the worker's consumer with `fetch_max_wait_ms=1500` fixed. The
aiokafka fetcher keeps one fetch in flight per broker, and partitions that returned records are
left out of the next fetch until they are drained; that next fetch holds only partitions with
nothing new (the billing topic, the alerts the sink reads, ...), so the broker keeps it for the
whole 1.5 s and no new usage records can be asked for meanwhile: up to 1.5 s of latency per
fetch cycle at any rate. Measured in benchmarks/README.md (Latency); a short wait fixes it.
"""

from __future__ import annotations

from typing import Any

import faust
from faust.transport.drivers import aiokafka as faust_aiokafka

FAUST_FETCH_MAX_WAIT_MS = 1500  # what faust-streaming 0.15.3 passes


class _ConsumerThread(faust_aiokafka.AIOKafkaConsumerThread):
    def _create_worker_consumer(self, transport: Any) -> Any:
        consumer = super()._create_worker_consumer(transport)
        # aiokafka builds its fetcher from this at start(); the thread has not started it yet.
        consumer._fetch_max_wait_ms = getattr(
            self.app, "fetch_max_wait_ms", FAUST_FETCH_MAX_WAIT_MS
        )
        return consumer


class _Consumer(faust_aiokafka.Consumer):
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
