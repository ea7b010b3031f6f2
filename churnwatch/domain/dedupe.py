"""Producer duplicates: a usage `event_id` seen again within a horizon of event time.

Redelivery by Kafka is caught by offsets (a customer's last applied offset); this catches the
other kind, a client that sends the same event twice (a retry after a timeout). Each customer
remembers the ids of its recent events, as 8-byte BLAKE2b digests with their event second,
inside its own record: the memory travels with the state it guards, through the same
changelog entry, so a crash can never keep one without the other.

Bounded twice: by the horizon (ids whose event time is older than the customer's newest less
the horizon are forgotten) and by a count per customer (the oldest forgotten first). Digest
collisions (2^-64 per pair) are the only way two different ids could be taken for one.

Ids read from a record stay in their written form until an event is admitted: a day's
evaluation reads every record of a partition and never asks for its ids, and decoding them
was a quarter of that evaluation's time and most of a decoded record's memory.
"""

from __future__ import annotations

import base64
from array import array
from hashlib import blake2b
from typing import Final

DIGEST_BYTES: Final = 8
_MIN_PRUNE_AT: Final = 64


def _age(item: tuple[bytes, int]) -> tuple[int, bytes]:
    """Oldest first; equal seconds by digest: an order that does not depend on arrival."""
    return item[1], item[0]


def digest(event_id: str) -> bytes:
    return blake2b(event_id.encode(), digest_size=DIGEST_BYTES).digest()


class RecentIds:
    """The event ids a customer sent within the horizon, digest -> event second.

    Ids older than the horizon are pruned lazily (amortized), but never consulted and never
    written: the answers and the written form depend only on the ids admitted, not on when
    pruning ran, so a record restored after a crash continues exactly as the original would.
    """

    __slots__ = ("_horizon", "_newest", "_prune_at", "_seen", "_written")

    def __init__(self, seen: dict[bytes, int] | None = None) -> None:
        self._seen: dict[bytes, int] = seen if seen is not None else {}
        self._newest = max(self._seen.values(), default=0)
        self._prune_at = max(_MIN_PRUNE_AT, 2 * len(self._seen))
        self._horizon = float("inf")  # the last one given: what `to_plain` keeps
        # The form read by `from_plain`, until the ids are needed: then `_seen` holds them.
        self._written: tuple[str, str] | None = None

    def __len__(self) -> int:
        if self._written is not None:
            encoded = self._written[0]
            padding = len(encoded) - len(encoded.rstrip("="))
            return (len(encoded) // 4 * 3 - padding) // DIGEST_BYTES
        return len(self._seen)

    def admit(self, event_id: str, at: float, horizon: float, cap: int) -> tuple[bool, int]:
        """(True if `event_id` is new, how many old ids were forgotten to stay in bounds)."""
        if self._written is not None:
            self._decode()
        self._horizon = horizon
        key = digest(event_id)
        seen = self._seen
        second = int(at)
        if key in seen:
            if seen[key] >= self._newest - horizon:
                return False, 0
            del seen[key]  # expired: admitted afresh, at the end as if it had been pruned
        seen[key] = second
        if second > self._newest:
            self._newest = second
        if len(seen) > cap or len(seen) >= self._prune_at:
            return True, self.prune(horizon, cap)
        return True, 0

    def prune(self, horizon: float, cap: int) -> int:
        """Forget ids older than the horizon, then the oldest beyond `cap`; return the count
        forgotten because of `cap` (the horizon's own expiry is the design, not a loss)."""
        if self._written is not None:
            self._decode()
        kept = self._within(horizon)
        over = len(kept) - cap
        if over > 0:
            for key, _ in sorted(kept.items(), key=_age)[:over]:
                del kept[key]
        self._seen = kept
        self._prune_at = max(_MIN_PRUNE_AT, 2 * len(kept))
        return max(over, 0)

    def _within(self, horizon: float) -> dict[bytes, int]:
        floor = self._newest - horizon
        return {key: second for key, second in self._seen.items() if second >= floor}

    def to_plain(self) -> list[str]:
        """[base64 of the digests, base64 of their event seconds]: about 22 characters per id.
        Only ids within the horizon, oldest first: the same bytes whenever pruning last ran
        and in whatever order the events came."""
        if self._written is not None:
            # Written by this method with nothing admitted since: the same ids, in order,
            # and the horizon they were read with (none since) keeps them all.
            return list(self._written)
        floor = self._newest - self._horizon
        # (second, digest) pairs sort natively in `_age` order: arrival order aside.
        kept = sorted([(second, key) for key, second in self._seen.items() if second >= floor])
        digests = b"".join([key for _, key in kept])
        seconds = array("q", [second for second, _ in kept]).tobytes()
        return [base64.b64encode(digests).decode(), base64.b64encode(seconds).decode()]

    @classmethod
    def from_plain(cls, plain: list[str]) -> RecentIds:
        """The ids of `to_plain`'s form, decoded only when an event is admitted."""
        if not (type(plain[0]) is str and type(plain[1]) is str and len(plain[0]) == len(plain[1])):
            raise ValueError("event id digests and event seconds differ in count")
        recent = cls.__new__(cls)  # nothing to set up for ids that may never be read
        recent._written = (plain[0], plain[1])
        recent._horizon = float("inf")
        return recent

    def _decode(self) -> None:
        assert self._written is not None
        digests = base64.b64decode(self._written[0])
        seconds = array("q", base64.b64decode(self._written[1]))
        keys = [digests[i : i + DIGEST_BYTES] for i in range(0, len(digests), DIGEST_BYTES)]
        self._seen = dict(zip(keys, seconds, strict=True))
        self._newest = max(seconds, default=0)
        self._prune_at = max(_MIN_PRUNE_AT, 2 * len(self._seen))
        self._written = None
