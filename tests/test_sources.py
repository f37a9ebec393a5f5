"""Sources picked by URI, including an MJPEG stream over HTTP from our own server."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge_runtime.predictor import Predictor
from edge_runtime.sources import SourceEnded, SourceError, open_source
from edge_runtime.sources.images import ImageFolderSource
from edge_runtime.sources.opencv import CaptureSource, VideoFileSource, redact
from tests.conftest import DEMO, wait_for, write_video
from tests.server_util import running
from tests.test_server import make_app


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
    from edge_runtime.sources.picam import has_gstreamer

    if not has_gstreamer():
        with pytest.raises(SourceError, match="GStreamer"):
            open_source("gst:videotestsrc ! appsink")
    try:
        import picamera2  # noqa: F401
    except ImportError:
        with pytest.raises(SourceError, match="picamera2 is not installed"):
            open_source("picam:")


def test_passwords_never_reach_names():
    assert redact("rtsp://admin:hunter2@10.0.0.5:554/s") == "rtsp://admin:***@10.0.0.5:554/s"
    assert redact("rtsp://10.0.0.5/s") == "rtsp://10.0.0.5/s"


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
