"""Recorded events: list, fetch, media and delete (/api/events), and the events page.

    GET    /api/events?camera=&tag=&since=&until=&limit=&cursor=   {"events": [...], "next": cursor}
    GET    /api/events/{id}                                         one event's JSON
    GET    /api/events/{id}/snapshot.jpg | thumbnail.jpg | clip.mp4
    DELETE /api/events/{id}
    GET    /view/events                                             thumbnails, newest first

Newest first; `next` is the cursor of the following page (null on the last). With no store
(no rules, forwarders or samplers configured) the list is empty. An unknown `camera` is a
404, as on every route; a camera no longer configured is known here while it has events.
"""

from __future__ import annotations

import re
from importlib import resources
from typing import Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from starlette.concurrency import run_in_threadpool

from ..errors import StoreError
from ..events.store import EventRecord, EventStore
from ..events.times import parse_time
from .auth import auth_of, require_token, signin_page
from .errors import BadRequest, NotFound
from .state import Services, services

router = APIRouter(tags=["events"])
protected = APIRouter(prefix="/api/events", dependencies=[Depends(require_token)], tags=["events"])
EVENT_ID = re.compile(r"^[0-9A-HJKMNP-TV-Z]{26}$")
MEDIA = {"snapshot.jpg": ("snapshot", "image/jpeg"), "thumbnail.jpg": ("thumbnail", "image/jpeg"),
         "clip.mp4": ("clip", "video/mp4")}


def _time(name: str, value: str | None) -> float | None:
    if value is None or value == "":
        return None
    try:
        return parse_time(value)
    except ValueError as exc:
        raise BadRequest(f"{name}: {exc}") from None


def _store(svc: Services) -> EventStore:
    if svc.store is None:
        raise NotFound("events are not recorded: no events.rules, forwarders or samplers are configured")
    return svc.store


async def _known_camera(svc: Services, camera: str) -> bool:
    """A configured camera, or one no longer configured whose events are still stored."""
    if svc.camera(camera) is not None:
        return True
    return svc.store is not None and bool(await run_in_threadpool(svc.store.has_camera, camera))


async def _event(svc: Services, event_id: str) -> EventRecord:
    event = await run_in_threadpool(_store(svc).get, event_id) if EVENT_ID.match(event_id) else None
    if event is None:
        raise NotFound(f"no event {event_id!r}")
    return event


@protected.get("", summary="Recorded events, newest first, a page at a time")
async def list_events(
    camera: str | None = None,
    tag: str | None = None,
    since: str | None = Query(None, description="ISO 8601, seconds since the epoch, or an age such as 30m"),
    until: str | None = None,
    limit: int = Query(50, ge=1, le=500),
    cursor: str | None = Query(None, description="`next` of the previous page"),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    if cursor is not None and not EVENT_ID.match(cursor):
        raise BadRequest(f"cursor: not a cursor this server gave: {cursor!r}")
    if camera and not await _known_camera(svc, camera):
        raise NotFound(f"no camera {camera[:64]!r}")
    if svc.store is None:
        return {"events": [], "next": None}
    rows = await run_in_threadpool(svc.store.events, camera=camera or None, tag=tag or None,
                                   since=_time("since", since), until=_time("until", until),
                                   limit=limit + 1, before=cursor)
    page = rows[:limit]
    return {"events": [e.to_json() for e in page], "next": page[-1].id if len(rows) > limit else None}


@protected.get("/{event_id}", summary="One event")
async def get_event(event_id: str, svc: Services = Depends(services)) -> dict[str, Any]:
    return (await _event(svc, event_id)).to_json()


@protected.get("/{event_id}/{name}", summary="An event's snapshot.jpg, thumbnail.jpg or clip.mp4")
async def media(event_id: str, name: str, svc: Services = Depends(services)) -> FileResponse:
    if name not in MEDIA:
        raise NotFound(f"no such media {name!r}: use snapshot.jpg, thumbnail.jpg or clip.mp4")
    kind, media_type = MEDIA[name]
    event = await _event(svc, event_id)
    stored = getattr(event, kind)
    try:
        path = _store(svc).media_path(stored) if stored else None
    except StoreError:
        path = None
    if path is None or not path.is_file():
        raise NotFound(f"event {event_id} has no {kind}")
    return FileResponse(path, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


@protected.delete("/{event_id}", status_code=204, summary="Delete an event and its media")
async def delete_event(event_id: str, svc: Services = Depends(services)) -> Response:
    event = await _event(svc, event_id)
    await run_in_threadpool(_store(svc).delete, event.id)
    return Response(status_code=204)


EVENTS_PAGE = "/view/events"


@router.get(EVENTS_PAGE, response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> Response:
    """The events page; on a protected server, the sign-in form until the browser has a
    session (the same session as the live page's)."""
    auth = auth_of(request)
    if not auth.authenticated(request):
        return signin_page(EVENTS_PAGE)
    return HTMLResponse(resources.files("edge_runtime.server").joinpath("events.html").read_text())


router.include_router(protected)
