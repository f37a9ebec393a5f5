"""The HTTP server, for real: uvicorn on loopback, the demo model, video files written by OpenCV."""

from __future__ import annotations

import asyncio
import http.server
import json
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.config import load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.conftest import DEMO, jpeg_bytes, wait_for, write_video
from tests.server_util import make_app, running

COFFEE = (DEMO / "samples" / "coffee.jpg").read_bytes()
TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def demo_predictor() -> Predictor:
    return Predictor.load(DEMO)


@pytest.fixture(scope="module")
def video(tmp_path_factory) -> Path:
    # 15 fps leaves the model ample time per frame, so the pipeline takes every one
    return write_video(tmp_path_factory.mktemp("v") / "loop.avi", frames=30, size=(640, 360), fps=15)


@pytest.fixture(scope="module")
def live_server(demo_predictor, video):
    app = make_app(demo_predictor, model={"top_k": 3},
                   cameras=[{"id": "door", "source": str(video), "loop": True, "realtime": True}])
    with running(app) as url:
        yield url


def test_upload_raw_multipart_and_container_aliases(live_server):
    raw = httpx.post(f"{live_server}/image", content=COFFEE, headers={"Content-Type": "application/octet-stream"})
    assert raw.status_code == 200
    assert raw.json()["predictions"][0]["tagName"] == "espresso"
    assert len(raw.json()["predictions"]) == 3
    for path in ("/image/nostore", "/proj/classify/iterations/v1/image", "/proj/detect/iterations/v1/image/nostore"):
        r = httpx.post(live_server + path, files={"imageData": ("c.jpg", COFFEE, "image/jpeg")})
        assert r.status_code == 200, (path, r.text)
        assert r.json()["predictions"][0]["tagName"] == "espresso"


def truncated() -> bytes:
    return COFFEE[: len(COFFEE) // 3]


def bomb() -> bytes:
    import struct

    data = bytearray(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 40_000, 40_000)
    return bytes(data)


@pytest.mark.parametrize(("body", "status", "code"), [
    (b"", 400, "BadRequestImageFormat"),
    (b"<html>not an image</html>", 400, "BadRequestImageFormat"),
    (truncated(), 400, "BadRequestImageFormat"),
    (bomb(), 400, "BadRequestImageDimensions"),
    (b"\xff\xd8" + b"\0" * (4 * 1024 * 1024 + 10), 413, "BadRequestImageSizeBytes"),
])
def test_bad_uploads_are_rejected_and_the_server_keeps_serving(live_server, body, status, code):
    r = httpx.post(f"{live_server}/image", content=body)
    assert r.status_code == status
    assert r.json()["code"] == code and r.json()["message"]
    assert httpx.post(f"{live_server}/image", content=COFFEE).status_code == 200


def test_chunked_upload_over_the_limit_is_refused(live_server):
    def chunks():
        for _ in range(5):
            yield b"\0" * (1024 * 1024)

    r = httpx.post(f"{live_server}/image", content=chunks())
    assert r.status_code == 413


def test_multipart_without_a_file(live_server):
    r = httpx.post(f"{live_server}/image", data={"note": "x"}, files={"other": ("x.txt", b"", "text/plain")})
    assert r.status_code == 400
    r = httpx.post(f"{live_server}/image", content=b"--x\r\nbroken", headers={"Content-Type": "multipart/form-data"})
    assert r.status_code == 400


def test_live_results_carry_camera_sequence_and_age(live_server):
    assert wait_for(lambda: httpx.get(f"{live_server}/predictions/latest").status_code == 200)
    first = httpx.get(f"{live_server}/predictions/latest?camera=door").json()
    assert wait_for(lambda: httpx.get(f"{live_server}/predictions/latest").json()["seq"] > first["seq"])
    body = httpx.get(f"{live_server}/predictions/latest").json()
    assert body["camera"] == "door" and body["ageMs"] >= body["inferenceMs"] > 0
    assert body["captured"].endswith("Z") and len(body["predictions"]) == 3
    assert httpx.get(f"{live_server}/predictions/latest?camera=nope").status_code == 404


def read_events(url: str, count: int) -> list[dict]:  # type: ignore[type-arg]
    events = []
    with httpx.stream("GET", url, timeout=10) as r:
        assert r.headers["content-type"].startswith("text/event-stream")
        kind = None
        for line in r.iter_lines():
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "prediction":
                events.append(json.loads(line[5:]))
                if len(events) == count:
                    break
    return events


def test_server_sent_events_deliver_every_result(live_server):
    dropped_before = httpx.get(f"{live_server}/cameras").json()[0]["dropped"]
    events = read_events(f"{live_server}/events", 6)
    dropped = httpx.get(f"{live_server}/cameras").json()[0]["dropped"] - dropped_before
    seqs = [e["seq"] for e in events]
    assert seqs == sorted(seqs) and len(set(seqs)) == 6
    assert all(e["camera"] == "door" and e["predictions"] for e in events)
    # every published result reached the client: a gap is only a frame the camera dropped
    # before inference took it (a busy machine), never a result the stream lost
    assert seqs[-1] - seqs[0] - 5 <= dropped


def test_server_sent_events_can_be_thinned(live_server):
    events = read_events(f"{live_server}/events?max_fps=4&camera=door", 3)
    captured = [e["captured"] for e in events]
    assert len(events) == 3 and len(set(captured)) == 3
    import datetime as dt

    times = [dt.datetime.fromisoformat(c.replace("Z", "+00:00")).timestamp() for c in captured]
    # 15 fps thinned to 4 a second: a quarter second apart, less one frame's jitter in capture times
    assert np.diff(times).min() >= 0.25 - 1 / 15 - 0.02


def test_mjpeg_stream_and_snapshot(live_server):
    frames = []
    with httpx.stream("GET", f"{live_server}/stream.mjpg?max_fps=10", timeout=10) as r:
        assert r.headers["content-type"].startswith("multipart/x-mixed-replace")
        buffer = b""
        for chunk in r.iter_bytes():
            buffer += chunk
            while b"--frame\r\n" in buffer:
                head, _, rest = buffer.partition(b"\r\n\r\n")
                length = int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0])
                if len(rest) < length + 2:
                    break
                frames.append(rest[:length])
                buffer = rest[length + 2 :]
            if len(frames) >= 2:
                break
    for jpeg in frames:
        image = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (360, 640, 3)
    snap = httpx.get(f"{live_server}/snapshot.jpg")
    assert snap.headers["content-type"] == "image/jpeg"
    assert cv2.imdecode(np.frombuffer(snap.content, np.uint8), cv2.IMREAD_COLOR).shape == (360, 640, 3)


def test_health_ready_metrics_model_and_docs(live_server):
    assert httpx.get(f"{live_server}/healthz").json() == {"status": "ok"}
    ready = httpx.get(f"{live_server}/readyz")
    assert ready.status_code == 200 and ready.json()["cameras"] == {"door": "online"}
    httpx.post(f"{live_server}/image", content=b"junk")
    metrics = httpx.get(f"{live_server}/metrics").text
    assert 'edge_http_requests_total{method="POST",route="/image",status="400"}' in metrics
    assert 'edge_inference_seconds_count{camera="door"}' in metrics
    assert 'edge_camera_state{camera="door",state="online"} 1.0' in metrics
    assert "edge_frames_dropped_total" in metrics and "edge_camera_reconnects_total" in metrics
    assert "edge_camera_fps" in metrics
    model = httpx.get(f"{live_server}/model").json()
    assert model["variant"] == "multiclass" and len(model["labels"]) == 1000
    spec = httpx.get(f"{live_server}/openapi.json").json()
    assert "/image" in spec["paths"] and "/events" in spec["paths"]
    cams = httpx.get(f"{live_server}/cameras").json()
    assert cams[0]["id"] == "door" and cams[0]["fps"] > 0


def test_a_run_stuck_in_the_model_fails_readyz_and_uploads_still_work(video, monkeypatch):
    hang, release = threading.Event(), threading.Event()
    predictor = Predictor.load(DEMO, runs=2)  # a camera's run and an upload's at once

    class Hanging:  # the real session, where one camera run hangs once `hang` is set
        def __init__(self, session):  # type: ignore[no-untyped-def]
            self.session = session
            self.hung = threading.Lock()

        def run(self, *args):  # type: ignore[no-untyped-def]
            camera = threading.current_thread().name.startswith("infer-")
            if camera and hang.is_set() and self.hung.acquire(blocking=False):
                release.wait(30)
            return self.session.run(*args)

    predictor.model.session = Hanging(predictor.model.session)  # type: ignore[assignment]
    settings = load_settings(env={}, overrides={"model": {"runs": 2}, "cameras": [
        {"id": "door", "source": str(video), "loop": True, "realtime": True}]})
    services = build_services(settings, predictor=predictor, env={})
    monkeypatch.setattr("edge_runtime.model.session.STUCK_RUN_S", 0.5)
    with running(create_app(services)) as url:
        assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200)
        assert httpx.get(f"{url}/readyz").json()["pipeline"] == "ok"
        hang.set()
        try:
            assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, timeout=10)
            assert httpx.get(f"{url}/readyz").json()["pipeline"] == "unhealthy"
            assert httpx.post(f"{url}/image", content=COFFEE).status_code == 200  # the other run answers
        finally:
            hang.clear()
            release.set()
        assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=10)


def test_a_stuck_upload_fails_readyz_without_cameras_too(monkeypatch):
    hang, release = threading.Event(), threading.Event()
    predictor = Predictor.load(DEMO, runs=2)

    class Hanging:  # the real session; the first upload after `hang` is set hangs inside it
        def __init__(self, session):  # type: ignore[no-untyped-def]
            self.session = session
            self.hung = threading.Lock()

        def run(self, *args):  # type: ignore[no-untyped-def]
            if hang.is_set() and self.hung.acquire(blocking=False):
                release.wait(30)
            return self.session.run(*args)

    predictor.model.session = Hanging(predictor.model.session)  # type: ignore[assignment]
    monkeypatch.setattr("edge_runtime.model.session.STUCK_RUN_S", 0.5)
    services = build_services(load_settings(env={}, overrides={"model": {"runs": 2}}), predictor=predictor, env={})
    with running(create_app(services)) as url:
        assert httpx.get(f"{url}/readyz").status_code == 200
        hang.set()
        stuck = threading.Thread(target=lambda: httpx.post(f"{url}/image", content=COFFEE, timeout=60))
        stuck.start()
        try:
            assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 503, timeout=10)
            assert httpx.post(f"{url}/image", content=COFFEE).status_code == 200  # the other run answers
        finally:
            release.set()
            stuck.join(60)
        assert wait_for(lambda: httpx.get(f"{url}/readyz").status_code == 200, timeout=10)


def test_time_queued_for_a_run_is_not_time_stuck_in_the_model(demo_predictor):
    """Uploads queued behind each other (one run at a time) are slow, not stuck."""
    import concurrent.futures

    from edge_runtime.model.imageio import decode_image

    image = decode_image(COFFEE)
    worst = [0.0]
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            worst[0] = max(worst[0], demo_predictor.model.longest_run_s())
            time.sleep(0.001)

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    with concurrent.futures.ThreadPoolExecutor(12) as pool:
        list(pool.map(lambda _: demo_predictor.predict(image), range(24)))
    elapsed = time.monotonic() - started
    done.set()
    watcher.join()
    assert 0 < worst[0] < elapsed / 4  # each run was timed alone, not with its wait for the slot


def test_live_page_needs_nothing_from_the_internet(live_server):
    page = httpx.get(f"{live_server}/")
    assert page.status_code == 200 and "EventSource" in page.text
    assert "http://" not in page.text and "https://" not in page.text


def test_token_is_enforced(demo_predictor, video):
    app = make_app(demo_predictor, token=TOKEN, cameras=[{"id": "c", "source": str(video), "loop": True}])
    with running(app) as url:
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz").json().keys() <= {"status"}  # open to probes, but says no more
        assert "cameras" in httpx.get(f"{url}/readyz", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        for path in ("/metrics", "/model", "/cameras", "/predictions/latest", "/snapshot.jpg"):
            r = httpx.get(url + path)
            assert r.status_code == 401, path
            assert r.headers["www-authenticate"] == "Bearer"
        assert httpx.post(f"{url}/image", content=COFFEE).status_code == 401
        assert httpx.post(f"{url}/image", content=COFFEE,
                          headers={"Authorization": "Bearer wrong"}).status_code == 401
        ok = httpx.post(f"{url}/image", content=COFFEE, headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200
        assert httpx.get(f"{url}/").status_code == 401
        with httpx.Client(base_url=url) as browser:
            login = browser.get(f"/?token={TOKEN}", follow_redirects=False)
            assert login.status_code == 303 and login.headers["location"] == "/"
            assert TOKEN not in login.headers["location"] and TOKEN not in login.headers["set-cookie"]
            assert browser.get("/").status_code == 200  # the session cookie now authenticates
            assert browser.get("/cameras").status_code == 200
        assert httpx.get(f"{url}/model?token={TOKEN}").status_code == 401  # only / reads the query


class _ImageHost(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        if self.path == "/coffee.jpg":
            self.send_response(200)
            self.send_header("Content-Type", "image/jpeg")
            self.end_headers()
            self.wfile.write(COFFEE)
        elif self.path == "/big.jpg":
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"\0" * (4 * 1024 * 1024 + 100))
        elif self.path == "/moved":
            self.send_response(302)
            self.send_header("Location", "http://169.254.169.254/")
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()

    def log_message(self, *args):
        pass


def test_url_endpoint_is_off_by_default_and_allow_listed_when_on(demo_predictor, live_server):
    assert httpx.post(f"{live_server}/url", json={"url": "http://127.0.0.1/x.jpg"}).status_code == 403
    host = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _ImageHost)
    threading.Thread(target=host.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{host.server_port}"
    try:
        allow = [f"127.0.0.1:{host.server_port}"]
        app = make_app(demo_predictor, server={"url": {"enabled": True, "allow_hosts": allow}})
        with running(app) as url:
            ok = httpx.post(f"{url}/url", json={"url": f"{base}/coffee.jpg"})
            assert ok.status_code == 200 and ok.json()["predictions"][0]["tagName"] == "espresso"
            alias = httpx.post(f"{url}/p/classify/iterations/it/url", json={"url": f"{base}/coffee.jpg"})
            assert alias.status_code == 200
            assert httpx.post(f"{url}/url", json={"url": f"http://localhost:{host.server_port}/coffee.jpg"}
                              ).status_code == 403
            assert httpx.post(f"{url}/url", json={"url": "http://127.0.0.1/coffee.jpg"}).status_code == 403
            assert httpx.post(f"{url}/url", json={"url": f"{base}/moved"}).status_code == 502
            assert httpx.post(f"{url}/url", json={"url": f"{base}/missing"}).status_code == 502
            assert httpx.post(f"{url}/url", json={"url": f"{base}/big.jpg"}).status_code == 413
            assert httpx.post(f"{url}/url", json={"url": "file:///etc/passwd"}).status_code == 400
            assert httpx.post(f"{url}/url", json={"nope": 1}).status_code == 400
    finally:
        host.shutdown()


def test_a_camera_that_disappears(demo_predictor, tmp_path):
    video = write_video(tmp_path / "gone.avi", frames=10, size=(320, 240))
    app = make_app(demo_predictor, cameras=[
        {"id": "file", "source": str(video), "loop": True, "realtime": True, "watchdog_s": 0.5,
         "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
        {"id": "rtsp", "source": "rtsp://127.0.0.1:9/live", "backoff_initial_s": 0.05, "backoff_max_s": 0.2},
    ])
    with running(app) as url:
        assert wait_for(lambda: httpx.get(f"{url}/predictions/latest?camera=file").status_code == 200)
        video.unlink()  # the file is removed mid-run: the next loop cannot reopen it
        def states():
            return {c["id"]: c for c in httpx.get(f"{url}/cameras").json()}
        assert wait_for(lambda: states()["file"]["state"] in ("reconnecting", "offline"), timeout=10)
        assert wait_for(lambda: states()["rtsp"]["state"] == "offline", timeout=10)
        assert states()["file"]["reconnects"] >= 1
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 503 and ready.json()["status"] == "not ready"
        metrics = httpx.get(f"{url}/metrics").text
        assert 'edge_camera_state{camera="rtsp",state="offline"} 1.0' in metrics
        reconnects = [line for line in metrics.splitlines()
                      if line.startswith('edge_camera_reconnects_total{camera="file"}')]
        assert float(reconnects[0].split()[-1]) >= 1
        assert httpx.post(f"{url}/image", content=COFFEE).status_code == 200  # still serving
        write_video(video, frames=10, size=(320, 240))  # the camera comes back
        assert wait_for(lambda: states()["file"]["state"] == "online", timeout=10)


@pytest.mark.parametrize("path", ["/events", "/snapshot.jpg", "/stream.mjpg", "/predictions/latest"])
def test_an_unknown_camera_is_404_on_every_route(live_server, path):
    with httpx.stream("GET", f"{live_server}{path}?camera=nope", timeout=5) as r:
        assert r.status_code == 404
        r.read()
        assert r.json() == {"code": "NotFound", "message": "no camera 'nope'"}


def test_events_carry_project_and_iteration(demo_predictor, video):
    app = make_app(demo_predictor, server={"project": "shelf"},
                   cameras=[{"id": "door", "source": str(video), "loop": True, "realtime": True}])
    with running(app) as url:
        (event,) = read_events(f"{url}/events?camera=door", 1)
    assert event["project"] == "shelf" and event["camera"] == "door"
    assert event["iteration"] == demo_predictor.iteration and event["iteration"]


def test_mjpeg_never_exceeds_its_ceiling(demo_predictor, video):
    app = make_app(demo_predictor, server={"mjpeg_max_fps": 4},
                   cameras=[{"id": "door", "source": str(video), "loop": True, "realtime": True}])
    arrivals: list[float] = []
    with running(app) as url, httpx.stream("GET", f"{url}/stream.mjpg?max_fps=100", timeout=10) as r:
        seen = 0
        for chunk in r.iter_bytes():
            seen += chunk.count(b"--frame\r\n")
            while len(arrivals) < seen:
                arrivals.append(time.monotonic())
            if len(arrivals) >= 6:
                break
    # 15 fps of frames, a client asking for 100: the server's ceiling of 4 holds
    assert arrivals[-1] - arrivals[0] >= 5 / 4 * 0.85


def test_a_slow_event_client_loses_its_oldest_events_not_the_pipeline(tmp_path):
    from edge_runtime.sinks import EventBroadcaster
    from edge_runtime.types import Frame, FrameResult
    from tests.fakes import FakePredictor

    fake = FakePredictor()
    image = np.zeros((4, 4, 3), np.uint8)

    def result(seq: int) -> FrameResult:
        prepared = fake.prepare(image)
        return FrameResult(Frame("cam", seq, time.time(), time.monotonic(), image),
                           fake.finish(fake.infer(prepared.tensor), prepared), 1.0, time.monotonic())

    async def scenario() -> tuple[int, list[int]]:
        broadcaster = EventBroadcaster("p", "it")
        sub = broadcaster.subscribe()
        publisher = threading.Thread(target=lambda: [broadcaster(result(seq)) for seq in range(1, 301)])
        publisher.start()  # the pipeline's thread: it must never wait for the client
        await asyncio.to_thread(publisher.join, 10)
        assert not publisher.is_alive()
        await asyncio.sleep(0.05)  # let the loop run the queued puts
        seqs = []
        while not sub.queue.empty():
            item = sub.queue.get_nowait()
            assert item is not None
            seqs.append(json.loads(item[2])["seq"])
        return sub.dropped, seqs

    dropped, seqs = asyncio.run(scenario())
    assert dropped == 300 - len(seqs) and len(seqs) == 256
    assert seqs == list(range(45, 301))  # the newest kept, in order


def test_an_event_stream_that_fell_behind_takes_what_piled_up_at_once_and_stops_at_the_end(monkeypatch):
    from edge_runtime.server import live

    monkeypatch.setattr(live, "KEEPALIVE_S", 0.05)

    async def scenario() -> list[list]:  # type: ignore[type-arg]
        queue: asyncio.Queue = asyncio.Queue()  # type: ignore[type-arg]
        got = [await live.next_items(queue)]  # nothing came: the keepalive's turn
        for seq in range(3):
            queue.put_nowait(("prediction", "door", str(seq)))
        got.append(await live.next_items(queue))
        asyncio.get_running_loop().call_later(0.01, queue.put_nowait, ("event-start", "door", "{}"))
        got.append(await live.next_items(queue))  # waited for the next one
        for item in (("prediction", "door", "3"), None, ("prediction", "door", "late")):
            queue.put_nowait(item)
        got.append(await live.next_items(queue))  # the server closing the stream ends the batch
        return got

    got = asyncio.run(scenario())
    assert got[0] == []
    assert got[1] == [("prediction", "door", str(seq)) for seq in range(3)]
    assert got[2] == [("event-start", "door", "{}")]
    assert got[3] == [("prediction", "door", "3"), None]


def test_a_slow_event_client_gets_every_result_it_kept_in_order_and_whole(demo_predictor, video):
    """A client that reads slowly gets the results that piled up several to a write: each
    event still whole, in order, none repeated."""
    app = make_app(demo_predictor, cameras=[{"id": "door", "source": str(video), "loop": True}])
    with running(app) as url, httpx.stream("GET", f"{url}/events?camera=door", timeout=10) as r:
        seqs, kind = [], None
        for i, line in enumerate(r.iter_lines()):
            if i % 50 == 0:
                time.sleep(0.2)  # results pile up in the server meanwhile
            if line.startswith("event:"):
                kind = line.split(":", 1)[1].strip()
            elif line.startswith("data:") and kind == "prediction":
                event = json.loads(line[5:])
                assert event["camera"] == "door" and event["predictions"]
                seqs.append(event["seq"])
                if len(seqs) == 40:
                    break
    assert seqs == sorted(seqs) and len(set(seqs)) == 40


def test_camera_urls_are_shown_without_secrets_and_with_their_brackets(demo_predictor, caplog):
    source = "http://viewer:hunter2@[::1]:9/live.mjpg?token=abc123&fps=5"
    app = make_app(demo_predictor, cameras=[{"id": "v6", "source": source, "backoff_initial_s": 0.05,
                                             "backoff_max_s": 0.2}])
    with caplog.at_level("DEBUG", logger="edge_runtime"), running(app) as url:
        def status() -> dict:  # type: ignore[type-arg]
            return httpx.get(f"{url}/cameras").json()[0]

        assert wait_for(lambda: status()["reconnects"] >= 1 and status()["last_error"], timeout=15)
        shown = status()
    assert shown["source"] == "http://viewer:***@[::1]:9/live.mjpg?token=***&fps=5"
    assert "hunter2" not in json.dumps(shown) and "abc123" not in json.dumps(shown)
    assert "hunter2" not in caplog.text and "abc123" not in caplog.text and "camera v6" in caplog.text
