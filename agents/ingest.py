"""The ingest agent: batches of usage and billing messages, folded once per customer per batch."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from streams.app import Worker


def install(worker: Worker) -> None:
    settings = worker.settings

    @worker.app.agent(worker.input_topics, name="ingest")
    async def ingest(stream: Any) -> None:
        """Take events in batches; Faust acks them after the body, so offsets trail state."""
        async for events in stream.take_events(
            settings.batch_max_events, within=settings.batch_within_seconds
        ):
            async with worker.lock:
                messages = [event.message for event in events]
                if not worker.settled():  # a rebalance is under way: read these again after it
                    worker.ingest.defer(messages)
                else:
                    await worker.ingest.handle(messages)

    worker.agents["ingest"] = ingest
