"""/api/models: the models this server answers with, by published name (with the token)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends

from .auth import require_token
from .state import Services, services

router = APIRouter(prefix="/api/models", dependencies=[Depends(require_token)], tags=["models"])


@router.get("", summary="The served models: name, project, version, iteration, tags")
async def list_models(svc: Services = Depends(services)) -> list[dict[str, Any]]:
    registry = svc.registry
    served = list(registry.models.values()) if registry is not None else [svc.resolve(None, None)]
    default = registry.default.name if registry is not None else served[0].name
    out = []
    for s in served:
        spec, manifest = s.predictor.spec, s.predictor.bundle.manifest
        out.append({"name": s.name, "project": s.project, "version": s.version, "default": s.name == default,
                    "iteration": s.predictor.iteration, "sha1": str(manifest.get("ModelFileSHA1") or ""),
                    "variant": spec.variant.value, "tags": list(spec.labels or ()),
                    "source": str(s.predictor.bundle.source)})
    return out
