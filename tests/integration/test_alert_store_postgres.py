"""The SQL alert store on a real PostgreSQL: the SQLite checks, and claims and writes that race."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from hypothesis import given, settings
from sqlalchemy import create_engine, inspect

from churnwatch.store.alerts import AlertStore
from churnwatch.store.migrations import migrate
from churnwatch.store.models import Base
from tests.unit.test_alert_store import (
    START,
    check_a_late_transition_never_moves_an_alert_back,
    check_ack_and_snooze,
    check_at_risk_lists_open_alerts,
    check_claim_once,
    check_deliveries_converge,
    check_filters,
    check_pages_cover_every_alert_once,
    check_record_is_idempotent,
    deliveries,
    new_prefix,
    stored_transitions,
    universe,
)

# The PostgreSQL fixtures (postgres_url, postgres_database_url) live beside this module.
pytestmark = pytest.mark.integration


@pytest.fixture
def store(postgres_database_url: str) -> Iterator[AlertStore]:
    store = AlertStore(postgres_database_url)
    store.migrate()
    yield store
    store.close()


def test_migrations_build_what_the_models_say(postgres_database_url: str) -> None:
    migrate(postgres_database_url)
    migrate(postgres_database_url)
    engine = create_engine(postgres_database_url)
    try:
        with engine.connect() as connection:
            differences = compare_metadata(MigrationContext.configure(connection), Base.metadata)
            tables = set(inspect(connection).get_table_names())
    finally:
        engine.dispose()

    assert differences == []
    assert {"alert_transitions", "alerts", "notifications"} <= tables


def test_recording_twice_never_duplicates(store: AlertStore, postgres_database_url: str) -> None:
    check_record_is_idempotent(store, postgres_database_url)


def test_a_late_transition_never_moves_an_alert_back(store: AlertStore) -> None:
    check_a_late_transition_never_moves_an_alert_back(store)


def test_any_order_and_duplication_give_the_same_rows(
    store: AlertStore, postgres_database_url: str
) -> None:
    @settings(max_examples=20, deadline=None)
    @given(deliveries)
    def converge(delivery: tuple[list[int], int]) -> None:
        check_deliveries_converge(store, postgres_database_url, *delivery)

    converge()


def test_filters(store: AlertStore) -> None:
    check_filters(store)


def test_pages_cover_every_alert_once(store: AlertStore) -> None:
    check_pages_cover_every_alert_once(store)


def test_ack_and_snooze(store: AlertStore) -> None:
    check_ack_and_snooze(store)


def test_a_notification_is_claimed_once(store: AlertStore) -> None:
    check_claim_once(store)


def test_at_risk_lists_every_open_alert(store: AlertStore) -> None:
    check_at_risk_lists_open_alerts(store)


def test_racing_notifiers_claim_a_page_once(store: AlertStore) -> None:
    """Eight notifiers see the same transition at once: exactly one may page."""
    p = new_prefix()
    at = START + timedelta(days=1)
    with ThreadPoolExecutor(max_workers=8) as pool:
        claims = list(
            pool.map(
                lambda _: store.claim_notification(f"{p}-a", "opened", at, "pagerduty"), range(8)
            )
        )

    assert sorted(claims) == [False] * 7 + [True]


def test_racing_sinks_store_each_transition_once(
    store: AlertStore, postgres_database_url: str
) -> None:
    """Two workers' sinks during a rebalance write the same batch: one row each, latest state."""
    p = new_prefix()
    batch = universe(p)
    with ThreadPoolExecutor(max_workers=6) as pool:
        written = list(pool.map(store.record, [batch, list(reversed(batch))] * 3))

    assert sum(written) == len(batch)
    assert len(stored_transitions(postgres_database_url, p)) == len(batch)
    assert (store.get(f"{p}-a").status, store.get(f"{p}-c").status) == ("resolved", "churned")
