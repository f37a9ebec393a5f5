"""Versions swapped in while a real server answers: PUT, the command line, rollback by hand
and by itself, checks that refuse a version, unload-first, and a camera switching between
two frames. Real exports, real onnxruntime sessions, a real uvicorn server on loopback."""

from __future__ import annotations

import json
import os
import socket
import threading
import time
from pathlib import Path

import cv2
import httpx
import pytest

from edge_runtime.config import load_settings
from edge_runtime.errors import ModelStoreError
from edge_runtime.publish.store import ModelStore
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests import models
from tests.conftest import solid, wait_for
from tests.server_util import answer, running

TOKEN = "swap-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
PHOTO = (Path(__file__).resolve().parent.parent / "edge_runtime/demo/samples/coffee.jpg").read_bytes()
RED = cv2.imencode(".png", solid((0, 0, 255), 320, 240))[1].tobytes()


def export(root: Path, name: str, iteration: str, labels=models.COLOR_TAGS, **kind: object) -> Path:
    """A colour classifier export with its own iteration id, zipped."""
    folder = models.write_export(root / name, models.color_classifier(**kind), labels,  # type: ignore[arg-type]
                                 metadata=models.modern_metadata())
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = iteration
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return models.zip_folder(folder, root / f"{name}.zip")


ITER = [f"00000000-0000-0000-0000-00000000000{i}" for i in range(1, 6)]


@pytest.fixture
def store(tmp_path: Path) -> Path:
    root = tmp_path / "models"
    ModelStore.open(root).publish(export(tmp_path, "v1", ITER[1]), "shelf")
    return root


def app_over(store: Path, **overrides: object):  # type: ignore[no-untyped-def]
    overrides.setdefault("events", {"store": {"path": str(store.parent / "events")}})  # the changes, beside it
    settings = load_settings(env={}, overrides={"models": {"path": str(store), "probation_s": 60,
                                                           **overrides.pop("models", {})}, **overrides})
    svc = build_services(settings, env={"EDGE_RUNTIME_TOKEN": TOKEN})
    return create_app(svc), svc


def put(url: str, path: Path, name: str = "shelf", **params: str) -> httpx.Response:
    return httpx.put(f"{url}/api/models/{name}", content=path.read_bytes(), params=params, headers=BEARER, timeout=60)


def listed(url: str) -> dict[str, dict]:
    return {m["name"]: m for m in httpx.get(f"{url}/api/models", headers=BEARER, timeout=10).json()}


class Hammer:
    """Clients posting photos all the time, counting every answer and the iterations seen."""

    def __init__(self, url: str, clients: int = 4) -> None:
        self.url, self.stop = url, threading.Event()
        self.statuses: list[int] = []
        self.iterations: list[str] = []
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(clients)]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=BEARER, timeout=30) as http:
            while not self.stop.is_set():
                r = http.post("/customvision/v3.1/prediction/any/classify/iterations/shelf/image", content=PHOTO)
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.iterations.append(r.json()["iteration"])

    def __enter__(self) -> Hammer:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(30)


@pytest.mark.timeout(120)
def test_a_put_swaps_in_each_new_version_while_every_request_keeps_answering(store, tmp_path):
    app, _ = app_over(store)
    with running(app) as url, Hammer(url) as hammer:
        assert wait_for(lambda: len(hammer.statuses) > 10, timeout=20)
        for i, iteration in ((2, ITER[2]), (3, ITER[3])):
            r = put(url, export(tmp_path, f"v{i}", iteration))
            assert r.status_code == 201, r.text
            assert r.json()["version"] == i and r.json()["iteration"] == iteration
            seen = len(hammer.iterations)
            assert wait_for(lambda seen=seen: len(hammer.iterations) > seen + 5, timeout=20)
    assert hammer.statuses and set(hammer.statuses) == {200}  # no request failed during the swaps
    assert hammer.iterations[0] == ITER[1] and hammer.iterations[-1] == ITER[3]
    assert ITER[2] in hammer.iterations
    # and the store says so: v3 active, v2 before it
    state = ModelStore(store).state("shelf")
    assert state is not None and state.active == 3 and state.previous == 2
    scrape = app.state.services.metrics.render().decode()
    assert f'edge_model_info{{iteration="{ITER[3]}",model="shelf",version="3"}} 1.0' in scrape
    assert 'edge_model_swaps_total{model="shelf"} 2.0' in scrape and 'edge_model_memory_bytes{model="shelf"}' in scrape


@pytest.mark.timeout(120)
def test_a_version_that_fails_its_checks_never_becomes_active(store, tmp_path, exports):
    app, _ = app_over(store)
    corrupt = tmp_path / "corrupt"
    models.write_export(corrupt, models.color_classifier(), models.COLOR_TAGS, sha1="0" * 40)
    detector = models.zip_folder(exports["yolo"], tmp_path / "yolo.zip")
    with running(app) as url:
        for bad, words in ((models.zip_folder(corrupt, tmp_path / "corrupt.zip"), "sha-1"),
                           (detector, "cannot replace a classifier"),
                           (tmp_path / "not-a-zip.zip", "")):
            if not bad.exists():
                bad.write_bytes(b"PK\x03\x04 not really a zip")
            r = put(url, bad)
            assert r.status_code == 422, r.text
            assert r.json()["code"] == "ModelRefused" and "\n" not in r.json()["message"]
            assert words in r.json()["message"].lower()
        shelf = listed(url)["shelf"]
        assert shelf["version"] == 1 and shelf["refused"] == 3 and shelf["lastError"]
        assert httpx.post(f"{url}/image", content=PHOTO, headers=BEARER).json()["iteration"] == ITER[1]
    assert ModelStore(store).state("shelf").active == 1  # type: ignore[union-attr]
    assert sorted(p.name for p in (store / "shelf").iterdir() if p.name.startswith("v")) == ["v1"]


@pytest.mark.timeout(120)
def test_a_version_whose_outputs_go_bad_after_its_swap_is_rolled_back_by_itself(store, tmp_path):
    app, _ = app_over(store)
    poisoned = export(tmp_path, "nan", ITER[2], nan_on_empty_channel=True)  # fine on photos (its warm-up)
    with running(app) as url:
        assert put(url, poisoned).status_code == 201
        assert listed(url)["shelf"]["state"] == "probation"
        for _ in range(3):  # a solid colour: its outputs are NaN
            httpx.post(f"{url}/image", content=RED, headers=BEARER, timeout=30)
        assert wait_for(lambda: listed(url)["shelf"]["version"] == 1, timeout=10)
        shelf = listed(url)["shelf"]
        assert shelf["rolledBack"] == 1 and "not finite" in shelf["lastError"]
        assert shelf["changes"][-1]["reason"] == "auto-rollback"
        assert httpx.post(f"{url}/image", content=RED, headers=BEARER).json()["iteration"] == ITER[1]
    state = ModelStore(store).state("shelf")
    assert state is not None and state.active == 1 and state.history[-1].reason == "auto-rollback"


@pytest.mark.timeout(120)
def test_a_publish_from_the_command_line_reaches_the_running_server(store, tmp_path):
    app, _ = app_over(store)
    with running(app) as url:
        ModelStore.open(store).publish(export(tmp_path, "v2", ITER[2]), "shelf")  # as `edge-runtime publish` does
        ModelStore.open(store).publish(export(tmp_path, "door", ITER[4]), "door")
        assert wait_for(lambda: listed(url)["shelf"].get("version") == 2 and "door" in listed(url), timeout=15)
        assert httpx.post(f"{url}/any/classify/iterations/door/image", content=PHOTO,
                          headers=BEARER).json()["iteration"] == ITER[4]
        ModelStore.open(store).rollback("shelf")
        assert wait_for(lambda: listed(url)["shelf"]["version"] == 1, timeout=15)
        ModelStore.open(store).unpublish("door")
        assert wait_for(lambda: "door" not in listed(url), timeout=15)


@pytest.mark.timeout(120)
def test_rollback_and_delete_over_http(store, tmp_path):
    app, _ = app_over(store)
    with running(app) as url, httpx.Client(base_url=url, headers=BEARER, timeout=60) as http:
        assert http.post("/api/models/shelf/rollback").status_code == 409  # nothing before v1
        assert put(url, export(tmp_path, "v2", ITER[2])).status_code == 201
        r = http.post("/api/models/shelf/rollback")
        assert r.status_code == 200 and r.json()["version"] == 1 and r.json()["iteration"] == ITER[1]
        assert http.post("/api/models/nothing/rollback").status_code == 404
        assert put(url, export(tmp_path, "door", ITER[4]), name="door", project="p-1").status_code == 201
        assert listed(url)["door"]["project"] == "p-1"
        assert http.delete("/api/models/shelf").status_code == 409  # the default model keeps serving
        assert http.delete("/api/models/door").status_code == 204
        assert "door" not in listed(url) and not (store / "door").exists()
        assert http.delete("/api/models/door").status_code == 404


def head(path: str, **headers: str) -> bytes:
    lines = [f"PUT {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


@pytest.mark.adversarial
@pytest.mark.timeout(120)
def test_hostile_uploads_change_nothing(store, tmp_path):
    app, svc = app_over(store, models={"max_upload_mb": 1, "upload_timeout_s": 2}, server={"body_timeout_s": 1})
    v2 = export(tmp_path, "v2", ITER[2])
    with running(app, svc.settings) as url:  # with serve's connection limits
        # no token: refused before one byte of a huge body is read
        assert answer(url, head("/api/models/shelf", **{"Content-Length": str(1 << 30)}) + b"\0" * 65536)[0] == 401
        # over models.max_upload_mb: declared, then chunked as it arrives
        assert answer(url, head("/api/models/shelf", **{"Content-Length": str(2 << 20)}, **BEARER))[0] == 413
        chunk = b"%x\r\n%s\r\n" % (1 << 20, b"\0" * (1 << 20))
        chunked = head("/api/models/shelf", **{"Transfer-Encoding": "chunked"}, **BEARER) + chunk * 2
        assert answer(url, chunked)[0] == 413
        # a name or a project that could leave the store, an empty body
        for path in ("/api/models/..%2Fetc", "/api/models/.hidden", "/api/models/shelf?project=a%20b"):
            r = httpx.put(url + path, content=v2.read_bytes(), headers=BEARER)
            assert r.status_code in (400, 404), (path, r.status_code)
        assert httpx.put(f"{url}/api/models/shelf", content=b"", headers=BEARER).status_code == 422
        # an upload that stops half-way is cut at models.upload_timeout_s, not at the body deadline's cap
        started = time.monotonic()
        status, _ = answer(url, head("/api/models/shelf", **{"Content-Length": str(len(v2.read_bytes()))}, **BEARER)
                           + v2.read_bytes()[:1000], seconds=15)
        assert status == 408 and 1.5 < time.monotonic() - started < 10  # 2 s, not 1 s
        assert listed(url)["shelf"]["version"] == 1
        assert not list((store / ".uploads").iterdir())  # nothing left of the cut upload
        assert put(url, v2).status_code == 201  # and the server still takes a good one


@pytest.mark.timeout(120)
def test_unload_first_frees_the_old_version_before_loading_and_requests_wait(store, tmp_path, caplog):
    app, _ = app_over(store, models={"swap": "unload-first"})
    with running(app) as url, Hammer(url, clients=2) as hammer:
        assert wait_for(lambda: len(hammer.statuses) > 5, timeout=20)
        with caplog.at_level("INFO", logger="edge_runtime.publish.manager"):
            assert put(url, export(tmp_path, "v2", ITER[2])).status_code == 201
        assert wait_for(lambda: hammer.iterations[-1:] == [ITER[2]], timeout=20), hammer.statuses[-5:]
    assert set(hammer.statuses) == {200}
    assert "unload-first" in caplog.text and "shelf v1 freed" in caplog.text


@pytest.mark.timeout(120)
def test_a_labelled_folder_refuses_a_less_accurate_version(store, tmp_path):
    eval_dir = store / "shelf" / "eval"
    for tag, bgr in (("blue", (255, 0, 0)), ("green", (0, 255, 0)), ("red", (0, 0, 255))):
        (eval_dir / tag).mkdir(parents=True)
        cv2.imwrite(str(eval_dir / tag / "1.png"), solid(bgr, 64, 64))
    app, _ = app_over(store)
    with running(app) as url:
        worse = export(tmp_path, "worse", ITER[2], labels=("red", "blue", "green"))  # every answer wrong
        r = put(url, worse)
        assert r.status_code == 422 and "accuracy" in r.json()["message"]
        assert put(url, export(tmp_path, "same", ITER[3])).status_code == 201


@pytest.mark.timeout(120)
def test_the_names_held_out_labels_refuse_a_less_accurate_version(store, tmp_path):
    """Labels made on the device: the newest are held out, and the gate measures on them."""
    app, svc = app_over(store)
    with running(app) as url:
        events = svc.store
        for i, (tag, bgr) in enumerate((("blue", (255, 0, 0)), ("green", (0, 255, 0)), ("red", (0, 0, 255))) * 2):
            image = solid(bgr, 64, 64)
            image[:4, :4] = i  # distinct frames
            sample = events.add_sample("manual", "cam", 1_790_000_000.0 + i, cv2.imencode(".jpg", image)[1].tobytes(),
                                       {})
            events.save_label(sample, "shelf", "classification", [tag], now=1_790_000_000.0 + i)
        worse = export(tmp_path, "worse", ITER[2], labels=("red", "blue", "green"))  # every answer wrong
        r = put(url, worse)
        assert r.status_code == 422 and "held-out labels" in r.json()["message"]
        assert put(url, export(tmp_path, "same", ITER[3])).status_code == 201


@pytest.mark.timeout(120)
def test_a_camera_switches_to_the_new_version_between_two_frames(store, tmp_path):
    app, svc = app_over(store, cameras=[{"id": "cam", "source": "demo:", "model": "shelf"}], workers=0)
    with running(app) as url:
        latest = svc.latest
        assert wait_for(lambda: (r := latest.get("cam")) is not None and r.prediction.iteration == ITER[1], 20)
        assert put(url, export(tmp_path, "v2", ITER[2])).status_code == 201
        assert wait_for(lambda: latest.get("cam").prediction.iteration == ITER[2], timeout=20)  # type: ignore[union-attr]
        assert svc.pipeline is not None and svc.pipeline.errors == 0
        scrape = svc.metrics.render().decode()
        assert f'edge_camera_model{{camera="cam",iteration="{ITER[2]}",model="shelf",version="2"}} 1.0' in scrape
        cameras = httpx.get(f"{url}/cameras", headers=BEARER).json()
        assert cameras  # the camera kept running through the swap


@pytest.mark.timeout(120)
def test_with_a_public_key_only_signed_updates_are_taken_and_an_older_release_is_refused(store, tmp_path):
    pytest.importorskip("model_signing")
    from edge_runtime.publish.signing import sign
    from exporter.keys import generate_keys

    private, public = generate_keys(tmp_path / "keys")
    other, _ = generate_keys(tmp_path / "other")

    def signed_folder(name: str, iteration: str, created: str, key: Path = private) -> Path:
        folder = export(tmp_path, name, iteration).with_suffix("")  # the folder beside its zip
        (folder / "bundle.json").write_text(json.dumps({"name": "shelf", "created": created}))
        sign(folder, key)
        return models.zip_folder(folder, tmp_path / f"{name}-signed.zip")  # model.sig travels inside

    app, _ = app_over(store, models={"public_key": str(public)})
    with running(app) as url:
        r = put(url, export(tmp_path, "unsigned", ITER[2]))
        assert r.status_code == 422 and "no signature" in r.json()["message"]
        r = put(url, signed_folder("wrong-key", ITER[2], "2026-12-01T00:00:00Z", key=other))
        assert r.status_code == 422 and "\n" not in r.json()["message"]
        assert put(url, signed_folder("new", ITER[3], "2026-12-05T00:00:00Z")).status_code == 201
        r = put(url, signed_folder("replayed", ITER[2], "2026-12-01T00:00:00Z"))  # signed, but older
        assert r.status_code == 422 and "before the active" in r.json()["message"]
        assert listed(url)["shelf"]["iteration"] == ITER[3]
        with httpx.Client(base_url=url, headers=BEARER, timeout=60) as http:  # a rollback may go back
            assert http.post("/api/models/shelf/rollback").json()["version"] == 1


@pytest.mark.timeout(120)
def test_every_change_is_recorded_without_an_event_rule_and_a_dropped_zip_is_taken(store, tmp_path):
    incoming = tmp_path / "incoming"
    incoming.mkdir()
    app, svc = app_over(store, events={"store": {"path": str(tmp_path / "events")}},
                        models={"incoming": str(incoming), "incoming_poll_s": 0.2})
    assert not svc.settings.events.rules and svc.store is not None  # opened for the model changes alone
    with running(app) as url:
        assert put(url, export(tmp_path, "v2", ITER[2])).status_code == 201
        assert put(url, export(tmp_path, "bad", ITER[3], labels=("a", "b"))).status_code == 422
        zipped = export(tmp_path, "dropped", ITER[4])
        zipped.rename(incoming / "shelf.zip")  # published under its file name
        assert wait_for(lambda: listed(url)["shelf"].get("iteration") == ITER[4], timeout=20)
        assert not (incoming / "shelf.zip").exists()
    changes = svc.store.model_changes()
    assert [(c.reason, c.source, c.old_version, c.new_version) for c in reversed(changes)] == [
        ("publish", "http", 1, 2), ("refused", "http", 2, 3), ("publish", "incoming", 2, 3)]  # v3 refused, removed
    assert changes[-1].old_iteration == ITER[1] and changes[-1].new_iteration == ITER[2]


def serve_over(store: Path, tmp_path: Path):  # type: ignore[no-untyped-def]
    """`edge-runtime serve` over the store as a process of its own; (process, url)."""
    import os
    import subprocess
    import sys

    from tests.server_util import free_port, healthz_ms

    port = free_port()
    config = tmp_path / "serve.yaml"
    config.write_text(json.dumps({"models": {"path": str(store)}, "server": {"port": port},
                                  "events": {"store": {"path": str(tmp_path / "events")}}}))
    env = {**os.environ, "EDGE_RUNTIME_TOKEN": TOKEN, "XDG_CACHE_HOME": str(tmp_path / "cache")}
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config)], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    assert wait_for(lambda: healthz_ms(url) is not None, timeout=60)
    return proc, url


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("after_s", [0.0, 0.3, 0.6, 1.0])
def test_kill_9_during_an_upload_or_a_swap_leaves_a_whole_version_serving(store, tmp_path, after_s):
    """kill -9 mid-upload, mid-load or just after the switch: the restarted server answers
    with the version the store names, v1 or v2, never anything half-made."""
    v2 = export(tmp_path, "v2", ITER[2]).read_bytes()
    proc, url = serve_over(store, tmp_path)
    try:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.sendall(head("/api/models/shelf", **{"Content-Length": str(len(v2))}, **BEARER) + v2[: len(v2) // 2])
            if after_s:  # the whole body: the server stages, loads and swaps
                s.sendall(v2[len(v2) // 2:])
                time.sleep(after_s)
            proc.kill()
            proc.wait(10)
    finally:
        if proc.poll() is None:
            proc.kill()
    proc, url = serve_over(store, tmp_path)
    try:
        state = ModelStore(store).state("shelf")
        assert state is not None and state.active in (1, 2)
        expected = {1: ITER[1], 2: ITER[2]}[state.active]
        assert httpx.post(f"{url}/image", content=PHOTO, headers=BEARER, timeout=30).json()["iteration"] == expected
        assert listed(url)["shelf"]["version"] == state.active
        if not after_s:
            assert state.active == 1  # half an upload is never published
    finally:
        proc.kill()
        proc.wait(10)


@pytest.mark.adversarial
@pytest.mark.timeout(120)
def test_a_slow_upload_is_never_closed_to_make_room_at_the_connection_cap(store, tmp_path):
    app, svc = app_over(store, server={"max_connections": 8, "header_timeout_s": 30, "body_timeout_s": 1})
    v2 = export(tmp_path, "v2", ITER[2]).read_bytes()
    with running(app, svc.settings) as url:
        port = int(url.rsplit(":", 1)[1])
        upload = socket.create_connection(("127.0.0.1", port), timeout=30)
        upload.sendall(head("/api/models/shelf", **{"Content-Length": str(len(v2))}, **BEARER) + v2[:100])
        time.sleep(0.3)
        upload.sendall(v2[100:200])  # admitted by its route by now: its own deadline, never evicted
        idle = [socket.create_connection(("127.0.0.1", port), timeout=5) for _ in range(12)]  # past the cap
        time.sleep(1.5)  # past the ordinary body deadline too
        upload.sendall(v2[200:])
        answer = b""
        while b"\r\n\r\n" not in answer:
            chunk = upload.recv(65536)
            if not chunk:
                break
            answer += chunk
        assert answer.startswith(b"HTTP/1.1 201"), answer[:200]
        for s in [upload, *idle]:
            s.close()
        assert listed(url)["shelf"]["version"] == 2


def test_a_camera_naming_a_model_not_published_and_bad_option_names_are_one_line_errors(store, tmp_path):
    from edge_runtime.errors import ConfigError, EdgeRuntimeError

    with pytest.raises(ConfigError, match="camera cam: model 'door' is not published") as err:
        app_over(store, cameras=[{"id": "cam", "source": "demo:", "model": "door"}], workers=0)
    assert "\n" not in str(err.value)
    for bad in ({"cameras": [{"id": "cam", "source": "demo:", "model": "../x"}]},
                {"models": {"options": {"a/b": {"top_k": 2}}}},
                {"models": {"options": {"shelf": {"top_k": 0}}}},
                {"models": {"options": {"shelf": {"threshold": float("nan")}}}},
                {"models": {"max_mb": 0}}, {"models": {"swap": "sideways"}}):
        with pytest.raises(EdgeRuntimeError):
            app_over(store, **bad)


def test_per_model_options_apply_to_that_name_only(store, tmp_path):
    ModelStore.open(store).publish(export(tmp_path, "door", ITER[4]), "door")
    app, _ = app_over(store, models={"options": {"door": {"top_k": 1}}})
    with running(app) as url:
        shelf = httpx.post(f"{url}/any/classify/iterations/shelf/image", content=PHOTO, headers=BEARER).json()
        door = httpx.post(f"{url}/any/classify/iterations/door/image", content=PHOTO, headers=BEARER).json()
    assert len(door["predictions"]) == 1 and len(shelf["predictions"]) == 3


def test_a_request_waiting_for_an_unload_first_load_never_blocks_the_event_loop():
    """Whatever name it gives (one model served: any name reaches it), a request for an
    emptied slot waits in a thread, so the loop keeps serving everything else."""
    import asyncio
    import types

    from edge_runtime.model.slot import ModelSlot
    from edge_runtime.publish.registry import Entry, Registry
    from edge_runtime.server.state import Services

    slot: ModelSlot = ModelSlot("shelf", object(), 1)  # type: ignore[arg-type]
    svc = types.SimpleNamespace(models=Registry(Entry("shelf", None, slot)))
    svc.resolve = lambda project, name, wait_s=60: Services.resolve(svc, project, name, wait_s)  # type: ignore[arg-type]
    slot.unload("v2")
    threading.Timer(1.0, lambda: slot.swap(object(), 2)).start()  # type: ignore[arg-type]

    async def ticker() -> float:
        gaps, last = [], time.monotonic()
        for _ in range(20):
            await asyncio.sleep(0.05)
            gaps.append(time.monotonic() - last)
            last = time.monotonic()
        return max(gaps)

    async def main() -> tuple[int | None, float]:
        tick = asyncio.create_task(ticker())
        served = await Services.served(svc, "p", "any-name")  # type: ignore[arg-type]
        return served.version, await tick

    version, stall = asyncio.run(main())
    assert version == 2 and stall < 0.5  # the 1 s load never held the loop


def test_a_claimed_version_a_killed_swap_never_checked_is_removed_and_rollback_checks_what_it_saw(store, tmp_path):
    s = ModelStore.open(store)
    pending = s.add(export(tmp_path, "v2", ITER[2]), "shelf", verify=False)  # the server then dies
    marker = store / "shelf" / f".pending-v{pending}"
    assert marker.exists()
    ModelStore.open(store)
    assert (store / "shelf" / f"v{pending}").is_dir()  # a swap beside this command may still be running
    old = time.time() - 3600
    os.utime(marker, (old, old))
    ModelStore.open(store)
    assert not (store / "shelf" / f"v{pending}").exists() and not marker.exists()
    s.publish(export(tmp_path, "v3", ITER[3]), "shelf")
    with pytest.raises(ModelStoreError, match="changed meanwhile"):
        s.rollback("shelf", expect=1)
    assert s.state("shelf").active == 2  # type: ignore[union-attr]
