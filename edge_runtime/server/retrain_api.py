"""Candidates trained on the device (publish/retrain.py), and the Train page (with the token).

    POST   /api/models/{name}/candidates                   202: a training starts (409 while one runs)
    GET    /api/models/{name}/candidates                   every candidate of a name, newest first
    GET    /api/models/{name}/candidates/{id}              state, progress, error, the comparison
    GET    /api/models/{name}/candidates/{id}/images/{n}   the held-out image of disagreement n
    POST   /api/models/{name}/candidates/{id}/promote      published through the manager's checks
    DELETE /api/models/{name}/candidates/{id}              discarded: the active version stays
    GET    /view/train                                     the page: Train, progress, compare, promote

No route reads a body; a candidate id is 16 hex digits and never names a file (the image of
a disagreement is found by its number in the candidate's own comparison).
"""

from __future__ import annotations

from collections.abc import Callable
from importlib import resources
from typing import Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import EdgeRuntimeError
from ..publish.retrain import NoRoom, Retrainer, TrainingBusy, UnknownCandidate
from .auth import auth_of, require_token, signin_page
from .errors import Conflict, Forbidden, NoSpace, NotFound, Refused
from .models_api import NAME, describe
from .state import Services, services

router = APIRouter(tags=["retrain"])
protected = APIRouter(prefix="/api/models/{name}/candidates", dependencies=[Depends(require_token)],
                      tags=["retrain"])
TRAIN_PAGE = "/view/train"
CANDIDATE = PathParam(pattern=r"^[0-9a-f]{16}$", description="the candidate's id")
INDEX = PathParam(ge=0, le=100_000, description="the disagreement's number in the comparison")
T = TypeVar("T")
IMAGE_TYPES = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".bmp": "image/bmp",
               ".gif": "image/gif", ".webp": "image/webp"}


def _retrainer(svc: Services, name: str) -> Retrainer:
    if svc.retrain is None:
        raise Forbidden("this server has no model store to train candidates in")
    if svc.models.entry(name) is None:
        raise NotFound(f"no model is published as {name!r}")
    return svc.retrain


def _mapped(exc: EdgeRuntimeError) -> Exception:
    if isinstance(exc, UnknownCandidate):
        return NotFound(str(exc))
    if isinstance(exc, TrainingBusy):
        return Conflict(str(exc))
    if isinstance(exc, NoRoom):
        return NoSpace(str(exc))
    return Refused(str(exc))


async def _call(fn: Callable[..., T], *args: Any) -> T:
    """`fn(*args)` off the event loop, the retrainer's refusals mapped to HTTP errors."""
    try:
        return await run_in_threadpool(fn, *args)
    except EdgeRuntimeError as exc:
        raise _mapped(exc) from exc


def _body(retrainer: Retrainer, name: str, job_id: str) -> dict[str, Any]:
    body = retrainer.job(name, job_id).to_json()
    body["comparison"] = retrainer.comparison(name, job_id)
    return body


@protected.post("", status_code=202, summary="Train a candidate from the model's labelled frames")
async def start(name: str = NAME, svc: Services = Depends(services)) -> dict[str, Any]:
    retrainer = _retrainer(svc, name)
    job = await _call(retrainer.start, name)
    return job.to_json()


@protected.get("", summary="The candidates of a name, newest first")
async def candidates(name: str = NAME, svc: Services = Depends(services)) -> list[dict[str, Any]]:
    retrainer = _retrainer(svc, name)
    return [j.to_json() for j in await run_in_threadpool(retrainer.jobs, name)]


@protected.get("/{candidate}", summary="A candidate's state, progress, error and comparison")
async def candidate(name: str = NAME, candidate: str = CANDIDATE, svc: Services = Depends(services)) -> dict[str, Any]:
    retrainer = _retrainer(svc, name)
    return await _call(_body, retrainer, name, candidate)


@protected.get("/{candidate}/images/{index}", summary="The held-out image of one disagreement")
async def image(name: str = NAME, candidate: str = CANDIDATE, index: int = INDEX,
                svc: Services = Depends(services)) -> Response:
    retrainer = _retrainer(svc, name)
    path = await _call(retrainer.image, name, candidate, index)
    kind = IMAGE_TYPES.get(path.suffix.lower())
    if kind is None:
        raise NotFound(f"candidate {candidate} has no image for disagreement {index}")
    return FileResponse(path, media_type=kind, headers={"Cache-Control": "private, max-age=3600"})


@protected.post("/{candidate}/promote", summary="Publish the candidate (warm-up, verification, rollback)")
async def promote(name: str = NAME, candidate: str = CANDIDATE, svc: Services = Depends(services)) -> dict[str, Any]:
    retrainer = _retrainer(svc, name)
    entry = await _call(retrainer.promote, name, candidate)
    return describe(entry, svc.models.default.name, svc.manager)


@protected.delete("/{candidate}", summary="Discard the candidate; the active version stays")
async def discard(name: str = NAME, candidate: str = CANDIDATE, svc: Services = Depends(services)) -> dict[str, Any]:
    retrainer = _retrainer(svc, name)
    job = await _call(retrainer.discard, name, candidate)
    return job.to_json()


@router.get(TRAIN_PAGE, response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> Response:
    """The Train page; on a protected server, the sign-in form until the browser has a session."""
    if not auth_of(request).authenticated(request):
        return signin_page(TRAIN_PAGE)
    return HTMLResponse(resources.files("edge_runtime.server").joinpath("train.html").read_text())


router.include_router(protected)
