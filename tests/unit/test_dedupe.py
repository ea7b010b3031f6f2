"""Producer duplicates: a usage event_id seen again within the horizon counts once."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from churnwatch.domain.customer import CustomerState
from churnwatch.domain.dedupe import RecentIds, digest
from tests.unit.test_usage_agent import START, ListEmitter, Msg, plain_worker, sample_sum, usage

HOUR = 3600.0

arrivals = st.lists(
    st.tuples(st.integers(0, 30), st.integers(0, 72 * 3600)), min_size=1, max_size=200
)


@given(arrivals)
def test_an_id_is_new_once_while_it_stays_within_the_horizon(
    seen: list[tuple[int, int]],
) -> None:
    """Reference: an id is a duplicate iff it was admitted before, its first time is within
    the horizon of the newest time so far (what the memory guarantees), and no cap hit."""
    horizon, recent = 24 * HOUR, RecentIds()
    first: dict[int, int] = {}
    newest = 0
    for number, at in seen:
        new, forgotten = recent.admit(f"e{number}", at, horizon, cap=10_000)
        assert forgotten == 0
        if number in first and first[number] >= newest - horizon:
            assert not new
        if number not in first:
            assert new
            first[number] = at
        newest = max(newest, at)
        assert len(recent) <= max(
            64, 2 * len({n for n, t in first.items() if t >= newest - horizon})
        )


@given(st.integers(1, 50), st.integers(1, 400))
def test_the_cap_bounds_memory_and_forgets_the_oldest_first(cap: int, count: int) -> None:
    recent, forgotten = RecentIds(), 0
    for n in range(count):
        _, dropped = recent.admit(f"e{n}", n, horizon=10**9, cap=cap)
        forgotten += dropped
        assert len(recent) <= cap
    assert forgotten == max(0, count - cap)
    assert not recent.admit(f"e{count - 1}", count, horizon=10**9, cap=cap)[0]  # newest kept


@given(st.dictionaries(st.binary(min_size=8, max_size=8), st.integers(0, 2**40)))
def test_recent_ids_survive_the_changelog_codec(seen: dict[bytes, int]) -> None:
    written = RecentIds(seen).to_plain()
    restored = RecentIds.from_plain(written)
    assert len(restored) == len(seen)
    assert restored.to_plain() == written  # read and not admitted to: written back as read
    assert restored.prune(horizon=float("inf"), cap=len(seen)) == 0  # decodes them
    assert restored._seen == seen
    assert restored.to_plain() == written


def test_recent_ids_read_from_a_record_are_decoded_only_when_an_event_is_admitted() -> None:
    """A day's evaluation reads every record and never its ids: they stay as written."""
    written = RecentIds({digest("e1"): 100, digest("e2"): 200}).to_plain()
    restored = RecentIds.from_plain(written)
    assert restored._written is not None
    assert restored.to_plain() == written
    assert restored._written is not None  # written back (a changed record) without decoding
    assert restored.admit("e2", 300, horizon=1_000, cap=10) == (False, 0)
    assert restored._written is None
    assert restored.admit("e3", 300, horizon=1_000, cap=10) == (True, 0)
    assert len(restored) == 3


def test_recent_ids_with_unequal_halves_are_refused() -> None:
    written = RecentIds({digest("e1"): 100}).to_plain()
    with pytest.raises(ValueError, match="differ in count"):
        RecentIds.from_plain([written[0], written[1] + "AAAA"])


def test_a_producers_retry_within_the_horizon_counts_once_and_after_it_twice(
    tmp_path: Path,
) -> None:
    worker = plain_worker(tmp_path, ListEmitter(), limits={"dedupe_horizon_seconds": 2 * HOUR})
    topic = worker.settings.topics.usage
    messages = [
        Msg(topic, 0, 0, b"c-1", usage("c-1", START)),
        Msg(topic, 0, 1, b"c-1", usage("c-1", START)),  # retry: same event_id
        Msg(topic, 0, 2, b"c-1", usage("c-1", START + 3 * HOUR, n=1)),
    ]
    asyncio.run(worker.ingest.handle(messages))
    state: CustomerState = worker.customer("c-1")
    assert state.events == 2
    assert sample_sum(worker, "churnwatch_events_duplicate_total") == 1
    # Round trip through the record codec keeps the memory with the state.
    assert state.recent_ids is not None
    restored = CustomerState.from_plain(state.to_plain())
    assert restored.recent_ids is not None
    assert restored.recent_ids.to_plain() == state.recent_ids.to_plain()
    assert len(restored.recent_ids) == 1  # the first id is past the 2 h horizon: not written


def test_dedupe_can_be_turned_off(tmp_path: Path) -> None:
    worker = plain_worker(tmp_path, ListEmitter(), limits={"dedupe_horizon_seconds": 0})
    topic = worker.settings.topics.usage
    twice = [Msg(topic, 0, n, b"c-1", usage("c-1", START)) for n in range(2)]
    asyncio.run(worker.ingest.handle(twice))
    assert worker.customer("c-1").events == 2
    assert worker.customer("c-1").recent_ids is None


def test_ids_forgotten_for_the_cap_are_counted(tmp_path: Path) -> None:
    worker = plain_worker(tmp_path, ListEmitter(), limits={"dedupe_max_ids": 3})
    topic = worker.settings.topics.usage
    events = [Msg(topic, 0, n, b"c-1", usage("c-1", START + n, n=n)) for n in range(5)]
    asyncio.run(worker.ingest.handle(events))
    assert sample_sum(worker, "churnwatch_dedupe_forgotten_total") == 2


@given(arrivals, st.sets(st.integers(0, 199)), st.integers(1, 40))
def test_a_restored_memory_answers_and_writes_exactly_as_the_original(
    seen: list[tuple[int, int]], restore_at: set[int], cap: int
) -> None:
    """Restoring from the changelog at any point (which resets the lazy pruning) changes
    neither an answer nor the bytes written: a crash leaves no trace in the state."""
    horizon = 24 * HOUR
    original, restored = RecentIds(), RecentIds()
    for step, (number, at) in enumerate(seen):
        if step in restore_at:
            restored = RecentIds.from_plain(restored.to_plain())
        assert restored.admit(f"e{number}", at, horizon, cap) == original.admit(
            f"e{number}", at, horizon, cap
        )
        assert restored.to_plain() == original.to_plain()
