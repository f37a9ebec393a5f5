"""The API's own documentation, behind the token and with no CDN: /docs (Swagger UI),
/redoc and /openapi.json. The Swagger UI and ReDoc files come from the fastapi-offline
package (MIT; Swagger UI is Apache-2.0, ReDoc MIT), so the pages work on a device with no
internet connection.
"""

from __future__ import annotations

from importlib import resources

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.responses import HTMLResponse, JSONResponse, Response

from .auth import auth_of, require_token, signin_page
from .errors import NotFound

router = APIRouter(include_in_schema=False)
ASSETS = {
    "swagger-ui-bundle.js": "text/javascript",
    "swagger-ui.css": "text/css",
    "redoc.standalone.js": "text/javascript",
    "favicon.png": "image/png",
}
ASSET_PATH = "/docs/assets/"


@router.get("/openapi.json", dependencies=[Depends(require_token)])
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get("/docs")
async def swagger(request: Request) -> HTMLResponse:
    if not auth_of(request).authenticated(request):
        return signin_page("/docs")
    return get_swagger_ui_html(openapi_url="/openapi.json", title=f"{request.app.title}: API",
                               swagger_js_url=ASSET_PATH + "swagger-ui-bundle.js",
                               swagger_css_url=ASSET_PATH + "swagger-ui.css",
                               swagger_favicon_url=ASSET_PATH + "favicon.png")


@router.get("/redoc")
async def redoc(request: Request) -> HTMLResponse:
    if not auth_of(request).authenticated(request):
        return signin_page("/redoc")
    return get_redoc_html(openapi_url="/openapi.json", title=f"{request.app.title}: API",
                          redoc_js_url=ASSET_PATH + "redoc.standalone.js",
                          redoc_favicon_url=ASSET_PATH + "favicon.png", with_google_fonts=False)


@router.get(ASSET_PATH + "{name}")
async def asset(name: str) -> Response:
    """Public files of the two viewers (no token: they hold nothing of this device)."""
    if name not in ASSETS:
        raise NotFound(f"no asset {name!r}")
    try:
        data = resources.files("fastapi_offline").joinpath("static").joinpath(name).read_bytes()
    except ModuleNotFoundError as exc:
        raise NotFound("the API viewers are not installed: pip install 'edge-runtime[server]'") from exc
    return Response(data, media_type=ASSETS[name], headers={"Cache-Control": "max-age=86400"})
