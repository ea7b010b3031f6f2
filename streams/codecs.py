"""Faust codecs for churnwatch's table values: compact JSON via orjson."""

from __future__ import annotations

from typing import Any, Final

import orjson
from faust.serializers import codecs

from churnwatch.domain.customer import CustomerState

CUSTOMER_CODEC: Final = "churnwatch-customer"


class CustomerCodec(codecs.Codec):
    """CustomerState <-> bytes, the same for live writes and changelog recovery."""

    def _dumps(self, obj: Any) -> bytes:
        return orjson.dumps(obj.to_plain())

    def _loads(self, s: bytes) -> Any:
        return CustomerState.from_plain(orjson.loads(s))


def register_codecs() -> None:
    """Make the codecs known to Faust by name (idempotent)."""
    codecs.register(CUSTOMER_CODEC, CustomerCodec())
