"""What the HTTP app needs, built by the caller and handed to `create_app`."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field

from fastapi import Request

from ..config import Settings
from ..metrics import Metrics
from ..predictor import Predictor
from ..sinks import AnnotatedFrames, EventBroadcaster, LatestResults, MultiSink
from ..workers.runner import CameraRunner, CameraView
from .errors import Unauthorized

TOKEN_COOKIE = "edge_runtime_token"


@dataclass
class Services:
    predictor: Predictor
    settings: Settings
    token: str | None = None
    cameras: list[CameraView] = field(default_factory=list)  # Cameras, or the reports of cameras in workers
    pipeline: CameraRunner | None = None  # the in-process Pipeline or a WorkerPool
    latest: LatestResults = field(default_factory=LatestResults)
    events: EventBroadcaster = field(default_factory=EventBroadcaster)
    frames: AnnotatedFrames = field(default_factory=AnnotatedFrames)
    metrics: Metrics = field(default_factory=Metrics)
    sinks: MultiSink | None = None  # closed at shutdown, after the pipeline stops
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    def camera(self, camera_id: str | None) -> CameraView | None:
        if camera_id is None:
            return self.cameras[0] if self.cameras else None
        return next((c for c in self.cameras if c.id == camera_id), None)

    def token_matches(self, supplied: str | None) -> bool:
        if self.token is None:
            return True
        return supplied is not None and hmac.compare_digest(supplied.encode(), self.token.encode())


def services(request: Request) -> Services:
    svc: Services = request.app.state.services
    return svc


def supplied_token(request: Request) -> str | None:
    header = request.headers.get("authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip()
    return request.cookies.get(TOKEN_COOKIE) or request.query_params.get("token")


def require_token(request: Request) -> None:
    """Dependency for every route but /healthz: a bearer header, the live page's cookie,
    or ?token= (for clients such as EventSource that cannot set headers)."""
    if not services(request).token_matches(supplied_token(request)):
        raise Unauthorized("a valid bearer token is required")
