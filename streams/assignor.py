"""Faust's partition assignor, with co-partitioning that does not depend on set order.

faust-streaming 0.15.3 groups topics by `tuple(set_of_subscribed_members)`; two topics with the
same members can produce differently ordered tuples, land in different groups, and have their
partitions assigned independently. With two workers, usage partition 0 and billing partition 0
then went to different workers: a customer's state was split. Sorting the members fixes it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, MutableMapping, Sequence

from faust.assignor import PartitionAssignor
from faust.assignor.partition_assignor import MemberSubscriptionMapping


class CopartitionedAssignor(PartitionAssignor):
    """Assigns co-subscribed topics with the same partition count as one group."""

    @classmethod
    def _group_co_subscribed(
        cls, topics: set[str], subscriptions: MemberSubscriptionMapping
    ) -> Iterable[set[str]]:
        subscribers: MutableMapping[str, set[str]] = defaultdict(set)
        for member, subscription in subscriptions.items():
            for topic in subscription:
                subscribers[topic].add(member)
        groups: MutableMapping[Sequence[str], set[str]] = defaultdict(set)
        for topic in topics:
            members = subscribers[topic]
            assert members, "a topic without subscribers cannot be assigned"
            groups[tuple(sorted(members))].add(topic)
        return groups.values()
