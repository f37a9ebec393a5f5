"""Live views: the newest results, Server-Sent Events, annotated MJPEG and snapshots."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool

from ..sinks.broadcast import Item
from .auth import auth_of, require_token, signed_in, signin_page
from .errors import NotFound
from .state import Services, services

router = APIRouter(tags=["live"])
protected = APIRouter(dependencies=[Depends(require_token)], tags=["live"])
KEEPALIVE_S = 15.0
BOUNDARY = "frame"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> Response:
    """The live page; on a protected server, the sign-in form until the browser has a session.
    `/?token=` (the one route that reads the query) trades the token for a session cookie."""
    auth = auth_of(request)
    token = request.query_params.get("token")
    if token is not None and auth.required:
        if auth.token_ok(token.strip()):
            return signed_in(request, "/")  # the token leaves the address bar and history
        return signin_page("/", "That token is not right.")
    if not auth.authenticated(request):
        return signin_page("/")
    response = HTMLResponse(resources.files("edge_runtime.server").joinpath("live.html").read_text())
    if auth.required and not auth.bearer_ok(request):
        auth.start_session(response, request)  # each visit extends the session
    return response


def _camera_id(svc: Services, camera: str | None) -> str:
    cam = svc.camera(camera)
    if cam is None:
        raise NotFound(f"no camera {camera[:64]!r}" if camera is not None else "no cameras are configured")
    return cam.id


@protected.get("/cameras", summary="Each camera's state, frame rate and counters")
async def cameras(svc: Services = Depends(services)) -> list[dict[str, Any]]:
    out = []
    for cam in svc.cameras:
        status = cam.status()
        status["fps"] = round(svc.pipeline.fps(cam.id), 2) if svc.pipeline else 0.0
        status["skipped"] = svc.pipeline.skipped(cam.id) if svc.pipeline else 0
        out.append(status)
    return out


@protected.get("/predictions/latest", summary="The newest result of one camera, or of each")
async def latest(camera: str | None = None, svc: Services = Depends(services)) -> dict[str, Any]:
    project, iteration = svc.settings.server.project, ""  # each result's own: the version that made it
    if camera is None and len(svc.cameras) != 1:
        return {cid: r.to_json(project, iteration) for cid, r in svc.latest.all().items()}
    result = svc.latest.get(_camera_id(svc, camera))
    if result is None:
        raise NotFound("no result yet")
    return result.to_json(project, iteration)


@protected.get("/events", summary="Server-Sent Events: 'prediction' per result, and event messages")
async def events(
    camera: str | None = None,
    max_fps: float | None = Query(None, gt=0, description="at most this many events per second per camera"),
    svc: Services = Depends(services),
) -> StreamingResponse:
    if camera is not None:
        _camera_id(svc, camera)  # an unknown camera is a 404 here too, not an empty stream
    sub = svc.events.subscribe()
    min_gap = 1.0 / max_fps if max_fps else 0.0

    async def stream() -> AsyncIterator[str]:
        sent: dict[str, float] = {}
        try:
            yield ": connected\n\n"
            while not svc.shutting_down.is_set():
                items = await next_items(sub.queue)
                if not items:
                    yield ": keepalive\n\n"
                    continue
                chunk = []
                for item in items:
                    if item is None:
                        break
                    kind, cam, data = item
                    if camera is not None and cam != camera:
                        continue
                    if kind == "prediction":  # max_fps thins predictions, never the other messages
                        now = time.monotonic()
                        if min_gap and now - sent.get(cam, -min_gap) < min_gap:
                            continue
                        sent[cam] = now
                    chunk.append(f"event: {kind}\ndata: {data}\n\n")
                if chunk:
                    yield "".join(chunk)
                if items[-1] is None:
                    return
        finally:
            svc.events.unsubscribe(sub)

    return StreamingResponse(stream(), media_type="text/event-stream",
                             headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})


async def next_items(queue: asyncio.Queue[Item | None]) -> list[Item | None]:
    """Every message waiting in `queue`, or, when none is, the next within KEEPALIVE_S ([] if
    none came). A client that fell behind gets what piled up in one write, and a stream
    that keeps up waits with a timer only when the queue is empty, not once per message:
    the event loop shares the GIL with the camera loop."""
    items: list[Item | None] = []
    if queue.empty():
        try:
            items.append(await asyncio.wait_for(queue.get(), KEEPALIVE_S))
        except asyncio.TimeoutError:
            return items
    while not queue.empty() and (not items or items[-1] is not None):
        items.append(queue.get_nowait())
    return items


@protected.get("/snapshot.jpg", summary="The newest annotated frame")
async def snapshot(camera: str | None = None, svc: Services = Depends(services)) -> Response:
    jpeg = await run_in_threadpool(svc.frames.jpeg, _camera_id(svc, camera))
    if jpeg is None:
        raise NotFound("no frame yet")
    return Response(jpeg[1], media_type="image/jpeg", headers={"Cache-Control": "no-store"})


@protected.get("/stream.mjpg", summary="Annotated frames as Motion-JPEG (multipart/x-mixed-replace)")
async def mjpeg(
    camera: str | None = None,
    max_fps: float | None = Query(None, gt=0),
    svc: Services = Depends(services),
) -> StreamingResponse:
    cam_id = _camera_id(svc, camera)
    fps = min(max_fps or svc.settings.server.mjpeg_max_fps, svc.settings.server.mjpeg_max_fps)

    async def stream() -> AsyncIterator[bytes]:
        last_seq = -1
        while not svc.shutting_down.is_set():
            seq = svc.frames.latest_seq(cam_id)
            if seq != last_seq:
                jpeg = await run_in_threadpool(svc.frames.jpeg, cam_id)
                if jpeg is not None:
                    last_seq = jpeg[0]
                    yield (f"--{BOUNDARY}\r\nContent-Type: image/jpeg\r\nContent-Length: {len(jpeg[1])}\r\n\r\n"
                           .encode() + jpeg[1] + b"\r\n")
            await asyncio.sleep(1.0 / fps)

    return StreamingResponse(stream(), media_type=f"multipart/x-mixed-replace; boundary={BOUNDARY}",
                             headers={"Cache-Control": "no-store"})
