"""Labelling on the device (/api/label, with the token), and the label page.

    GET    /api/label/models                                   served models: kind, tags, tags the labels added
    GET    /api/label/items?model=&camera=&labelled=&limit=&cursor=   {"items": [...], "next": cursor}
    GET    /api/label/items/{id}/image.jpg                     the clean frame
    PUT    /api/label/items/{id}/labels/{model}                {"revision", "tags"} or {"revision", "boxes"}
    DELETE /api/label/items/{id}/labels/{model}?revision=
    POST   /api/label/grab?camera=                             the camera's newest frame, kept as a sample
    GET    /view/label                                         the page

Only frames kept without drawings are offered: samples, and events' clean frames
(events.keep_frames; an event's frame becomes a sample of its own when it is first
labelled). A body is read only after the token, at most LABEL_BODY_LIMIT bytes, and
validated by strict models: a box that is not finite or lies outside the image is a one-line
422. A save over a stale revision is a 409 whose body holds the current label.
"""

from __future__ import annotations

from importlib import resources
from typing import Any

import cv2
from fastapi import APIRouter, Depends, Query, Request
from fastapi import Path as PathParam
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, Response
from pydantic import ConfigDict, Field, ValidationError
from starlette.concurrency import run_in_threadpool

from ..errors import DiskFullError, LabelConflictError, StoreError
from ..events.labels import Box, Label, LabelItem
from ..events.store import EventStore, SampleRecord, iso
from ..settings_base import Strict
from ..types import Variant
from .auth import auth_of, require_token, signin_page
from .body import read_capped
from .errors import NoSpace, NotFound, Unprocessable
from .events_api import EVENT_ID
from .state import Services, services

router = APIRouter(tags=["label"])
protected = APIRouter(prefix="/api/label", dependencies=[Depends(require_token)], tags=["label"])
LABEL_BODY_LIMIT = 64 << 10
GRAB_BODY_LIMIT = 1 << 10  # a grab has no body; a client that sends an empty JSON object is let through
MANUAL = "manual"  # the sampler name of a grabbed frame
TOP_PREDICTIONS = 20  # per frame listed: the starting point of its label
ITEM_ID = PathParam(pattern=EVENT_ID.pattern, description="a sample's or an event's id")
MODEL_NAME = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"
MODEL = PathParam(pattern=MODEL_NAME, description="the published name")
Unit = Field(ge=0, le=1, allow_inf_nan=False)


class _Body(Strict):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class BoxBody(_Body):
    tag: str = Field(min_length=1, max_length=64)
    left: float = Unit
    top: float = Unit
    width: float = Field(gt=0, le=1, allow_inf_nan=False)
    height: float = Field(gt=0, le=1, allow_inf_nan=False)


class LabelBody(_Body):
    revision: int = Field(ge=0, le=2**31, description="the revision saved over; 0 for a frame with no label yet")
    tags: list[str] = Field(default_factory=list, max_length=64)
    boxes: list[BoxBody] = Field(default_factory=list, max_length=200)


def _store(svc: Services) -> EventStore:
    if svc.store is None:
        raise NotFound("labels are kept in the event store, and this server has none: configure events.rules, "
                       "forwarders, samples.samplers or a model store")
    return svc.store


def _kind(svc: Services, model: str) -> tuple[str, list[str]]:
    """A served model's kind of labels and its tags; 404 for a name it does not serve."""
    entry = svc.models.entry(model)
    if entry is None:
        raise NotFound(f"no model is served as {model!r}")
    spec = entry.slot.get().spec
    kind = "detection" if spec.variant.is_detection else \
        "multilabel" if spec.variant == Variant.MULTILABEL else "classification"
    return kind, list(spec.labels or ())


def item_json(sample: SampleRecord, source: str, label: Label | None) -> dict[str, Any]:
    """A frame to label, with the model's most probable predictions (a thousand-tag model's
    full list, fifty times a page, would be megabytes)."""
    predictions = sample.prediction.get("predictions")
    if isinstance(predictions, list):
        scored = [p for p in predictions if isinstance(p, dict) and isinstance(p.get("probability"), (int, float))]
        predictions = sorted(scored, key=lambda p: -p["probability"])[:TOP_PREDICTIONS]
    return {"id": sample.id, "source": source, "sampler": sample.sampler, "camera": sample.camera,
            "takenAt": iso(sample.taken_at), "image": f"/api/label/items/{sample.id}/image.jpg",
            "predictions": predictions if isinstance(predictions, list) else [],
            "label": label.to_json() if label else None}


def _of(item: LabelItem) -> dict[str, Any]:
    return item_json(item.sample, item.kind, item.label)


@protected.get("/models", summary="The served models, the kind of labels each takes, and its tags")
async def models(svc: Services = Depends(services)) -> dict[str, Any]:
    out = []
    for name in svc.models.models:
        kind, tags = _kind(svc, name)
        added = await run_in_threadpool(svc.store.label_tags, name) if svc.store is not None else []
        out.append({"name": name, "kind": kind, "tags": tags, "newTags": [t for t in added if t not in tags],
                    "default": name == svc.models.default.name})
    cameras = [{"id": c.id, "model": c.model or svc.models.default.name} for c in svc.settings.cameras]
    return {"models": out, "cameras": cameras}


@protected.get("/items", summary="Frames to label, newest first, a page at a time")
async def items(
    model: str = Query(pattern=MODEL_NAME),
    camera: str | None = Query(None, max_length=64),
    labelled: bool | None = Query(None, description="true: only labelled frames; false: only those not yet"),
    limit: int = Query(50, ge=1, le=200),
    cursor: str | None = Query(None, pattern=EVENT_ID.pattern, description="`next` of the previous page"),
    svc: Services = Depends(services),
) -> dict[str, Any]:
    _kind(svc, model)
    rows = await run_in_threadpool(_store(svc).label_items, model, camera or None, labelled, limit + 1, cursor)
    page = rows[:limit]
    return {"items": [_of(i) for i in page], "next": page[-1].sample.id if len(rows) > limit else None}


async def _sample(store: EventStore, item_id: str, adopt: bool) -> tuple[SampleRecord, str]:
    """The sample of an id; for an event's clean frame, the event's frame (`adopt`: made a sample)."""
    sample = await run_in_threadpool(store.sample, item_id)
    if sample is not None:
        return sample, "sample"
    if adopt:
        try:
            sample = await run_in_threadpool(store.adopt_event_frame, item_id)
        except DiskFullError as exc:
            raise NoSpace(str(exc)) from None
        if sample is not None:
            return sample, "sample"
    else:
        event = await run_in_threadpool(store.get, item_id)
        if event is not None and event.frame and event.end is not None:
            return SampleRecord(event.id, "event", event.camera, event.start, event.frame, {}), "event"
    raise NotFound(f"no frame {item_id!r} to label (event snapshots have drawings on them: only clean frames)")


@protected.get("/items/{item_id}/image.jpg", summary="A frame to label, without drawings")
async def image(item_id: str = ITEM_ID, svc: Services = Depends(services)) -> FileResponse:
    sample, _ = await _sample(_store(svc), item_id, adopt=False)
    try:
        path = _store(svc).media_path(sample.image)
    except StoreError:
        path = None
    if path is None or not path.is_file():
        raise NotFound(f"frame {item_id} is no longer kept")
    return FileResponse(path, media_type="image/jpeg", headers={"Cache-Control": "private, max-age=86400"})


def _parse(data: bytes) -> LabelBody:
    try:
        return LabelBody.model_validate_json(data)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "body"
        more = f" (and {exc.error_count() - 1} more)" if exc.error_count() > 1 else ""
        raise Unprocessable(f"{where}: {first['msg']}{more}") from None


@protected.put("/items/{item_id}/labels/{model}", summary="Save a frame's label for a model, over its revision")
async def save(request: Request, item_id: str = ITEM_ID, model: str = MODEL,
               svc: Services = Depends(services)) -> Response:
    store = _store(svc)
    body = _parse(await read_capped(request, LABEL_BODY_LIMIT))
    kind, _ = _kind(svc, model)
    sample, _ = await _sample(store, item_id, adopt=True)
    boxes = [Box(b.tag, b.left, b.top, b.width, b.height) for b in body.boxes]
    try:
        label = await run_in_threadpool(store.save_label, sample.id, model, kind, body.tags, boxes, body.revision)
    except LabelConflictError as exc:
        return _conflict(exc)
    return JSONResponse(label.to_json())


def _conflict(exc: LabelConflictError) -> JSONResponse:
    """409, with the label as it now stands (null: deleted), for the page to show."""
    current = exc.current.to_json() if isinstance(exc.current, Label) else None
    return JSONResponse({"code": "Conflict", "message": str(exc), "current": current}, status_code=409)


@protected.delete("/items/{item_id}/labels/{model}", status_code=204, response_class=Response,
                  summary="Delete a frame's label for a model")
async def delete(item_id: str = ITEM_ID, model: str = MODEL,
                 revision: int | None = Query(None, ge=0, le=2**31, description="only at this revision"),
                 svc: Services = Depends(services)) -> Response:
    store = _store(svc)
    try:
        deleted = await run_in_threadpool(store.delete_label, item_id, model, revision)
    except LabelConflictError as exc:
        return _conflict(exc)
    if not deleted:
        raise NotFound(f"frame {item_id} has no label for {model!r}")
    return Response(status_code=204)


@protected.post("/grab", status_code=201, summary="Keep a camera's newest frame for labelling")
async def grab(request: Request, camera: str | None = Query(None, max_length=64),
               svc: Services = Depends(services)) -> dict[str, Any]:
    await read_capped(request, GRAB_BODY_LIMIT)  # it takes no body: one sent is refused, not left unread
    store = _store(svc)
    cam = svc.camera(camera)
    if cam is None:
        raise NotFound(f"no camera {camera!r}" if camera is not None else "no cameras are configured")
    result = svc.latest.get(cam.id)
    if result is None:
        raise NotFound(f"camera {cam.id} has no frame yet")
    quality = svc.settings.samples.jpeg_quality

    def keep() -> str | None:
        ok, data = cv2.imencode(".jpg", result.frame.image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise StoreError("JPEG encoding of the grabbed frame failed")
        return store.add_sample(MANUAL, cam.id, result.frame.captured_at, data.tobytes(),
                                result.to_json(svc.settings.server.project, ""))

    sample_id = await run_in_threadpool(keep)
    sample = await run_in_threadpool(store.sample, sample_id) if sample_id else None
    if sample is None:
        raise NoSpace("the event store's budget or disk has no room for another frame (labelled frames are kept: "
                      "raise events.store.max_mb, or export and delete labels)")
    return item_json(sample, "sample", None)


LABEL_PAGE = "/view/label"


@router.get(LABEL_PAGE, response_class=HTMLResponse, include_in_schema=False)
async def page(request: Request) -> Response:
    """The label page; the sign-in form until the browser has a session (the live page's)."""
    if not auth_of(request).authenticated(request):
        return signin_page(LABEL_PAGE)
    return HTMLResponse(resources.files("edge_runtime.server").joinpath("label.html").read_text())


router.include_router(protected)
