"""Hostile input for the fuzz tests: hypothesis strategies, and a seeded mix of kinds built on them.

The unit fuzz (tests/unit/test_fuzz_inputs.py) runs the parsers over the strategies; the
integration fuzz (tests/integration/test_fuzz_worker.py) sends `HostileMix` to a real worker.
`HostileMix` draws from the same strategies with a fixed seed (hypothesis' `find` is not meant
for bulk data, so the seed drives `random.Random`, and each kind mirrors a strategy here).
"""

from __future__ import annotations

import json
import random
import string
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Final

from hypothesis import strategies as st

DAY: Final = 86_400.0
USAGE_FIELDS: Final = ("event_id", "customer_id", "occurred_at", "event_type", "quantity")
BILLING_FIELDS: Final = ("event_id", "customer_id", "occurred_at", "type", "mrr", "seats")

# JSON values of every shape, including what strict JSON has no literal for.
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.text(min_size=200, max_size=5000),
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
timestamps = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.datetimes(timezones=st.timezones()).map(lambda d: d.isoformat()),
    st.datetimes().map(lambda d: d.isoformat()),  # no offset
    st.text(max_size=45),
)
keys = st.one_of(
    st.none(),
    st.just(b""),
    st.binary(max_size=40),
    st.binary(min_size=10_000, max_size=20_000),
)


def encode(payload: Any) -> bytes:
    """JSON as a careless producer writes it: NaN, Infinity and huge integers included."""
    return json.dumps(payload, allow_nan=True).encode()


def deep(depth: int) -> bytes:
    """A JSON array nested `depth` deep (json.dumps would hit Python's recursion limit)."""
    return b"[" * depth + b'"bottom"' + b"]" * depth


KINDS: Final = (
    "malformed_bytes",
    "wrong_type",
    "huge_string",
    "oversized_payload",
    "deep_json",
    "nan_infinity",
    "far_future",
    "far_past",
    "stale",
    "unknown_type",
    "bad_control",
    "empty_key",
    "enormous_key",
    "keyless",
)


@dataclass(frozen=True, slots=True)
class Message:
    topic: str  # "usage" or "billing"
    kind: str
    key: bytes | None
    value: bytes


class HostileMix:
    """Deterministic messages of every kind, for one run (times relative to `now`)."""

    def __init__(self, seed: int, now: float, first: float) -> None:
        self._rng = random.Random(seed)
        self._now = now
        self._first = first  # valid events are at or after this time
        self._serial = 0

    def _id(self, prefix: str) -> str:
        self._serial += 1
        return f"{prefix}-{self._serial}"

    def _text(self, low: int, high: int) -> str:
        size = self._rng.randint(low, high)
        alphabet = string.printable + "é漢\u0000\ud7ff🙂"
        return "".join(self._rng.choice(alphabet) for _ in range(size))

    def usage(self, customer: str, at: float) -> dict[str, Any]:
        return {
            "event_id": self._id("u"),
            "customer_id": customer,
            "occurred_at": at,
            "event_type": self._rng.choice(["login", "api_call", "export"]),
            "quantity": self._rng.randint(1, 5),
        }

    def billing(self, customer: str, at: float, kind: str) -> dict[str, Any]:
        event: dict[str, Any] = {
            "event_id": self._id("b"),
            "customer_id": customer,
            "occurred_at": at,
            "type": kind,
        }
        if kind in ("subscription.started", "subscription.changed"):
            event["mrr"] = str(self._rng.choice([49, 99, 499]))
        return event

    def valid(self, customer: str, at: float, topic: str) -> Message:
        if topic == "billing":
            kind = self._rng.choice(["subscription.started", "payment.succeeded"])
            payload = self.billing(customer, at, kind)
        else:
            payload = self.usage(customer, at)
        return Message(topic, "valid", customer.encode(), encode(payload))

    def hostile(self, kind: str, at: float) -> Message:
        """One message of `kind`, otherwise plausible (a customer of its own, time `at`)."""
        rng = self._rng
        topic = rng.choice(["usage", "billing"])
        customer = self._id("h")
        key: bytes | None = customer.encode()
        base = (
            self.usage(customer, at)
            if topic == "usage"
            else self.billing(customer, at, "payment.failed")
        )
        fields = USAGE_FIELDS if topic == "usage" else BILLING_FIELDS
        value: bytes
        if kind == "malformed_bytes":
            choice = rng.randrange(4)
            raw = encode(base)
            value = [
                bytes(rng.randrange(256) for _ in range(rng.randint(0, 300))),
                raw[: rng.randint(0, len(raw) - 1)],
                b"\xff\xfe" + raw,
                raw.replace(b'"', b"'"),
            ][choice]
        elif kind == "wrong_type":
            field = rng.choice(fields)
            base[field] = rng.choice([[], {}, True, 3.5, "ten", [1, 2], {"a": 1}, -1])
            if field in ("customer_id",) and isinstance(base[field], str):
                key = base[field].encode()
            value = encode(base)
        elif kind == "huge_string":
            field = rng.choice([f for f in fields if f not in ("occurred_at", "quantity")])
            base[field] = self._text(300, 20_000)
            if field == "customer_id":
                key = base[field].encode()
            value = encode(base)
        elif kind == "oversized_payload":
            base["properties"] = {"blob": "x" * rng.randint(70_000, 100_000)}
            value = encode(base)
        elif kind == "deep_json":
            depth = rng.choice([1025, 5000, 50_000])
            value = encode(base)[:-1] + b', "properties": {"nested": ' + deep(depth) + b"}}"
        elif kind == "nan_infinity":
            field = rng.choice(["occurred_at", "quantity" if topic == "usage" else "mrr"])
            base[field] = rng.choice([float("nan"), float("inf"), float("-inf")])
            value = encode(base)
        elif kind == "far_future":
            base["occurred_at"] = rng.choice(
                [
                    self._now + 400 * DAY,
                    1e12,
                    2**63,
                    "9999-12-31T23:59:59Z",
                    "2999-01-01T00:00:00+14:00",
                ]
            )
            value = encode(base)
        elif kind == "far_past":
            base["occurred_at"] = rng.choice(
                [0, -1, -(2**62), 946_684_799, "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"]
            )
            value = encode(base)
        elif kind == "stale":  # valid, but older than the watermark: late
            base["occurred_at"] = self._first - rng.uniform(5, 400) * DAY
            value = encode(base)
        elif kind == "unknown_type":
            if topic == "usage":
                base["event_type"] = self._text(1, 30)  # free-form: accepted
            else:
                base["type"] = rng.choice(["subscription.exploded", "", "payment.FAILED"])
            value = encode(base)
        elif kind == "bad_control":
            control = rng.choice(["heartbeat", "snooze", "reboot", 7, None])
            body: dict[str, Any] = {"control": control}
            if control == "heartbeat":
                body["occurred_at"] = rng.choice([self._now + 400 * DAY, "yesterday", None])
            elif control == "snooze":
                body |= {"customer_id": customer, "until": rng.choice(["soon", float("nan")])}
            else:
                body["control"] = control if control is not None else {"nested": "x"}
            value = encode(body)
        elif kind == "empty_key":
            key = b""
            if rng.random() < 0.5:
                base["customer_id"] = ""
            value = encode(base)
        elif kind == "enormous_key":
            key = bytes(rng.randrange(256) for _ in range(rng.randint(10_000, 60_000)))
            value = encode(base)
        elif kind == "keyless":
            key = None
            value = encode(base)
        else:
            raise ValueError(kind)
        return Message(topic, kind, key, value)

    def junk(self, at: float) -> Message:
        """A valid usage event of a customer never seen before (the flood of junk ids)."""
        customer = f"junk-{self._rng.getrandbits(64):016x}-{self._id('j')}"
        return Message("usage", "junk_flood", customer.encode(), encode(self.usage(customer, at)))

    def stream(
        self, *, hostile: int, junk: int, valid: int, customers: int, span_days: float
    ) -> Iterator[Message]:
        """Valid events of `customers` real ones over `span_days` from `first`, in time order,
        with hostile messages and valid events of junk ids mixed in."""
        kinds = [KINDS[n % len(KINDS)] for n in range(hostile)]
        self._rng.shuffle(kinds)
        total = hostile + junk + valid
        plan = ["hostile"] * hostile + ["junk"] * junk + ["valid"] * valid
        self._rng.shuffle(plan)
        for position, what in enumerate(plan):
            at = self._first + span_days * DAY * position / total
            if what == "valid":
                customer = f"real-{self._rng.randrange(customers)}"
                topic = "billing" if self._rng.random() < 0.1 else "usage"
                yield self.valid(customer, at, topic)
            elif what == "junk":
                yield self.junk(at)
            else:
                yield self.hostile(kinds.pop(), at)
