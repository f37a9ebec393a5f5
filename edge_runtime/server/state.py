"""What the HTTP app needs, built by the caller and handed to `create_app`."""

from __future__ import annotations

import asyncio
import hmac
from dataclasses import dataclass, field

from fastapi import Request

from .. import forwarders
from ..capture.view import CameraRunner, CameraView
from ..config import Settings
from ..events.retention import Janitor
from ..events.store import EventStore
from ..metrics import Metrics
from ..model.predictor import Predictor
from ..sinks import AnnotatedFrames, EventBroadcaster, LatestResults, MultiSink
from . import auth, body
from .errors import Unauthorized


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
    store: EventStore | None = None  # the event store; closed at shutdown, after the sinks
    janitor: Janitor | None = None  # the store's retention, swept every minute while the app runs
    forwarding: forwarders.Plan | None = None  # the forwarders the app starts over the store
    shutting_down: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def healthy(self) -> bool:
        """The cameras' pipeline alive, and no run in the server's session (an upload's,
        or a camera's in-process) stuck in the model; workers watch their own sessions."""
        pipeline_ok = self.pipeline is None or self.pipeline.healthy
        return pipeline_ok and not self.predictor.model.stuck

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
    """The bearer token the request carries; the query string and cookies never carry one."""
    return auth.bearer_token(request)


def require_token(request: Request) -> None:
    """Dependency for every route but /healthz and /readyz: the bearer header, or the
    signed session cookie of the live page (server/auth.py)."""
    auth.require_token(request)


PREDICTION_KEY_HEADER = "Prediction-Key"


def require_prediction_key(request: Request) -> None:
    """Dependency for the cloud Prediction API routes: the token as the service's SDKs send
    their key (a `Prediction-Key` header), or as a bearer token. Only then may the route read
    the request's body (server/body.py)."""
    svc, key = services(request), request.headers.get(PREDICTION_KEY_HEADER)
    if not ((key is not None and svc.token_matches(key)) or svc.token_matches(supplied_token(request))):
        raise Unauthorized(f"a valid {PREDICTION_KEY_HEADER} header or bearer token is required")
    body.admit(request)
