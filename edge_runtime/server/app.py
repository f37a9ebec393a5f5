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

from .. import __version__, forwarders
from ..config import Settings
from ..events.metrics import StoreCollector
from ..events.retention import RetentionLoop
from ..metrics import Metrics
from ..service import systemd
from ..sinks import samples
from . import auth, cloud, docs, errors, events_api, health, label_api, live, models_api, predict, retrain_api
from .body import BodyGuard
from .browsers import BrowserGuard, allowed_hosts
from .connections import ACCEPT_BACKLOG, ConnectionLimits, connection_cap, guarded_protocol
from .state import Services
from .urlfetch import UrlFetcher

log = logging.getLogger("edge_runtime.http")
STOP_TIMEOUT_S = 2.0


KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class RequestMetrics:
    """Counts requests by method, route template and status, and logs them without query
    strings (which may carry a token). Labels come only from fixed sets: a method outside
    KNOWN_METHODS counts as "other" and a path no route matched as "unmatched", so hostile
    requests cannot grow the number of series."""

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
            method = scope["method"] if scope["method"] in KNOWN_METHODS else "other"
            self.metrics.requests.labels(method, template, str(status)).inc()
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
    """Pings systemd's watchdog while the event loop runs and the pipeline is healthy; a
    hung loop, a dead worker or a run stuck in the model stops the pings, and systemd
    restarts the service."""
    interval = systemd.watchdog_interval()
    if interval is None:
        return
    while True:
        if svc.healthy:
            systemd.notify("WATCHDOG=1")
        else:
            log.error("pipeline unhealthy (a thread stopped, or a run is stuck in the model); "
                      "letting the systemd watchdog restart the service")
        await asyncio.sleep(interval)


def create_app(svc: Services) -> FastAPI:
    svc.metrics.watch(lambda: svc.cameras)
    svc.events.project, svc.events.iteration = svc.settings.server.project, ""  # each result's own iteration
    fetcher = UrlFetcher(svc.settings.server.url.max_concurrent)

    if svc.store is not None:
        svc.metrics.registry.register(StoreCollector(svc.store))
    samples.watch(svc.metrics.registry, svc.sinks)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.forwarders = forwarders.start_all(svc.forwarding, svc.store, svc.metrics.registry) \
            if svc.store is not None and svc.forwarding is not None else None
        retention = RetentionLoop(svc.janitor).start() if svc.janitor is not None else None
        if svc.pipeline is not None:
            svc.pipeline.start()
        if svc.manager is not None:
            svc.manager.start()
        watchdog = asyncio.create_task(_feed_watchdog(svc))
        systemd.notify("READY=1")
        try:
            yield
        finally:
            systemd.notify("STOPPING=1")
            watchdog.cancel()
            svc.shutting_down.set()
            svc.events.close()
            fetcher.close()
            if svc.retrain is not None:
                svc.retrain.stop(STOP_TIMEOUT_S)
            if svc.manager is not None:
                svc.manager.stop(STOP_TIMEOUT_S)
            if svc.pipeline is not None:
                svc.pipeline.stop(STOP_TIMEOUT_S)
            if svc.sinks is not None:
                svc.sinks.close()
            if app.state.forwarders is not None:
                app.state.forwarders.stop(STOP_TIMEOUT_S)
            if retention is not None:
                retention.stop(STOP_TIMEOUT_S)
            if svc.store is not None:
                svc.store.close()

    server = svc.settings.server
    app = FastAPI(title="edge-runtime", version=__version__, lifespan=lifespan,
                  docs_url=None, redoc_url=None, openapi_url=None,  # served by docs.router, behind the token
                  description="Custom Vision compatible predictions from local cameras and uploads.")
    app.state.services = svc
    app.state.auth = svc.auth
    app.state.url_fetcher = fetcher
    app.state.model_uploads = asyncio.Semaphore(models_api.MAX_UPLOADS)  # PUT /api/models at once
    errors.install(app)
    app.include_router(auth.router)
    app.include_router(docs.router)
    app.include_router(health.open_router)
    app.include_router(health.router)
    app.include_router(live.router)
    app.include_router(live.protected)
    app.include_router(predict.router)
    app.include_router(cloud.router)
    app.include_router(events_api.router)
    app.include_router(label_api.router)
    app.include_router(models_api.router)
    app.include_router(retrain_api.router)
    # innermost: no route reads a body before its token check, nor more than an upload at the cap
    app.add_middleware(BodyGuard, limit=server.max_upload_bytes + predict.MULTIPART_OVERHEAD)
    app.add_middleware(BrowserGuard, allowed_hosts=allowed_hosts(server))
    app.add_middleware(RequestMetrics, metrics=svc.metrics)
    return app


def server_config(app: FastAPI, settings: Settings, **options: Any) -> uvicorn.Config:
    """uvicorn settings that enforce the server's limits: header and body deadlines and a
    connection cap (server/connections.py), and logging through the process's own handler
    (edge_runtime/service/logs.py), so every line uvicorn writes is escaped and rate-limited."""
    s = settings.server
    limits = ConnectionLimits(s.header_timeout_s, s.body_timeout_s, connection_cap(s.max_connections))
    options = {"host": s.host, "port": s.port, "log_level": settings.log.level, **options}
    return uvicorn.Config(app, http=guarded_protocol(limits), backlog=ACCEPT_BACKLOG, log_config=None,
                          access_log=False, server_header=False, **options)
