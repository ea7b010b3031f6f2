"""Thin Faust agents, timers and views: decode -> pure code -> write state -> emit -> count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import clock, figures, ingest, rebalance, web

if TYPE_CHECKING:
    from streams.app import Worker


def install_all(worker: Worker) -> None:
    """Register every agent, timer, signal handler and web view on the worker's app."""
    ingest.install(worker)
    figures.install(worker)
    clock.install(worker)
    rebalance.install(worker)
    web.install(worker)
