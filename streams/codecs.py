"""Faust codecs for churnwatch's table values: compact JSON via orjson."""

from __future__ import annotations

from typing import Any, Final

import orjson
from faust.serializers import codecs

from churnwatch.domain.customer import CustomerState
from churnwatch.domain.partition import PartitionClock

CUSTOMER_CODEC: Final = "churnwatch-customer"


class CustomerCodec(codecs.Codec):
    """CustomerState (or PartitionClock) <-> bytes, for live writes and changelog recovery."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj.to_plain())

    def _loads(self, s: bytes) -> Any:
        plain = orjson.loads(s)
        if "clock" in plain:  # a partition clock rides in the same table (streams/state.py)
            return PartitionClock.from_plain(plain)
        return CustomerState.from_plain(plain)


def register_codecs() -> None:
    """Make the codecs known to Faust by name (idempotent)."""
    codecs.register(CUSTOMER_CODEC, CustomerCodec())
