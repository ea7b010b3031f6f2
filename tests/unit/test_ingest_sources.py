"""Dead letters of events refused after parsing carry what was sent, found again by position."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson

from streams.ingest import Source
from tests.unit.test_envelopes import envelope, event
from tests.unit.test_usage_agent import START, ListEmitter, Msg, plain_worker

HOUR = 3600.0


def test_a_source_gives_the_message_or_its_envelopes_event_alone() -> None:
    events = [event("c-1", START, 0), event("c-1", START + 1, 1, properties={"a": [1, 2]})]
    raw = envelope("c-1", events)
    message = Msg("usage-events", 0, 7, b"c-1", raw)
    assert Source(message).dead_letter_value() == raw
    assert Source(message, 1).dead_letter_value() == orjson.dumps(events[1])
    assert Source(Msg("usage-events", 0, 8, b"c-1", None)).dead_letter_value() == b""


def test_late_events_of_envelopes_are_dead_lettered_each_as_sent(tmp_path: Path) -> None:
    emitter = ListEmitter()
    worker = plain_worker(tmp_path, emitter)
    topic = worker.settings.topics.usage
    ahead = envelope("c-1", [event("c-1", START + 10 * HOUR, 0)])
    late = [event("c-2", START, 1, quantity=1.5), event("c-2", START + 60, 2, user_id="u-9")]
    mixed = [event("c-3", START + 10 * HOUR, 3), event("c-3", START + 30, 4)]
    asyncio.run(worker.ingest.handle([Msg(topic, 0, 0, b"c-1", ahead)]))
    asyncio.run(
        worker.ingest.handle(
            [
                Msg(topic, 0, 1, b"c-2", envelope("c-2", late)),
                Msg(topic, 0, 2, b"c-3", envelope("c-3", mixed)),
            ]
        )
    )

    dead = emitter.on(worker.settings.topics.dead_letters)
    found = [(dict(h or [])["churnwatch.source.index"], v) for _, v, h in dead]
    assert found == [
        (b"0", orjson.dumps(late[0])),
        (b"1", orjson.dumps(late[1])),
        (b"1", orjson.dumps(mixed[1])),
    ]
