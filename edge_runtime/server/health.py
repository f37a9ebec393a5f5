"""Health, readiness, metrics and model description."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST

from ..capture.camera import CameraState
from .auth import auth_of, require_token
from .state import Services, services

open_router = APIRouter(tags=["health"])
router = APIRouter(dependencies=[Depends(require_token)], tags=["health"])


@open_router.get("/healthz", summary="The process is up (no token needed)")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@open_router.get("/readyz", summary="Model loaded and at least one camera online (when cameras are configured)")
async def readyz(request: Request, svc: Services = Depends(services)) -> JSONResponse:
    """Open to probes (Kubernetes cannot send a token); the camera details need the token."""
    states = {c.id: c.state.value for c in svc.cameras}
    online = any(s == CameraState.ONLINE.value for s in states.values())
    running = svc.healthy  # no run stuck in the model, no thread dead
    ready = svc.models.default.slot.active is not None and (online or not svc.cameras) and running
    body: dict[str, Any] = {"status": "ready" if ready else "not ready"}
    if auth_of(request).authenticated(request):
        body.update(model=True, cameras=states, pipeline="ok" if running else "unhealthy")
        if svc.store is not None:
            body["events"] = svc.store.status()
        forwarders = getattr(request.app.state, "forwarders", None)
        if forwarders is not None:
            body["forwarders"] = forwarders.status()
    return JSONResponse(body, status_code=200 if ready else 503)


@router.get("/metrics", summary="Prometheus metrics")
async def metrics(svc: Services = Depends(services)) -> Response:
    return Response(svc.metrics.render(), media_type=CONTENT_TYPE_LATEST)


@router.get("/model", summary="What the loaded model is and how it is fed")
async def model(svc: Services = Depends(services)) -> dict[str, Any]:
    model = (await svc.served(None, None)).predictor
    spec, bundle = model.spec, model.bundle
    return {
        "variant": spec.variant.value,
        "domain": spec.domain,
        "iteration": model.iteration,
        "input": spec.input.to_json(),
        "labels": list(spec.labels or ()),
        "manifest": bundle.manifest,
        "metadata": dict(spec.metadata),
        "providers": model.model.providers,
        "info": bundle.info,
    }
