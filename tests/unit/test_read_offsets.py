"""After a rewind, Faust's fetch loop drops nothing of that partition until it is back."""

from __future__ import annotations

from faust.types import TP

from streams.transport import ReadOffsets

USAGE = TP("usage", 1)
OTHER = TP("usage", 2)


def fetch_loop_passes(offsets: ReadOffsets, tp: TP, offset: int) -> bool:
    """What Faust's drain loop does with a fetched message (faust/transport/consumer.py)."""
    read = offsets[tp]
    if read is None or offset >= read:
        offsets[tp] = offset
        return True
    return False  # "DROPPED MESSAGE ROFF"


def test_messages_fetched_again_after_a_rewind_are_not_dropped() -> None:
    offsets = ReadOffsets()
    for offset in range(4029, 4040):
        assert fetch_loop_passes(offsets, USAGE, offset)
    offsets[USAGE] = 3446  # Faust's seek
    offsets.rewind(USAGE, 3446)
    # The fetch loop still hands over what it fetched before the seek, and notes it as read.
    for offset in range(4040, 4050):
        assert fetch_loop_passes(offsets, USAGE, offset)

    fetched_again = [fetch_loop_passes(offsets, USAGE, o) for o in range(3446, 3460)]

    assert all(fetched_again)
    assert USAGE not in offsets.rewound  # back at the rewind's offset: filtering as before
    assert not fetch_loop_passes(offsets, USAGE, 3450)


def test_other_partitions_keep_faust_filtering() -> None:
    offsets = ReadOffsets()
    offsets.rewind(USAGE, 10)
    assert fetch_loop_passes(offsets, OTHER, 100)
    assert not fetch_loop_passes(offsets, OTHER, 99)
    assert offsets[OTHER] == 100
