"""The label routes on a real server: listing, the clean image, saving over revisions, grabbing
a camera's frame, and hostile input (no token, huge bodies, non-finite boxes, ids that climb)."""

from __future__ import annotations

import socket
import time
from pathlib import Path

import httpx
import pytest

from edge_runtime.model.predictor import Predictor
from tests.conftest import jpeg_bytes, solid, wait_for
from tests.events_util import AUTH, GREY, RED, TOKEN, colour_video
from tests.server_util import make_app, running

T0 = 1_790_000_000.0
pytestmark = pytest.mark.timeout(120)


def label_app(predictor: Predictor, tmp_path: Path, **events: object):  # type: ignore[no-untyped-def]
    video = colour_video(tmp_path / "v.avi", [(GREY, 10), (RED, 10)])
    store = {"path": str(tmp_path / "data"), "min_free_mb": 0}
    return make_app(predictor, token=TOKEN, events={"store": store, **events},
                    samples={"samplers": [{"type": "tags", "tags": ["never-seen"]}]},  # a store, no samples
                    cameras=[{"id": "door", "source": str(video), "realtime": True, "loop": True}])


def keep(app, count: int, camera: str = "door", start: float = T0) -> list[str]:  # type: ignore[no-untyped-def]
    store = app.state.services.store
    return [store.add_sample("random", camera, start + i, jpeg_bytes(solid(RED, 64, 48)),
                             {"predictions": [{"tagName": "red", "probability": 0.9, "boundingBox": None}]})
            for i in range(count)]


@pytest.fixture(scope="module")
def detector(exports):  # type: ignore[no-untyped-def]
    return Predictor.load(exports["yolo"])


def test_frames_are_listed_a_page_at_a_time_and_labelled_over_revisions(colours, tmp_path):
    app = label_app(colours, tmp_path)
    with running(app) as url:
        ids = keep(app, 5) + keep(app, 2, camera="yard", start=T0 + 10)
        models = httpx.get(f"{url}/api/label/models", headers=AUTH).json()
        assert models["models"][0]["kind"] == "classification" and "red" in models["models"][0]["tags"]
        model = models["models"][0]["name"]
        first = httpx.get(f"{url}/api/label/items", params={"model": model, "limit": 4}, headers=AUTH).json()
        assert [i["id"] for i in first["items"]] == ids[::-1][:4] and first["next"] == ids[3]
        rest = httpx.get(f"{url}/api/label/items", params={"model": model, "cursor": first["next"]},
                         headers=AUTH).json()
        assert [i["id"] for i in rest["items"]] == ids[::-1][4:] and rest["next"] is None
        assert first["items"][0]["predictions"][0]["tagName"] == "red"
        image = httpx.get(url + first["items"][0]["image"], headers=AUTH)
        assert image.status_code == 200 and image.content[:2] == b"\xff\xd8"

        put = f"{url}/api/label/items/{ids[0]}/labels/{model}"
        saved = httpx.put(put, json={"revision": 0, "tags": ["a-new-tag"]}, headers=AUTH)
        assert saved.status_code == 200 and saved.json()["revision"] == 1
        stale = httpx.put(put, json={"revision": 0, "tags": ["red"]}, headers=AUTH)  # a second browser
        assert stale.status_code == 409 and stale.json()["current"]["tags"] == ["a-new-tag"]
        assert httpx.put(put, json={"revision": 1, "tags": ["red"]}, headers=AUTH).json()["revision"] == 2
        other = httpx.put(f"{url}/api/label/items/{ids[1]}/labels/{model}", json={"revision": 0, "tags": ["red"]},
                          headers=AUTH)
        assert other.status_code == 200  # another frame never conflicts
        assert "a-new-tag" not in httpx.get(f"{url}/api/label/models", headers=AUTH).json()["models"][0]["newTags"]

        def listed(**params: object) -> list[str]:
            body = httpx.get(f"{url}/api/label/items", params={"model": model, **params}, headers=AUTH).json()
            return [i["id"] for i in body["items"]]

        assert set(listed(labelled="true")) == {ids[0], ids[1]}
        assert set(listed(labelled="false")) == set(ids[2:])
        assert set(listed(camera="yard")) == set(ids[5:])
        assert httpx.delete(put, params={"revision": 1}, headers=AUTH).status_code == 409
        assert httpx.delete(put, params={"revision": 2}, headers=AUTH).status_code == 204
        assert httpx.delete(put, headers=AUTH).status_code == 404


def test_a_frame_grabbed_from_a_camera_is_kept_as_a_manual_sample(colours, tmp_path):
    app = label_app(colours, tmp_path)
    with running(app) as url:
        svc = app.state.services
        assert wait_for(lambda: svc.latest.get("door") is not None, timeout=20)
        grabbed = httpx.post(f"{url}/api/label/grab", params={"camera": "door"}, headers=AUTH)
        assert grabbed.status_code == 201
        item = grabbed.json()
        assert item["sampler"] == "manual" and item["camera"] == "door" and item["label"] is None
        assert httpx.get(url + item["image"], headers=AUTH).content[:2] == b"\xff\xd8"
        assert httpx.post(f"{url}/api/label/grab", params={"camera": "nope"}, headers=AUTH).status_code == 404


def test_a_detectors_boxes_are_saved_and_bad_boxes_refused_in_one_line(detector, tmp_path):
    app = label_app(detector, tmp_path)
    with running(app) as url:
        sample = keep(app, 1)[0]
        model = httpx.get(f"{url}/api/label/models", headers=AUTH).json()["models"][0]
        assert model["kind"] == "detection"
        put = f"{url}/api/label/items/{sample}/labels/{model['name']}"
        box = {"tag": "cola", "left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4}
        saved = httpx.put(put, json={"revision": 0, "boxes": [box]}, headers=AUTH)
        assert saved.status_code == 200 and saved.json()["boxes"] == [box]
        for bad in ('{"revision": 1, "boxes": [{"tag": "a", "left": NaN, "top": 0, "width": 0.1, "height": 0.1}]}',
                    '{"revision": 1, "boxes": [{"tag": "a", "left": 0, "top": 0, "width": 1e400, "height": 0.1}]}',
                    '{"revision": 1, "boxes": [{"tag": "a", "left": -0.1, "top": 0, "width": 0.1, "height": 0.1}]}',
                    '{"revision": 1, "boxes": [{"tag": "a", "left": 0.9, "top": 0, "width": 0.5, "height": 0.1}]}',
                    '{"revision": 1, "boxes": [{"tag": "a", "left": 0, "top": 0, "width": 0, "height": 0.1}]}',
                    '{"revision": 1, "tags": ["a"]}',
                    '{"revision": 1, "boxes": [], "extra": 1}',
                    '{"revision": "1", "boxes": []}',
                    '{"revision": -1, "boxes": []}',
                    '[1, 2',
                    '{"revision": 1, "boxes": [{"tag": "../../etc", "left": 0, "top": 0, "width": 0.1, '
                    '"height": 0.1}]}'):
            refused = httpx.put(put, content=bad, headers={**AUTH, "Content-Type": "application/json"})
            assert refused.status_code == 422, bad
            assert "\n" not in refused.json()["message"]
        assert httpx.get(f"{url}/api/label/items", params={"model": model["name"]},
                         headers=AUTH).json()["items"][0]["label"]["boxes"] == [box]  # nothing overwritten


def test_hostile_requests_are_refused_and_the_server_keeps_serving(colours, tmp_path):
    app = label_app(colours, tmp_path)
    with running(app) as url:
        sample = keep(app, 1)[0]
        model = app.state.services.models.default.name
        put = f"{url}/api/label/items/{sample}/labels/{model}"
        assert httpx.put(put, json={"revision": 0, "tags": ["a"]}).status_code == 401
        assert httpx.get(f"{url}/api/label/items", params={"model": model}).status_code == 401
        assert httpx.get(f"{url}/api/label/items/{sample}/image.jpg").status_code == 401
        assert httpx.post(f"{url}/api/label/grab").status_code == 401
        huge = httpx.put(put, content=b'{"revision": 0, "tags": ["' + b"a" * (1 << 20) + b'"]}',
                         headers={**AUTH, "Content-Type": "application/json"})
        assert huge.status_code == 413
        # a grab takes no body: a large one is refused before the store or the cameras are asked
        assert httpx.post(f"{url}/api/label/grab", content=b"x" * (64 << 10), headers=AUTH).status_code == 413
        for item in ("..%2F..%2Fevents.db", "../../events.db", "samples%2F2026-01-01%2Fx", "x" * 26,
                     sample.lower(), "01HZZZZZZZZZZZZZZZZZZZZZZZ"):
            got = httpx.get(f"{url}/api/label/items/{item}/image.jpg", headers=AUTH)
            assert got.status_code in (400, 404), item
            assert got.headers["content-type"].startswith("application/json")
            assert httpx.put(f"{url}/api/label/items/{item}/labels/{model}", json={"revision": 0, "tags": ["a"]},
                             headers=AUTH).status_code in (400, 404)
        assert httpx.put(f"{url}/api/label/items/{sample}/labels/nope", json={"revision": 0, "tags": ["a"]},
                         headers=AUTH).status_code == 404
        assert httpx.get(f"{url}/api/label/items", params={"model": "../x"}, headers=AUTH).status_code == 400
        assert app.state.services.store.labels(model) == []
        assert httpx.put(put, json={"revision": 0, "tags": ["a"]}, headers=AUTH).status_code == 200


def test_no_token_is_refused_before_the_body_is_read(colours, tmp_path):
    """A body that never ends: the 401 comes back at once, without it."""
    app = label_app(colours, tmp_path)
    with running(app) as url:
        sample = keep(app, 1)[0]
        host, port = url.removeprefix("http://").split(":")
        with socket.create_connection((host, int(port)), timeout=10) as s:
            s.sendall(f"PUT /api/label/items/{sample}/labels/x HTTP/1.1\r\nHost: {host}\r\n"
                      "Content-Type: application/json\r\nContent-Length: 100000\r\n\r\n{".encode())
            started = time.monotonic()
            answer = s.recv(4096)
        assert answer.startswith(b"HTTP/1.1 401") and time.monotonic() - started < 5
