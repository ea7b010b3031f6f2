"""Rebalance hooks: hold batches from revoke to recovery; drop moved records; re-index.

Faust's revoke signal names every partition (eager rebalancing), including those that stay;
only partitions missing from the new assignment are really gone, so pruning waits for it.
Between the revoke and the end of recovery no batch may write: the memory store restores kept
partitions from their changelogs, and a write racing it can be overwritten by an older entry.
Batches taken meanwhile are deferred (read again after recovery, never committed).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faust.types import TP

from streams.codecs import partition_of
from streams.transport import seek

if TYPE_CHECKING:
    from streams.app import Worker


def install(worker: Worker) -> None:
    app = worker.app
    usage_topic = worker.settings.topics.usage

    @app.on_partitions_revoked.connect  # type: ignore[arg-type]  # as below
    async def hold_batches(sender: Any, *args: Any, signal: Any, **_: Any) -> None:
        """Let the batch in flight finish, flush what it wrote, hold the next ones."""
        async with worker.lock:  # Faust marks the app rebalancing: batches now defer
            await app.producer.flush()

    @app.on_partitions_assigned.connect  # type: ignore[arg-type]  # mode types receivers narrowly
    async def prune_moved(sender: Any, *args: Any, signal: Any, **_: Any) -> None:
        """Forget records of partitions now owned elsewhere; their owner restores them."""
        assigned: set[TP] = args[0]
        kept = {tp.partition for tp in assigned if tp.topic == usage_topic}
        async with worker.lock:
            data = worker.customers.data
            moved = [key for key, value in data.items() if partition_of(value) not in kept]
            for key in moved:
                data.pop(key, None)
            worker.index.clear()

    @app.on_rebalance_complete.connect  # type: ignore[arg-type]  # as above
    async def resume_where_applied(sender: Any, *_: Any, signal: Any, **__: Any) -> None:
        """Re-index restored records; read each owned input from the next offset its clock
        expects (0 when none), not from where the consumer stands.

        Messages deferred during the rebalance, or skipped by the consumer, may be the last of
        their partition: no later message would show the gap. Faust then seeks partitions that
        have a committed offset to it (never past an applied one); those without keep this.
        """
        async with worker.lock:
            worker.index.clear()
            for partition in worker.owned_partitions():
                expected = worker.clocks.get(partition).next_offsets
                for topic in (usage_topic, worker.settings.topics.billing):
                    await seek(app, TP(topic, partition), expected.get(topic, 0))
