"""The cloud Prediction API's routes, so the service's SDKs need only a new endpoint.

    client = CustomVisionPredictionClient("http://device:8080",
                                          ApiKeyCredentials(in_headers={"Prediction-Key": TOKEN}))
    client.classify_image(project_id, "Iteration1", data)

Under /customvision/v3.0/prediction and /customvision/v3.1/prediction:
{projectId}/classify|detect/iterations/{publishedName}/image|url, each with /nostore.
Uploads and URLs follow POST /image and POST /url (same limits, /url off unless enabled);
nothing is stored, so /nostore answers the same. `projectId` and `publishedName` are taken
as given (one model is loaded); `project` in the answer echoes `projectId`, as the service
does. The key is the server's token, in a `Prediction-Key` header or as a bearer token.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, Path, Query, Request, Response

from ..model.predictor import Predictor
from . import predict
from .auth import require_prediction_key
from .errors import NotSupported
from .state import Services, services

router = APIRouter(dependencies=[Depends(require_prediction_key)], tags=["Custom Vision Prediction API"])
VERSIONS = ("v3.1", "v3.0")  # v3.1 is what current SDKs call; v3.0 for older ones
APPLICATION = Query(None, description="the calling application's name; accepted and ignored")
PROJECT_ID = Path(alias="projectId", description="the project's id; echoed as `project`")
PUBLISHED_NAME = Path(alias="publishedName", description="the published name (`edge-runtime models`); while one "
                      "model is served, any name reaches it")

Handler = Callable[..., Awaitable[Response]]


def _check_kind(predictor: Predictor, detect: bool) -> None:
    """The service refuses classify on a detection project and detect on a classifier."""
    if predictor.spec.variant.is_detection != detect:
        what, right = ("a classifier", "classify") if detect else ("an object detector", "detect")
        raise NotSupported(f"{'detect' if detect else 'classify'} is not supported: the model is {what}; "
                           f"call {right}")


def _echo_project(response: Response, project_id: str) -> Response:
    """POST /url's own handler answers, so its rules (and any hardening of them) hold here
    unchanged; its small answer is then rewritten to echo the project."""
    body = json.loads(bytes(response.body))
    body["project"] = project_id
    return Response(json.dumps(body).encode(), media_type="application/json")


def _image_route(detect: bool) -> Handler:
    async def predict_image(
        request: Request, project_id: str = PROJECT_ID, published_name: str = PUBLISHED_NAME,
        application: str | None = APPLICATION, svc: Services = Depends(services),
    ) -> Response:
        """An image as multipart field `imageData` or as the raw body (application/octet-stream)."""
        model = (await svc.served(project_id, published_name)).predictor
        _check_kind(model, detect)
        data = await predict._image_bytes(request, svc.settings.server.max_upload_bytes)
        return await predict._predict(svc, data, project_id, predictor=model)

    return predict_image


def _url_route(detect: bool) -> Handler:
    async def predict_url(
        request: Request, project_id: str = PROJECT_ID, published_name: str = PUBLISHED_NAME,
        application: str | None = APPLICATION, svc: Services = Depends(services),
    ) -> Response:
        """JSON {"url": ...}; off unless server.url.enabled, and only allow-listed hosts."""
        model = (await svc.served(project_id, published_name)).predictor
        _check_kind(model, detect)
        return _echo_project(await predict.fetch_and_predict(request, svc, model), project_id)

    return predict_url


for version in VERSIONS:
    for kind in ("classify", "detect"):
        base = f"/customvision/{version}/prediction/{{projectId}}/{kind}/iterations/{{publishedName}}"
        for suffix in ("", "/nostore"):
            shown = version == VERSIONS[0]
            router.add_api_route(f"{base}/image{suffix}", _image_route(kind == "detect"), methods=["POST"],
                                 include_in_schema=shown, summary=f"{kind.capitalize()} an uploaded image")
            router.add_api_route(f"{base}/url{suffix}", _url_route(kind == "detect"), methods=["POST"],
                                 openapi_extra=predict.URL_BODY_DOC, include_in_schema=shown,
                                 summary=f"{kind.capitalize()} an image URL")
