"""Prediction on uploads: POST /image, /url and the exported container's route aliases."""

from __future__ import annotations

import urllib.error
import urllib.parse
import urllib.request
from collections.abc import AsyncGenerator

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers, UploadFile
from starlette.formparsers import MultiPartParser

from ..imageio import decoded
from .errors import BadRequest, Forbidden, PayloadTooLarge, UpstreamError
from .state import Services, require_token, services

router = APIRouter(dependencies=[Depends(require_token)], tags=["predict"])
MULTIPART_OVERHEAD = 64 * 1024
IMAGE_FIELD = "imageData"


class UrlBody(BaseModel):
    url: str


async def read_capped(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(f"the upload is {declared} bytes; the limit is {limit}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(f"the upload is over the {limit}-byte limit")
        chunks.append(chunk)
    return b"".join(chunks)


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


async def _predict(svc: Services, data: bytes, project: str = "") -> Response:
    def work() -> bytes:
        # the image's share of the decode budget is held until its prediction is done
        with decoded(data, svc.settings.server.max_image_pixels, svc.predictor.spec.input) as frame:
            result = svc.predictor.predict(frame)
        # serialised here, off the event loop, and without FastAPI's generic encoder (slow for 1000 tags)
        return result.json_text(project or svc.settings.server.project, svc.predictor.iteration).encode()

    return Response(await run_in_threadpool(work), media_type="application/json")


async def predict_image(request: Request, svc: Services = Depends(services)) -> Response:
    """Predict on an image sent as the raw body or as the multipart field `imageData`."""
    return await _predict(svc, await _image_bytes(request, svc.settings.server.max_upload_bytes))


class _NoRedirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req, fp, code, msg, headers, newurl):  # type: ignore[no-untyped-def]
        raise UpstreamError(f"the image URL redirects ({code}); redirects are not followed")


def _fetch(url: str, limit: int, timeout: float) -> bytes:
    opener = urllib.request.build_opener(_NoRedirects)
    try:
        with opener.open(urllib.request.Request(url, headers={"User-Agent": "edge-runtime"}), timeout=timeout) as r:
            data: bytes = r.read(limit + 1)
    except urllib.error.HTTPError as exc:
        raise UpstreamError(f"fetching the image failed: HTTP {exc.code}") from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise UpstreamError(f"fetching the image failed: {getattr(exc, 'reason', exc)}") from exc
    if len(data) > limit:
        raise PayloadTooLarge(f"the image at that URL is over the {limit}-byte limit")
    return data


def check_url(url: str, allow_hosts: list[str]) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise BadRequest("url must be an http:// or https:// address")
    host = parts.hostname.lower()
    if host not in {h.lower() for h in allow_hosts}:
        raise Forbidden(f"host {host} is not in server.url.allow_hosts")
    return url


async def predict_url(body: UrlBody, svc: Services = Depends(services)) -> Response:
    """Fetch an image from an allow-listed host and predict on it (off unless enabled)."""
    cfg = svc.settings.server.url
    if not cfg.enabled:
        raise Forbidden("POST /url is disabled: set server.url.enabled and server.url.allow_hosts to use it")
    url = check_url(body.url, cfg.allow_hosts)
    data = await run_in_threadpool(_fetch, url, svc.settings.server.max_upload_bytes, cfg.timeout_s)
    return await _predict(svc, data)


for prefix in ("", "/{project}/classify/iterations/{published_name}", "/{project}/detect/iterations/{published_name}"):
    for suffix in ("", "/nostore"):
        router.add_api_route(f"{prefix}/image{suffix}", predict_image, methods=["POST"],
                             include_in_schema=not prefix and not suffix, summary="Predict on an uploaded image")
        router.add_api_route(f"{prefix}/url{suffix}", predict_url, methods=["POST"],
                             include_in_schema=not prefix and not suffix, summary="Predict on an image URL")
