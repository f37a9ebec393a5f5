"""The Prediction API routes select a published model by project id and name: the service's
own Python SDK calls two models of one device side by side, over a real server on loopback."""

from __future__ import annotations

from pathlib import Path

import cv2
import httpx
import pytest
from azure.cognitiveservices.vision.customvision.prediction import CustomVisionPredictionClient
from azure.cognitiveservices.vision.customvision.prediction.models import CustomVisionErrorException
from msrest.authentication import ApiKeyCredentials

from edge_runtime.config import load_settings
from edge_runtime.publish.store import ModelStore
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.conftest import solid
from tests.server_util import running

KEY = "s3cret-prediction-key"
SHELF_PROJECT = "5f0c8a8e-9d3b-4c1e-8f47-2a6b1d9e3c70"


def png(bgr: tuple[int, int, int]) -> bytes:
    return cv2.imencode(".png", solid(bgr, 320, 240))[1].tobytes()


RED = png((0, 0, 255))


def sdk(url: str) -> CustomVisionPredictionClient:
    return CustomVisionPredictionClient(url, ApiKeyCredentials(in_headers={"Prediction-key": KEY}))


def serve(store: Path, **overrides: object) -> str:  # the app over a store; the caller runs it
    settings = load_settings(env={}, overrides={"models": {"path": str(store)},  # changes recorded beside it
                                                "events": {"store": {"path": str(store.parent / "events")}},
                                                **overrides})
    return create_app(build_services(settings, env={"EDGE_RUNTIME_TOKEN": KEY}))  # type: ignore[return-value]


@pytest.fixture(scope="module")
def two_models(exports, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("store") / "models"
    store = ModelStore.open(root)
    store.publish(exports["modern"], "shelf", project=SHELF_PROJECT)  # answers its own project only
    store.publish(exports["yolo"], "door")  # published without a project: answers any
    return root


def test_the_sdk_reaches_each_published_model_by_name(two_models):
    with running(serve(two_models)) as url:
        client = sdk(url)
        shelf = client.classify_image(SHELF_PROJECT, "shelf", RED)
        assert shelf.predictions[0].tag_name == "red" and shelf.project == SHELF_PROJECT
        door = client.detect_image("any-project-id", "door", RED)
        assert door.predictions and door.predictions[0].bounding_box is not None  # the detector answered
        assert shelf.predictions[0].bounding_box is None  # and the classifier the other
        # the container's routes select the same way
        with httpx.Client(base_url=url, headers={"Authorization": f"Bearer {KEY}"}, timeout=30) as http:
            r = http.post(f"/{SHELF_PROJECT}/classify/iterations/shelf/image", content=RED)
            assert r.status_code == 200 and r.json()["predictions"][0]["tagName"] == "red"
            assert http.post("/any/detect/iterations/door/image", content=RED).json()["predictions"][0][
                "boundingBox"]
            # with no model named, the default: the first published name, not the demo
            assert http.post("/image", content=RED).json()["predictions"][0]["boundingBox"]
            assert http.get("/model").json()["variant"] != "multiclass"


@pytest.mark.parametrize(("project", "name", "code"), [
    (SHELF_PROJECT, "Iteration1", "NotFoundIteration"),  # several models: the name must match
    ("another-project", "shelf", "NotFoundProject"),  # shelf answers its own project only
])
def test_an_unknown_name_or_project_is_the_services_error(two_models, project, name, code):
    with running(serve(two_models)) as url:
        with pytest.raises(CustomVisionErrorException) as err:
            sdk(url).classify_image(project, name, RED)
        assert err.value.response.status_code == 404 and err.value.error.code == code
        r = httpx.post(f"{url}/{project}/classify/iterations/{name}/image", content=RED,
                       headers={"Authorization": f"Bearer {KEY}"}, timeout=30)
        assert r.status_code == 404 and r.json()["code"] == code and "\n" not in r.json()["message"]


def test_while_one_model_is_published_any_name_reaches_it(exports, tmp_path):
    root = tmp_path / "models"
    ModelStore.open(root).publish(exports["modern"], "shelf")
    with running(serve(root)) as url:
        assert sdk(url).classify_image("cloud-project", "Iteration1", RED).predictions[0].tag_name == "red"


def test_a_model_named_on_the_command_line_is_served_beside_the_store(exports, two_models):
    with running(serve(two_models, model={"path": str(exports["legacy"])})) as url:
        client = sdk(url)
        assert client.classify_image("p", "legacy", RED).predictions[0].tag_name == "red"  # its folder's name
        assert client.classify_image(SHELF_PROJECT, "shelf", RED).predictions[0].tag_name == "red"
        with pytest.raises(CustomVisionErrorException):
            client.classify_image("p", "Iteration1", RED)


@pytest.mark.parametrize("name", ["x" * 10_000, "..%2F..%2Fetc", "%00", "shelf%20", "SHELF"])
def test_hostile_names_in_the_path_are_only_not_found(two_models, name):
    with running(serve(two_models)) as url:
        r = httpx.post(f"{url}/customvision/v3.1/prediction/{SHELF_PROJECT}/classify/iterations/{name}/image",
                       content=RED, headers={"Prediction-Key": KEY}, timeout=30)
        assert r.status_code == 404 and r.json()["code"].startswith("NotFound"), r.text  # no route, or no model
        assert len(r.json()["message"]) < 300 and "\n" not in r.json()["message"]
        assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200


def test_api_models_lists_what_answers_and_needs_the_token(two_models):
    with running(serve(two_models)) as url:
        assert httpx.get(f"{url}/api/models", timeout=10).status_code == 401
        models = httpx.get(f"{url}/api/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        assert [(m["name"], m["project"], m["version"], m["default"]) for m in models] == [
            ("door", None, 1, True), ("shelf", SHELF_PROJECT, 1, False)]
        assert models[1]["tags"] and len(models[1]["sha1"]) == 40 and models[0]["variant"] != models[1]["variant"]


def test_a_damaged_name_is_left_out_and_the_others_are_served(exports, tmp_path, caplog):
    root = tmp_path / "models"
    store = ModelStore.open(root)
    store.publish(exports["modern"], "shelf")
    store.publish(exports["yolo"], "door")
    (root / "door" / "state.json").write_text("{not json")
    (root / "gone").mkdir()
    (root / "gone" / "state.json").write_text((root / "shelf" / "state.json").read_text().replace('"shelf"', '"gone"'))
    with running(serve(root)) as url:  # gone names a version that is not there
        models = httpx.get(f"{url}/api/models", headers={"Authorization": f"Bearer {KEY}"}, timeout=10).json()
        assert [m["name"] for m in models] == ["shelf"]
    assert any("door is not served" in r.message for r in caplog.records)
    assert any("gone is not served" in r.message for r in caplog.records)
