"""What the HTTP app needs, built by the caller and handed to `create_app`."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field

from fastapi import Request

from ..camera import Camera
from ..config import Settings
from ..metrics import Metrics
from ..pipeline import Pipeline
from ..predictor import Predictor
from ..sinks import AnnotatedFrames, EventBroadcaster, LatestResults
from . import auth


@dataclass
class Services:
    predictor: Predictor
    settings: Settings
    token: str | None = None
    cameras: list[Camera] = field(default_factory=list)
    pipeline: Pipeline | None = None
    latest: LatestResults = field(default_factory=LatestResults)
    events: EventBroadcaster = field(default_factory=EventBroadcaster)
    frames: AnnotatedFrames = field(default_factory=AnnotatedFrames)
    metrics: Metrics = field(default_factory=Metrics)
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    def camera(self, camera_id: str | None) -> Camera | None:
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
    """The bearer token the request carries; the query string and cookies never carry one."""
    return auth.bearer_token(request)


def require_token(request: Request) -> None:
    """Dependency for every route but /healthz and /readyz: the bearer header, or the
    signed session cookie of the live page (server/auth.py)."""
    auth.require_token(request)
