"""/api/models: the models this server answers with, by published name, and changes to them
(with the token).

    GET    /api/models                      every served name: version, iteration, state, memory
    PUT    /api/models/{name}[?project=ID]  an export zip as the body: published, swapped in
    POST   /api/models/{name}/rollback      the version before the active one
    DELETE /api/models/{name}               no longer served; removed from the store

A PUT is streamed to a file in the store (never held in memory), capped by
models.max_upload_mb, and has models.upload_timeout_s to arrive, outside the connection
cap's eviction; the token is checked before its first byte is read, and at most
MAX_UPLOADS run at once. A signed export carries its signature inside the zip (model.sig,
as `edge-export sign` writes it in a folder export).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi import Path as PathParam
from starlette.concurrency import run_in_threadpool

from ..errors import EdgeRuntimeError, ModelStoreError
from ..publish.manager import ModelManager
from ..publish.registry import Entry
from ..publish.store import UPLOADS
from ..publish.update import Update
from .auth import require_token
from .body import allow_long_upload, declared_length
from .errors import Busy, Conflict, Forbidden, NoSpace, NotFound, PayloadTooLarge, Refused
from .state import Services, services

router = APIRouter(prefix="/api/models", dependencies=[Depends(require_token)], tags=["models"])
MAX_UPLOADS = 2
SPACE_MARGIN = 64 << 20  # left free on the store's disk after an upload and its unpacked copy
NAME = PathParam(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$", description="the published name")
PROJECT = Query(None, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$",
                description="the project id it answers for; default: the name's, or any project")


def describe(entry: Entry, default: str, manager: ModelManager | None) -> dict[str, Any]:
    active = entry.slot.active
    out: dict[str, Any] = {"name": entry.name, "project": entry.project, "default": entry.name == default,
                           "state": "loading" if entry.slot.loading else "active"}
    if active is not None:
        p = active.predictor
        out.update(version=active.version, iteration=p.iteration, activeSince=active.since,
                   sha1=str(p.bundle.manifest.get("ModelFileSHA1") or ""), variant=p.spec.variant.value,
                   tags=list(p.spec.labels or ()), source=str(p.bundle.source), memoryBytes=active.memory_bytes)
    else:
        out.update(version=None, state="unloaded-for-swap", loading=entry.slot.loading)
    status = manager.status.get(entry.name) if manager is not None else None
    if status is not None:
        out.update(state=status.state if active is not None else out["state"], lastError=status.last_error or None,
                   lastErrorAt=status.last_error_at, refused=status.refused, rolledBack=status.rolled_back,
                   swaps=status.swaps, lastSwapS=status.last_swap_s, probationUntil=status.probation_until,
                   changes=[{"oldVersion": c.old_version, "newVersion": c.new_version, "reason": c.reason,
                             "detail": c.detail, "source": c.source, "at": c.at} for c in status.changes[-5:]])
    return out


def _manager(svc: Services) -> ModelManager:
    if svc.manager is None:
        raise Forbidden("this server has no model store to change")
    return svc.manager


@router.get("", summary="The served models: name, project, version, iteration, state, tags")
async def list_models(svc: Services = Depends(services)) -> list[dict[str, Any]]:
    registry = svc.models
    return [describe(e, registry.default.name, svc.manager) for e in registry.models.values()]


@router.put("/{name}", status_code=201, summary="Publish an export zip (the body) under a name")
async def put_model(request: Request, name: str = NAME, project: str | None = PROJECT,
                    svc: Services = Depends(services)) -> dict[str, Any]:
    manager = _manager(svc)
    m = svc.settings.models
    limit = m.max_upload_mb << 20
    declared = declared_length(request.headers)
    if declared is not None and declared > limit:
        raise PayloadTooLarge(f"the export is {declared} bytes; models.max_upload_mb allows {limit}")
    uploads: asyncio.Semaphore = request.app.state.model_uploads
    if uploads.locked():
        raise Busy(f"{MAX_UPLOADS} uploads are already running; try again when one ends")
    async with uploads:
        folder = manager.store.root / UPLOADS
        await run_in_threadpool(_room_for, folder, declared or 0)
        allow_long_upload(request, limit, m.upload_timeout_s)  # only once it is certain to be read
        path = await _receive(request, folder, limit)
        try:
            update = Update(path, name, project, source="http",
                            origin=f"PUT from {request.client.host if request.client else '?'}")
            try:
                entry = await run_in_threadpool(manager.publish, update)
            except EdgeRuntimeError as exc:
                raise Refused(str(exc)) from exc
        finally:
            path.unlink(missing_ok=True)
    return describe(entry, svc.models.default.name, manager)


@router.post("/{name}/rollback", summary="Go back to the version before the active one")
async def rollback_model(name: str = NAME, svc: Services = Depends(services)) -> dict[str, Any]:
    manager = _manager(svc)
    if svc.models.entry(name) is None:
        raise NotFound(f"no model is published as {name!r}")
    try:
        entry = await run_in_threadpool(manager.rollback, name, "rollback", "http")
    except ModelStoreError as exc:
        raise Conflict(str(exc)) from exc
    return describe(entry, svc.models.default.name, manager)


@router.delete("/{name}", status_code=204, response_class=Response,
               summary="Stop serving a name and remove it from the store")
async def delete_model(name: str = NAME, svc: Services = Depends(services)) -> Response:
    manager = _manager(svc)
    if svc.models.entry(name) is None:
        raise NotFound(f"no model is published as {name!r}")
    in_use = [c.model or svc.models.default.name for c in svc.settings.cameras]
    try:
        await run_in_threadpool(manager.unpublish, name, "http", in_use)
    except ModelStoreError as exc:
        raise Conflict(str(exc)) from exc
    return Response(status_code=204)


def _room_for(folder: Path, size: int) -> None:
    """The upload, its unpacked copy and a margin must fit on the store's disk."""
    folder.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(folder).free
    if free < 2 * size + SPACE_MARGIN:
        raise NoSpace(f"{free >> 20} MB free on the model store's disk; an export of {size >> 20} MB needs "
                      f"{(2 * size + SPACE_MARGIN) >> 20} MB")


async def _receive(request: Request, folder: Path, limit: int) -> Path:
    """The body, streamed to a file of its own in `folder`; removed on any failure."""
    fd, name = tempfile.mkstemp(prefix="put-", suffix=".zip", dir=folder)
    path, size = Path(name), 0
    try:
        with os.fdopen(fd, "wb") as f:
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise PayloadTooLarge(f"the export is over models.max_upload_mb ({limit} bytes)")
                await run_in_threadpool(f.write, chunk)
            await run_in_threadpool(os.fsync, f.fileno())
    except OSError as exc:
        path.unlink(missing_ok=True)
        if exc.errno in (errno.ENOSPC, errno.EDQUOT):
            raise NoSpace("the model store's disk filled while the export arrived") from None
        raise
    except BaseException:
        with contextlib.suppress(OSError):
            path.unlink()
        raise
    if size == 0:
        path.unlink()
        raise Refused("the body is empty: send the export zip as the body")
    return path
