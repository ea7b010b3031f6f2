"""Thin Faust agents, timers and views: decode -> pure code -> write state -> emit -> count."""

from __future__ import annotations

from typing import TYPE_CHECKING

from agents import clock, rebalance, usage, web

if TYPE_CHECKING:
    from streams.app import Worker


def install_all(worker: Worker) -> None:
    """Register every agent, timer, signal handler and web view on the worker's app."""
    usage.install(worker)
    clock.install(worker)
    rebalance.install(worker)
    web.install(worker)
