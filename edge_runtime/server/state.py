"""What the HTTP app needs, built by the caller and handed to `create_app`."""

from __future__ import annotations

import asyncio
import weakref
from dataclasses import dataclass, field
from typing import cast

from fastapi import Request
from starlette.concurrency import run_in_threadpool

from .. import forwarders
from ..capture.view import CameraRunner, CameraView
from ..config import Settings
from ..events.retention import Janitor
from ..events.store import EventStore
from ..metrics import Metrics
from ..model.predictor import Predictor
from ..model.slot import WAIT_S, ModelUnavailable
from ..publish.manager import ModelManager
from ..publish.registry import Registry, Served
from ..publish.retrain import Retrainer
from ..sinks import AnnotatedFrames, EventBroadcaster, LatestResults, MultiSink
from .auth import Auth


@dataclass
class Services:
    predictor: Predictor  # the default model as the server started; `model` is the one answering now
    settings: Settings
    auth: Auth = field(default_factory=lambda: Auth(None, 3600))  # the token, and sessions signed with it
    cameras: list[CameraView] = field(default_factory=list)  # Cameras, or the reports of cameras in workers
    pipeline: CameraRunner | None = None  # the in-process Pipeline or a WorkerPool
    latest: LatestResults = field(default_factory=LatestResults)
    events: EventBroadcaster = field(default_factory=EventBroadcaster)
    frames: AnnotatedFrames = field(default_factory=AnnotatedFrames)
    metrics: Metrics = field(default_factory=Metrics)
    sinks: MultiSink | None = None  # closed at shutdown, after the pipeline stops
    store: EventStore | None = None  # the event store; closed at shutdown, after the sinks
    janitor: Janitor | None = None  # the store's retention, swept every minute while the app runs
    forwarding: forwarders.Plan | None = None  # the forwarders the app starts over the store
    registry: Registry | None = None  # the published models by name; None: the predictor alone
    manager: ModelManager | None = None  # swaps versions in while the server runs; None: no model store
    retrain: Retrainer | None = None  # candidates trained on the device; None: no model store
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    def __post_init__(self) -> None:
        if self.registry is None:
            self.registry = Registry.single("default", self.predictor)
        # held weakly: once a swap replaced it, the last request on it frees its session
        self.predictor = cast(Predictor, weakref.proxy(self.predictor))

    @property
    def models(self) -> Registry:
        assert self.registry is not None  # set in __post_init__
        return self.registry

    @property
    def model(self) -> Predictor:
        """The default model's active version (what POST /image and /model answer with)."""
        return self.models.default.slot.get()

    @property
    def healthy(self) -> bool:
        """The cameras' pipeline alive, and no run in the server's session (an upload's,
        or a camera's in-process) stuck in the model; workers watch their own sessions."""
        pipeline_ok = self.pipeline is None or self.pipeline.healthy
        active = self.models.default.slot.active  # None while unload-first loads: not stuck
        return pipeline_ok and not (active is not None and active.predictor.model.stuck)

    def resolve(self, project: str | None, name: str | None, wait_s: float = WAIT_S) -> Served:
        """The model that answers this project id and published name (publish/registry.py);
        the default model when the route names none (POST /image). It waits while an
        unload-first swap loads the model: off the event loop only."""
        if name is None:
            return self.models.default.served(wait_s)
        return self.models.resolve(project or "", name, wait_s)

    async def served(self, project: str | None, name: str | None) -> Served:
        """`resolve` for a route: at once when the model is there, in a thread while it loads."""
        try:
            return self.resolve(project, name, wait_s=0)
        except ModelUnavailable:
            return await run_in_threadpool(self.resolve, project, name)

    def camera(self, camera_id: str | None) -> CameraView | None:
        if camera_id is None:
            return self.cameras[0] if self.cameras else None
        return next((c for c in self.cameras if c.id == camera_id), None)



def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
