"""Dead letters: the original bytes, untouched, with why and where in the headers.

The message value and key are exactly what the producer sent (nothing is re-encoded or
truncated, so a fixed event can be replayed as is); the headers say why it was refused
(`churnwatch.reason`, `churnwatch.detail`) and where it came from (`churnwatch.source.topic`,
`.partition`, `.offset`). Documented in docs/topics.md.
"""

from __future__ import annotations

from churnwatch.exceptions import InvalidEventError

MAX_DETAIL_BYTES = 1024


def dead_letter_headers(
    error: InvalidEventError, topic: str, partition: int, offset: int, at: float
) -> list[tuple[str, bytes]]:
    """Headers that explain a dead letter; bounded in size whatever the input was."""
    return [
        ("churnwatch.reason", error.reason.encode()),
        ("churnwatch.detail", error.detail.encode()[:MAX_DETAIL_BYTES]),
        ("churnwatch.source.topic", topic.encode()),
        ("churnwatch.source.partition", str(partition).encode()),
        ("churnwatch.source.offset", str(offset).encode()),
        ("churnwatch.dead_lettered_at", f"{at:.3f}".encode()),
    ]
