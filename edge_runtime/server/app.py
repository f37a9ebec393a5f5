"""The HTTP app, built from services the caller made (real ones, or fakes in tests).

    app = create_app(Services(predictor=predictor, settings=settings, cameras=cameras, pipeline=pipeline))
    uvicorn.run(app, host="127.0.0.1", port=8080)

Starting the app starts the pipeline; stopping it ends the event streams and stops the
pipeline and cameras.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import uvicorn
from fastapi import FastAPI
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from .. import __version__, forwarders, systemd
from ..events.metrics import StoreCollector
from ..metrics import Metrics
from ..sinks import samples
from . import cloud, errors, events_api, health, live, predict
from .state import Services

log = logging.getLogger("edge_runtime.http")
STOP_TIMEOUT_S = 2.0


class RequestMetrics:
    """Counts requests by route template and status, and logs them without query strings
    (which may carry a token)."""

    def __init__(self, app: ASGIApp, metrics: Metrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        status = 500
        start = time.perf_counter()

        async def send_with_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_with_status)
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            self.metrics.requests.labels(scope["method"], template, str(status)).inc()
            log.info("%s %s %d %.1f ms", scope["method"], scope["path"], status, (time.perf_counter() - start) * 1000)


class GracefulServer(uvicorn.Server):
    """Ends the event and MJPEG streams as soon as shutdown begins: uvicorn waits for open
    connections before it runs the app's shutdown, and a live page never closes its own."""

    async def shutdown(self, sockets: list[Any] | None = None) -> None:
        svc = getattr(getattr(self.config.app, "state", None), "services", None)
        if isinstance(svc, Services):
            svc.shutting_down.set()
            svc.events.close()
        await super().shutdown(sockets)


async def _feed_watchdog(svc: Services) -> None:
    """Pings systemd's watchdog while the event loop runs and the pipeline's threads live;
    a hung loop or a dead worker stops the pings, and systemd restarts the service."""
    interval = systemd.watchdog_interval()
    if interval is None:
        return
    while True:
        if svc.pipeline is None or svc.pipeline.healthy:
            systemd.notify("WATCHDOG=1")
        else:
            log.error("pipeline threads have stopped; letting the systemd watchdog restart the service")
        await asyncio.sleep(interval)


def create_app(svc: Services) -> FastAPI:
    svc.metrics.watch(lambda: svc.cameras)
    svc.events.project, svc.events.iteration = svc.settings.server.project, svc.predictor.iteration

    if svc.store is not None:
        svc.metrics.registry.register(StoreCollector(svc.store))
    samples.watch(svc.metrics.registry, svc.sinks)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.forwarders = forwarders.start_all(svc.settings, svc.store, svc.metrics) if svc.store else None
        if svc.pipeline is not None:
            svc.pipeline.start()
        watchdog = asyncio.create_task(_feed_watchdog(svc))
        systemd.notify("READY=1")
        try:
            yield
        finally:
            systemd.notify("STOPPING=1")
            watchdog.cancel()
            svc.shutting_down.set()
            svc.events.close()
            if svc.pipeline is not None:
                svc.pipeline.stop(STOP_TIMEOUT_S)
            if svc.sinks is not None:
                svc.sinks.close()
            if app.state.forwarders is not None:
                app.state.forwarders.stop(STOP_TIMEOUT_S)
            if svc.store is not None:
                svc.store.close()

    app = FastAPI(title="edge-runtime", version=__version__, lifespan=lifespan,
                  description="Custom Vision compatible predictions from local cameras and uploads.")
    app.state.services = svc
    errors.install(app)
    app.include_router(health.open_router)
    app.include_router(health.router)
    app.include_router(live.router)
    app.include_router(live.protected)
    app.include_router(predict.router)
    app.include_router(cloud.router)
    app.include_router(events_api.router)
    app.add_middleware(RequestMetrics, metrics=svc.metrics)
    return app
