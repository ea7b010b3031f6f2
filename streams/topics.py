"""The topics churnwatch reads and writes, created up front with the right partition counts.

Input topics are co-partitioned (same key, same partition count) so one worker owns all of a
customer's state. Creating them before producing matters: a broker that auto-creates a topic
gives it its own default partition count.
"""

from __future__ import annotations

import contextlib

from kafka.errors import TopicAlreadyExistsError

from churnwatch.exceptions import ConfigError
from churnwatch.kafka_client import admin_client
from config import Settings

CUSTOMERS_TABLE = "customers"  # customer records and partition clocks (streams/state.py)
TABLES = (CUSTOMERS_TABLE,)  # the Faust tables streams/app.py declares


def changelog_topics(settings: Settings) -> list[str]:
    """Changelog topic names of the worker's tables (Faust's naming: app id, table name)."""
    return [f"{settings.app_id}-{table}-changelog" for table in TABLES]


def topic_partitions(settings: Settings) -> dict[str, int]:
    """Every topic churnwatch itself needs, with its partition count."""
    topics = settings.topics
    needed = {
        topics.usage: settings.partitions,
        topics.billing: settings.partitions,
        topics.alerts: settings.partitions,
        topics.health: settings.partitions,
        topics.dead_letters: settings.partitions,
    }
    return needed | dict.fromkeys(changelog_topics(settings), settings.partitions)


def ensure_topics(settings: Settings, timeout: float = 30.0) -> None:
    """Create missing topics; refuse an input topic whose partition count differs.

    Changelog topics are created here too, compacted, before the worker first joins its
    group: Faust's assignor leaves out topics missing from the leader's metadata, and a
    changelog left out is never restored when its partitions move to another worker.
    """
    wanted = topic_partitions(settings)
    admin = admin_client(settings, client_id=f"{settings.app_id}-admin")
    try:
        existing = set(admin.list_topics())
        compacted = {*changelog_topics(settings), settings.topics.health}
        missing = {
            name: {
                "num_partitions": count,
                "replication_factor": settings.replication_factor,
                **({"configs": {"cleanup.policy": "compact"}} if name in compacted else {}),
            }
            for name, count in wanted.items()
            if name not in existing
        }
        if missing:
            with contextlib.suppress(TopicAlreadyExistsError):  # a concurrent worker won
                admin.create_topics(missing, timeout_ms=int(timeout * 1000))
        admin.wait_for_topics(list(wanted), timeout_ms=int(timeout * 1000))
        counts = {t["name"]: len(t["partitions"]) for t in admin.describe_topics(list(wanted))}
    finally:
        admin.close()
    for name in (settings.topics.usage, settings.topics.billing):
        if counts.get(name) != settings.partitions:
            raise ConfigError(
                f"topic {name} has {counts.get(name)} partitions, settings say "
                f"{settings.partitions}: input topics must be co-partitioned; set "
                "CHURNWATCH_PARTITIONS to match the topics"
            )
