"""What the HTTP app needs, built by the caller and handed to `create_app`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from fastapi import Request

from .. import forwarders
from ..capture.view import CameraRunner, CameraView
from ..config import Settings
from ..events.retention import Janitor
from ..events.store import EventStore
from ..metrics import Metrics
from ..model.predictor import Predictor
from ..publish.registry import Registry, Served
from ..sinks import AnnotatedFrames, EventBroadcaster, LatestResults, MultiSink
from .auth import Auth


@dataclass
class Services:
    predictor: Predictor
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
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def healthy(self) -> bool:
        """The cameras' pipeline alive, and no run in the server's session (an upload's,
        or a camera's in-process) stuck in the model; workers watch their own sessions."""
        pipeline_ok = self.pipeline is None or self.pipeline.healthy
        return pipeline_ok and not self.predictor.model.stuck

    def resolve(self, project: str | None, name: str | None) -> Served:
        """The model that answers this project id and published name (publish/registry.py);
        the default model when the route names none (POST /image)."""
        registry = self.registry or Registry(Served("default", None, self.predictor))
        return registry.default if name is None else registry.resolve(project or "", name)

    def camera(self, camera_id: str | None) -> CameraView | None:
        if camera_id is None:
            return self.cameras[0] if self.cameras else None
        return next((c for c in self.cameras if c.id == camera_id), None)



def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc
