"""Thin Faust agents, timers and views: decode -> pure code -> write state -> emit -> count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import alert_sink, api, clock, diagnostics, figures, ingest, notifier, rebalance, web
from churnwatch.store.alerts import AlertStore

if TYPE_CHECKING:
    from streams.app import Worker


def install_all(worker: Worker) -> None:
    """Register every agent, timer, signal handler and web view on the worker's app."""
    ingest.install(worker)
    figures.install(worker)
    clock.install(worker)
    rebalance.install(worker)
    web.install(worker)
    diagnostics.install(worker)
    alert_sink.install(worker)
    api.install(worker)
    if worker.settings.notify.active:
        notifier.install(worker, ledger=alert_store(worker))


def alert_store(worker: Worker) -> AlertStore:
    """The SQL store the notifier claims pages in (blocks to migrate: call at build time)."""
    store = AlertStore(worker.settings.database_url)
    store.migrate()
    return store
