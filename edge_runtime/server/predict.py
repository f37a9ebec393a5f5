"""Prediction on uploads: POST /image, /url and the exported container's route aliases."""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, Field, ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from ..model.imageio import decoded
from ..model.predictor import Predictor
from .auth import require_token
from .body import read_capped
from .errors import BadRequest, Forbidden, PayloadTooLarge
from .state import Services, services
from .urlfetch import MAX_URL_LENGTH, check_url, url_fetcher

router = APIRouter(dependencies=[Depends(require_token)], tags=["predict"])
MULTIPART_OVERHEAD = 64 * 1024
IMAGE_FIELD = "imageData"
URL_BODY_LIMIT = 16 * 1024  # {"url": ...} at MAX_URL_LENGTH, with room for JSON escapes


class UrlBody(BaseModel):
    url: str = Field(max_length=MAX_URL_LENGTH)


# The body is read in the handler, after the token check, so it is documented by hand.
URL_BODY_DOC: dict[str, Any] = {"requestBody": {"required": True, "content": {
    "application/json": {"schema": UrlBody.model_json_schema()}}}}


async def url_body(request: Request) -> UrlBody:
    raw = await read_capped(request, URL_BODY_LIMIT)
    try:
        return UrlBody.model_validate_json(raw)
    except ValidationError as exc:
        problems = "; ".join(f"{'.'.join(str(p) for p in ('body', *e['loc']))}: {e['msg']}" for e in exc.errors())
        raise BadRequest(problems) from None


async def _image_bytes(request: Request, limit: int) -> bytes:
    content_type = request.headers.get("content-type", "")
    if not content_type.startswith("multipart/form-data"):
        return await read_capped(request, limit)
    body = await read_capped(request, limit + MULTIPART_OVERHEAD)

    async def stream() -> AsyncGenerator[bytes, None]:
        yield body

    # A part sent without a filename, as the service's SDKs send imageData, is parsed as text:
    # decoded as latin-1 (whatever charset the client named) it turns back into the same bytes.
    parser = MultiPartParser(Headers({"content-type": f"{content_type}; charset=latin-1"}), stream())
    parser.max_part_size = limit + MULTIPART_OVERHEAD  # starlette >= 0.40 caps text parts at 1 MB
    try:
        form = await parser.parse()
    except Exception as exc:  # the parser raises its own MultiPartException and ValueErrors
        raise BadRequest(f"malformed multipart body: {exc}") from exc
    part = form.get(IMAGE_FIELD)
    if not isinstance(part, (UploadFile, str)):
        part = next((v for v in form.values() if isinstance(v, UploadFile)), None)
    if part is None:
        raise BadRequest(f"multipart body has no file field (expected '{IMAGE_FIELD}')")
    data = part.encode("latin-1") if isinstance(part, str) else await part.read()
    if len(data) > limit:
        raise PayloadTooLarge(f"the image is {len(data)} bytes; the limit is {limit}")
    return data


async def _predict(svc: Services, data: bytes, project: str = "", *, predictor: Predictor) -> Response:
    """`predictor` was taken once for this request: a swap meanwhile does not change it."""
    model = predictor

    def work() -> bytes:
        # the image's share of the decode budget is held until its prediction is done
        with decoded(data, svc.settings.server.max_image_pixels, model.spec.input) as frame:
            result = model.predict(frame)
        # serialised here, off the event loop, and without FastAPI's generic encoder (slow for 1000 tags)
        return result.json_text(project or svc.settings.server.project, model.iteration).encode()

    return Response(await run_in_threadpool(work), media_type="application/json")


async def _served(request: Request, svc: Services) -> Predictor:
    """The container's routes name a project and a published name; /image names neither."""
    params = request.path_params
    return (await svc.served(params.get("project"), params.get("published_name"))).predictor


async def predict_image(request: Request, svc: Services = Depends(services)) -> Response:
    """Predict on an image sent as the raw body or as the multipart field `imageData`."""
    model = await _served(request, svc)  # an unknown name is refused before the body is read
    return await _predict(svc, await _image_bytes(request, svc.settings.server.max_upload_bytes), predictor=model)


async def predict_url(request: Request, svc: Services = Depends(services)) -> Response:
    """Fetch an image from an allow-listed host:port and predict on it (off unless enabled).
    The body, JSON {"url": ...}, is read only when it is on."""
    return await fetch_and_predict(request, svc, await _served(request, svc))


async def fetch_and_predict(request: Request, svc: Services, predictor: Predictor) -> Response:
    cfg = svc.settings.server.url
    if not cfg.enabled:
        raise Forbidden("POST /url is disabled: set server.url.enabled and server.url.allow_hosts to use it")
    target = check_url((await url_body(request)).url, cfg.allow_hosts)
    data = await url_fetcher(request).get(target, svc.settings.server.max_upload_bytes, cfg.timeout_s)
    return await _predict(svc, data, predictor=predictor)


for prefix in ("", "/{project}/classify/iterations/{published_name}", "/{project}/detect/iterations/{published_name}"):
    for suffix in ("", "/nostore"):
        router.add_api_route(f"{prefix}/image{suffix}", predict_image, methods=["POST"],
                             include_in_schema=not prefix and not suffix, summary="Predict on an uploaded image")
        router.add_api_route(f"{prefix}/url{suffix}", predict_url, methods=["POST"], openapi_extra=URL_BODY_DOC,
                             include_in_schema=not prefix and not suffix, summary="Predict on an image URL")
