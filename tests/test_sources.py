"""Sources picked by URI, including an MJPEG stream over HTTP from our own server."""

from __future__ import annotations

import http.server
import threading
import time

import cv2
import numpy as np
import pytest

from edge_runtime.capture.sources import SourceEnded, SourceError, SourceOptions, check_source, kinds, open_source
from edge_runtime.capture.sources.images import ImageFolderSource
from edge_runtime.capture.sources.opencv import CaptureSource, VideoFileSource
from edge_runtime.capture.sources.uri import redact
from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.model.predictor import Predictor
from tests.conftest import DEMO, wait_for, write_video
from tests.server_util import make_app, running


def test_folder_and_glob_sources_skip_bad_files_and_end(tmp_path):
    for i in range(3):
        cv2.imwrite(str(tmp_path / f"{i}.png"), np.full((10, 10, 3), i * 50, np.uint8))
    (tmp_path / "3.jpg").write_bytes(b"broken")
    source = open_source(str(tmp_path))
    assert isinstance(source, ImageFolderSource) and not source.live
    values = [int(source.read()[0, 0, 0]) for _ in range(3)]
    assert values == [0, 50, 100]
    with pytest.raises(SourceEnded):
        source.read()
    looped = open_source(str(tmp_path / "*.png"), loop=True)
    assert [int(looped.read()[0, 0, 0]) for _ in range(4)] == [0, 50, 100, 0]
    with pytest.raises(SourceError, match="no images"):
        open_source(str(tmp_path / "*.gif"))


def test_video_file_loops_and_paces(tmp_path):
    video = write_video(tmp_path / "v.avi", frames=3)
    source = open_source(str(video), loop=True)
    assert isinstance(source, VideoFileSource) and not source.live
    values = [int(source.read()[0, 0, 0]) for _ in range(5)]  # grey 4*i, give or take the codec
    np.testing.assert_allclose(values, [0, 4, 8, 0, 4], atol=3)
    once = open_source(f"file://{video}")
    for _ in range(3):
        once.read()
    with pytest.raises(SourceEnded):
        once.read()
    assert open_source(str(video), realtime=True).live


def test_gstreamer_and_picamera_say_what_is_missing():
    from edge_runtime.capture.sources.opencv import has_gstreamer

    if not has_gstreamer():
        with pytest.raises(SourceError, match="GStreamer"):
            open_source("gst:videotestsrc ! appsink")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 is not installed"):
            open_source("picam:")


@pytest.mark.parametrize(("uri", "shown"), [
    ("rtsp://admin:hunter2@10.0.0.5:554/s", "rtsp://admin:***@10.0.0.5:554/s"),
    ("rtsp://10.0.0.5/s", "rtsp://10.0.0.5/s"),
    ("rtsp://admin:hunter2@[fe80::1]:554/s", "rtsp://admin:***@[fe80::1]:554/s"),
    ("http://[::1]:8080/stream.mjpg?token=abc&fps=5", "http://[::1]:8080/stream.mjpg?token=***&fps=5"),
    ("https://cam/x?access_token=a&X-Amz-Signature=b&api_key=c&size=2#top",
     "https://cam/x?access_token=***&X-Amz-Signature=***&api_key=***&size=2#top"),
    ("https://SECRETTOKEN@cam/x", "https://***@cam/x"),
    ("rtsp://u:p@host:abc/x", "rtsp://u:***@host:abc/x"),  # does not parse, still redacted
    ("/videos/door.mp4", "/videos/door.mp4"),
])
def test_secrets_never_reach_names_and_brackets_stay(uri, shown):
    assert redact(uri) == shown


@pytest.mark.parametrize(("uri", "message"), [
    ("rtsp://u:secret@host:abc/x", "not a valid URL"),
    ("rtsp://[::1/x", "Invalid IPv6 URL"),
    ("rtsp://u:secret@host:99999/x", "not a valid URL"),
    ("http:///x", "no host"),
    ("rtsp://cam/x\n", "control characters"),
    ("nope://cam/x", "unknown kind of source"),
])
def test_bad_source_uris_are_one_line_errors(uri, message):
    with pytest.raises(SourceError, match=message) as caught:
        open_source(uri)
    assert "secret" not in str(caught.value) and "\n" not in str(caught.value)
    if not uri.startswith("nope"):
        with pytest.raises(ConfigError, match=message):
            load_settings(env={}, overrides={"cameras": [{"id": "a", "source": uri}]})


def test_each_scheme_is_opened_by_the_table_of_kinds(tmp_path):
    table = kinds()
    assert {"device", "file", "demo", "gst", "picam", "rtsp", "rtsps", "http", "https"} <= set(table)
    video = write_video(tmp_path / "a.avi", frames=2)
    assert isinstance(table["file"].open(str(video), SourceOptions()), VideoFileSource)
    assert table["file"].check is not None
    with pytest.raises(SourceError, match="no such file"):
        check_source(str(tmp_path / "typo.avi"))
    check_source(str(video))
    check_source("0")  # a camera may be plugged in later: only files are checked at start


class StallingMjpeg(http.server.BaseHTTPRequestHandler):
    """Sends one MJPEG part, then nothing: a stream whose camera has hung."""

    def do_GET(self) -> None:
        jpeg = cv2.imencode(".jpg", np.full((120, 160, 3), 200, np.uint8))[1].tobytes()
        self.send_response(200)
        self.send_header("Content-Type", "multipart/x-mixed-replace; boundary=f")
        self.end_headers()
        for _ in range(3):
            self.wfile.write(b"--f\r\nContent-Type: image/jpeg\r\nContent-Length: %d\r\n\r\n" % len(jpeg)
                             + jpeg + b"\r\n")
        self.wfile.flush()
        self.server.done.wait(20)  # type: ignore[attr-defined]

    def log_message(self, *args: object) -> None:
        pass


def test_the_read_timeout_follows_the_watchdog_and_a_timeout_is_none():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), StallingMjpeg)
    server.done = threading.Event()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        source = open_source(f"http://127.0.0.1:{server.server_address[1]}/x.mjpg", read_timeout_s=1.0)
        try:
            frames = 0
            start = time.monotonic()
            while time.monotonic() - start < 15:
                began = time.monotonic()
                image = source.read()
                if image is None:
                    waited = time.monotonic() - began
                    break
                frames += 1
            else:
                pytest.fail("the stalled stream never timed out")
            assert frames >= 1
            assert 0.8 <= waited < 3.0  # the configured 1 s, not OpenCV's default 5 s (or 30 s)
        finally:
            source.close()
    finally:
        server.done.set()
        server.shutdown()


def test_an_http_mjpeg_stream_is_a_source(tmp_path):
    video = write_video(tmp_path / "cam.avi", frames=30, size=(320, 240), fps=15)
    app = make_app(Predictor.load(DEMO), cameras=[{"id": "up", "source": str(video), "loop": True,
                                                    "realtime": True}])
    with running(app) as url:
        import httpx

        assert wait_for(lambda: httpx.get(f"{url}/snapshot.jpg").status_code == 200)
        source = open_source(f"{url}/stream.mjpg")
        try:
            assert isinstance(source, CaptureSource) and source.live
            frame = source.read()
            assert frame is not None and frame.shape == (240, 320, 3)
        finally:
            source.close()


@pytest.mark.parametrize("variable", ["EDGE_RUNTIME_CACHE_DIR", "CACHE_DIRECTORY"])
def test_the_demo_clip_is_written_to_the_one_cache_folder(monkeypatch, tmp_path, variable):
    from edge_runtime.capture.sources.demo import demo_clip

    for name in ("EDGE_RUNTIME_CACHE_DIR", "CACHE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv(variable, str(tmp_path / "cache"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "elsewhere"))
    clip = demo_clip()
    assert clip.parent == tmp_path / "cache" and clip.stat().st_size > 0
    assert cv2.VideoCapture(str(clip)).read()[0]
