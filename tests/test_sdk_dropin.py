"""The service's own Python SDK against the real server on loopback: only the endpoint changes.

Every prediction method of `CustomVisionPredictionClient`, on a classifier and on a
detector, with and without a token on the server; results are compared with the same
model run in-process, and the typed objects must carry UUIDs and a date-time.
"""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorException, ImagePrediction
from msrest.authentication import ApiKeyCredentials, Authentication

from edge_runtime.config import load_settings
from edge_runtime.model.imageio import decode_image
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.conftest import solid
from tests.models import S1_BOXES
from tests.server_util import running

KEY = "s3cret-prediction-key"
PROJECT = "5f0c8a8e-9d3b-4c1e-8f47-2a6b1d9e3c70"  # the cloud project id an application already has
PUBLISHED = "Iteration1"
ORANGE = (0, 128, 255)  # BGR: red 255, green 128; PNG keeps the values exact
CALLS = {
    "classify": ("classify_image", "classify_image_with_no_store", "classify_image_url",
                 "classify_image_url_with_no_store"),
    "detect": ("detect_image", "detect_image_with_no_store", "detect_image_url", "detect_image_url_with_no_store"),
}


def png(image: np.ndarray) -> bytes:
    ok, data = cv2.imencode(".png", image)
    assert ok
    return data.tobytes()


IMAGE = png(solid(ORANGE, 200, 100))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):  # type: ignore[no-untyped-def]
        pass


@pytest.fixture(scope="module")
def image_host(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Serves image.png on 127.0.0.1, for the *_url methods."""
    root = tmp_path_factory.mktemp("www")
    (root / "image.png").write_bytes(IMAGE)
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_Quiet, directory=str(root)))
    threading.Thread(target=host.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{host.server_port}"
    finally:
        host.shutdown()


@pytest.fixture(scope="module")
def predictors(exports: dict[str, Path]) -> dict[str, Predictor]:
    return {"classify": Predictor.load(exports["modern"]), "detect": Predictor.load(exports["s1"])}


def make_app(predictor: Predictor, token: str | None = None, url: str | None = None):  # type: ignore[no-untyped-def]
    """`url`: turn /url on for that image host (allow-list entries are host:port)."""
    server = {"url": {"enabled": True, "allow_hosts": [url.split("//", 1)[1]]}} if url else {}
    settings = load_settings(env={}, overrides={"server": server})
    return create_app(build_services(settings, predictor=predictor, env={"EDGE_RUNTIME_TOKEN": token} if token else {}))


def sdk(endpoint: str, key: str | None) -> CustomVisionPredictionClient:
    """Built exactly as applications build it for the cloud, with a device URL as the endpoint
    (`key=None`: no key header at all)."""
    credentials = ApiKeyCredentials(in_headers={"Prediction-key": key}) if key else Authentication()
    return CustomVisionPredictionClient(endpoint, credentials)


def call(client: CustomVisionPredictionClient, method: str, image_url: str) -> ImagePrediction:
    data = image_url if "_url" in method else IMAGE
    result = getattr(client, method)(PROJECT, PUBLISHED, data, application="kiosk")
    assert isinstance(result, ImagePrediction)
    return result


def as_tuples(result: ImagePrediction) -> list[tuple[str, float, tuple[float, ...] | None]]:
    return [(p.tag_name, p.probability, None if p.bounding_box is None else
             (p.bounding_box.left, p.bounding_box.top, p.bounding_box.width, p.bounding_box.height))
            for p in result.predictions]


@pytest.mark.parametrize("token", [None, KEY], ids=["open", "token"])
@pytest.mark.parametrize("kind", ["classify", "detect"])
def test_every_prediction_method_answers_as_the_service_does(kind, token, predictors, image_host):
    predictor = predictors[kind]
    reference = predictor.predict(decode_image(IMAGE))
    expected = [(p.tag_name, pytest.approx(p.probability, abs=1e-7),
                 None if p.bounding_box is None else pytest.approx(tuple(p.bounding_box.to_json().values())))
                for p in reference.predictions]
    tag_ids = dict(zip(predictor.spec.labels or (), predictor.spec.tag_ids or (), strict=True))
    with running(make_app(predictor, token, url=image_host)) as endpoint:
        client = sdk(endpoint, token)
        for method in CALLS[kind]:
            before = dt.datetime.now(dt.timezone.utc)
            result = call(client, method, f"{image_host}/image.png")
            assert as_tuples(result) == expected, method
            assert result.project == PROJECT  # echoed, as the service does
            assert result.iteration == predictor.iteration == "00000000-0000-0000-0000-000000000001"
            assert uuid.UUID(result.id).version == 4
            assert before - dt.timedelta(seconds=1) <= result.created <= dt.datetime.now(dt.timezone.utc)
            for p in result.predictions:
                assert p.tag_id == tag_ids[p.tag_name] == str(uuid.UUID(p.tag_id))
    if kind == "classify":
        assert result.predictions[0].tag_name == "red"
    else:  # the S1 model's fixed boxes, scored by mean red and mean green
        (red, green) = result.predictions
        assert (red.tag_name, green.tag_name) == ("red", "green")
        assert (red.probability, green.probability) == (pytest.approx(1.0), pytest.approx(128 / 255))
        x1, y1, x2, y2 = S1_BOXES[0]
        box = red.bounding_box
        assert (box.left, box.top, box.width, box.height) == pytest.approx((x1, y1, x2 - x1, y2 - y1))


def test_a_wrong_or_missing_key_is_refused_in_the_service_error_shape(predictors):
    with running(make_app(predictors["classify"], KEY)) as endpoint:
        for key in ("wrong", None):
            with pytest.raises(CustomVisionErrorException) as err:
                sdk(endpoint, key).classify_image(PROJECT, PUBLISHED, IMAGE)
            assert err.value.response.status_code == 401
            assert err.value.error.code == "Unauthorized"
            assert str(err.value) == "a valid Prediction-Key header or bearer token is required"
        # a bearer token works too; so do a raw octet-stream body and the older v3.0 base path
        path = f"/customvision/v3.0/prediction/{PROJECT}/classify/iterations/any/image/nostore?application=kiosk"
        raw = httpx.post(endpoint + path, content=IMAGE,
                         headers={"Authorization": f"Bearer {KEY}", "Content-Type": "application/octet-stream"})
        assert raw.status_code == 200, raw.text
        assert raw.json()["predictions"][0]["tagName"] == "red" and raw.json()["project"] == PROJECT
        # the key header opens only the Prediction API's routes
        assert httpx.post(f"{endpoint}/image", content=IMAGE, headers={"Prediction-Key": KEY}).status_code == 401


@pytest.mark.parametrize(("kind", "other"), [("classify", "detect"), ("detect", "classify")])
def test_the_wrong_kind_of_call_gets_the_service_error_not_a_crash(kind, other, predictors, image_host):
    with running(make_app(predictors[kind], url=image_host)) as endpoint:
        for method in CALLS[other]:
            with pytest.raises(CustomVisionErrorException) as err:
                call(sdk(endpoint, None), method, f"{image_host}/image.png")
            assert err.value.response.status_code == 400, method
            assert err.value.error.code == "BadRequestNotSupported"
            assert f"call {kind}" in str(err.value)
        assert call(sdk(endpoint, None), CALLS[kind][0], "").predictions  # and the server still serves


def test_url_methods_follow_the_url_rules(predictors, image_host):
    with running(make_app(predictors["classify"])) as endpoint:  # /url is off by default
        with pytest.raises(CustomVisionErrorException) as err:
            sdk(endpoint, None).classify_image_url(PROJECT, PUBLISHED, f"{image_host}/image.png")
        assert err.value.response.status_code == 403 and "server.url.enabled" in str(err.value)
    with running(make_app(predictors["classify"], url=image_host)) as endpoint:
        port = image_host.rsplit(":", 1)[1]
        with pytest.raises(CustomVisionErrorException) as err:  # allow-listed by name: localhost is not 127.0.0.1
            sdk(endpoint, None).classify_image_url(PROJECT, PUBLISHED, f"http://localhost:{port}/image.png")
        assert err.value.response.status_code == 403 and "allow_hosts" in str(err.value)


def test_project_and_published_name_are_taken_as_given(predictors):
    with running(make_app(predictors["classify"])) as endpoint:
        r = httpx.post(f"{endpoint}/customvision/v3.1/prediction/shelf/classify/iterations/prod%20v2/image",
                       files={"imageData": ("a.png", IMAGE, "image/png")})
        assert r.status_code == 200, r.text
        assert r.json()["project"] == "shelf"
        plain = httpx.post(f"{endpoint}/image", content=IMAGE).json()  # no project in the path: the model's own
        assert plain["project"] == predictors["classify"].project == str(uuid.UUID(plain["project"]))


def test_an_upload_over_a_megabyte_arrives_byte_for_byte(predictors):
    """The SDK sends imageData without a filename, which multipart parsers treat as text."""
    big = png(np.random.default_rng(7).integers(0, 256, (900, 1200, 3), np.uint8))
    assert 1 << 20 < len(big) < 4 * 1024 * 1024
    expected = [(p.tag_name, pytest.approx(p.probability, abs=1e-7))
                for p in predictors["classify"].predict(decode_image(big)).predictions]
    with running(make_app(predictors["classify"])) as endpoint:
        result = sdk(endpoint, None).classify_image_with_no_store(PROJECT, PUBLISHED, big)
    assert [(p.tag_name, p.probability) for p in result.predictions] == expected
