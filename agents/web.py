"""HTTP views on the worker's web port: Prometheus metrics and health."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import generate_latest

if TYPE_CHECKING:
    from streams.app import Worker

# prometheus_client's CONTENT_TYPE_LATEST names a charset, which aiohttp refuses in content_type.
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4"


def install(worker: Worker) -> None:
    app = worker.app

    @app.page("/metrics")
    async def metrics(web: Any, request: Any) -> Any:
        return web.bytes(generate_latest(worker.registry), content_type=METRICS_CONTENT_TYPE)

    @app.page("/healthz")
    async def healthz(web: Any, request: Any) -> Any:
        """Alive: the process serves requests (liveness)."""
        return web.json({"status": "ok", "partitions": sorted(worker.owned_partitions())})

    @app.page("/readyz")
    async def readyz(web: Any, request: Any) -> Any:
        """Ready: partitions assigned, their state restored, and the broker reachable (503
        otherwise)."""
        partitions = sorted(worker.owned_partitions())
        connected = worker.connected()
        ready = bool(partitions) and worker.settled() and connected
        body = {
            "ready": ready,
            "partitions": partitions,
            "broker": connected,
            "rebalancing": worker.app.rebalancing,
            "recovering": worker.app.in_recovery,
        }
        return web.json(body, status=200 if ready else 503)
