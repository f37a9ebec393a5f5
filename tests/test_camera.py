"""The grabber and its watchdog, with scripted sources and real video files."""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge_runtime.capture.camera import Camera, CameraState
from edge_runtime.capture.sources import SourceError, open_source
from edge_runtime.capture.sources.fake import ScriptedSource, factory_sequence
from edge_runtime.service.backoff import Backoff
from tests.conftest import wait_for, write_video

FAST = Backoff(initial_s=0.01, max_s=0.05)


def frame(value: int) -> np.ndarray:
    return np.full((8, 8, 3), value, np.uint8)


def drain(camera: Camera, count: int, timeout: float = 5.0) -> list[int]:
    seqs, seq = [], 0
    deadline = time.monotonic() + timeout
    while len(seqs) < count and time.monotonic() < deadline:
        f = camera.next_frame(seq, 0.2)
        if f is not None:
            seq = f.seq
            seqs.append(f.seq)
    return seqs


def test_a_file_is_read_completely_without_drops(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=25)
    camera = Camera("file", lambda: open_source(str(video)))
    camera.start()
    try:
        got = []
        seq = 0
        while True:
            f = camera.next_frame(seq, 2.0)
            if f is None:
                break
            got.append(int(f.image[0, 0, 0]))
            seq = f.seq
            time.sleep(0.005)  # a slow consumer: a file must wait for it, not drop frames
        assert len(got) == 25 and camera.stats.dropped == 0
        assert got == sorted(got)
        assert camera.state is CameraState.ENDED
    finally:
        camera.stop()


def test_a_live_source_keeps_only_the_newest_frame():
    source = ScriptedSource([frame(i) for i in range(50)], live=True)
    camera = Camera("live", lambda: source, backoff=FAST)
    camera.start()
    try:
        assert wait_for(lambda: camera.stats.frames == 50)
        newest = camera.next_frame(0, 1.0)
        assert newest is not None and newest.seq == 50
        assert camera.stats.dropped == 49
    finally:
        camera.stop()


def test_timeouts_trip_the_watchdog_and_the_source_is_reopened():
    opened = []

    def opener():
        source = ScriptedSource([frame(1)] + [None] * 1000, live=True)
        opened.append(source)
        return source

    camera = Camera("stalls", opener, watchdog_s=0.1, backoff=FAST)
    camera.start()
    try:
        assert wait_for(lambda: len(opened) >= 3, timeout=5)
        assert camera.stats.reconnects >= 2
        assert "no frame" in camera.stats.last_error
        assert all(s.closed for s in opened[:-1])  # released before reopening
    finally:
        camera.stop()


def test_read_errors_reopen_with_backoff_until_the_camera_returns():
    good = lambda: ScriptedSource([frame(9)], live=True, hold=True)  # noqa: E731
    broken = lambda: ScriptedSource([SourceError("unplugged")], live=True)  # noqa: E731
    opener = factory_sequence([broken, SourceError("no device"), SourceError("no device"), SourceError("no device"),
                               good])
    camera = Camera("flaky", opener, watchdog_s=1.0, backoff=FAST)
    states = set()
    camera.start()
    try:
        assert wait_for(lambda: (states.add(camera.state) or camera.state is CameraState.ONLINE)
                        and camera.stats.frames > 0, timeout=5)
        assert CameraState.OFFLINE in states or CameraState.RECONNECTING in states
        assert camera.stats.read_errors >= 1 and camera.stats.reconnects >= 1
    finally:
        camera.stop()


def test_backoff_grows_and_is_capped():
    backoff = Backoff(initial_s=0.5, max_s=4.0)
    assert [backoff.delay(n) for n in range(7)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0, 4.0]


def test_a_paced_file_without_loop_plays_once_and_ends(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=5, fps=50)
    opens = []

    def opener():
        source = open_source(str(video), realtime=True)  # paced like a camera, but still a file
        opens.append(source)
        return source

    camera = Camera("paced", opener, backoff=FAST)
    camera.start()
    try:
        assert wait_for(lambda: camera.state is CameraState.ENDED, timeout=5)
        assert len(opens) == 1 and camera.stats.frames == 5 and camera.stats.reconnects == 0
        assert opens[0].capture is not None and not opens[0].capture.isOpened()  # released at the end
    finally:
        camera.stop()


def test_a_live_stream_that_drops_out_is_reopened():
    opener = factory_sequence([lambda: ScriptedSource([frame(1), SourceError("connection reset")], live=True),
                               lambda: ScriptedSource([frame(2)], live=True, hold=True)])
    camera = Camera("stream", opener, backoff=FAST)
    camera.start()
    try:
        assert wait_for(lambda: camera.stats.reconnects == 1 and camera.state is CameraState.ONLINE, timeout=5)
        assert "connection reset" in camera.stats.last_error
    finally:
        camera.stop()


class BlockingSource:
    """A source whose read() blocks until released, as a stuck driver does."""

    live = True
    name = "stuck"

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()
        self.inside = False
        self.closed_while_reading = False
        self.closed = threading.Event()
        self.reads = 0

    def read(self):
        self.reads += 1
        if self.reads == 1:
            return frame(1)
        self.inside = True
        self.entered.set()
        self.release.wait(10)
        self.inside = False
        return frame(2)

    def close(self) -> None:
        self.closed_while_reading |= self.inside
        self.closed.set()


def test_a_stuck_read_shows_as_reconnecting_and_stop_never_closes_under_it():
    source = BlockingSource()
    camera = Camera("stuck", lambda: source, watchdog_s=0.2, backoff=FAST)
    camera.start()
    try:
        assert source.entered.wait(5)
        assert wait_for(lambda: camera.state is CameraState.RECONNECTING, timeout=5)  # no frame for watchdog_s
        assert camera.status()["state"] == "reconnecting" and camera.stats.reconnects == 0
        camera.stop(timeout=0.2)  # the grabber is still inside read()
        assert camera.state is CameraState.STOPPED
        assert not source.closed.is_set()  # releasing the capture now could crash the driver
    finally:
        source.release.set()
    assert source.closed.wait(5)  # closed by the grabber once read() returned
    assert not source.closed_while_reading
    assert camera.state is CameraState.STOPPED and camera.stats.frames == 1  # the late frame is not published


def test_failed_opens_count_as_reconnect_attempts(tmp_path):
    attempts = []

    def opener():
        attempts.append(time.monotonic())
        raise SourceError("camera 0: cannot open")

    camera = Camera("absent", opener, backoff=FAST)
    camera.start()
    try:
        assert wait_for(lambda: len(attempts) >= 4, timeout=5)
    finally:
        camera.stop()
    assert camera.stats.reconnects == len(attempts) - 1 and camera.stats.frames == 0
    assert camera.status()["reconnects"] == camera.stats.reconnects


def test_a_missing_file_leaves_the_camera_offline_and_stop_is_prompt(tmp_path):
    camera = Camera("gone", lambda: open_source(str(tmp_path / "nothing.mp4")), backoff=FAST)
    camera.start()
    assert wait_for(lambda: camera.state is CameraState.OFFLINE, timeout=5)
    assert "no such file" in camera.stats.last_error
    assert camera.stats.reconnects >= 2  # every reopen attempt is counted
    start = time.monotonic()
    camera.stop()
    assert time.monotonic() - start < 2.0
    assert camera.state is CameraState.STOPPED


def test_rtsp_to_a_closed_port_is_reported_not_raised():
    camera = Camera("rtsp", lambda: open_source("rtsp://user:secret@127.0.0.1:9/stream"), backoff=FAST)
    assert "secret" not in camera.name
    camera.start()
    try:
        assert wait_for(lambda: camera.state is CameraState.OFFLINE, timeout=10)
        assert "secret" not in camera.stats.last_error
        assert camera.status()["state"] == "offline"
    finally:
        camera.stop()


@pytest.mark.parametrize("uri", ["0", "/dev/video9"])
def test_missing_devices_are_a_clean_error(uri):
    with pytest.raises(SourceError):
        open_source(uri)


def test_every_retrier_shares_one_backoff():
    import edge_runtime.capture.camera as camera
    import edge_runtime.forwarders.base as forwarder
    import edge_runtime.workers.supervisor as supervisor

    assert camera.Backoff is forwarder.Backoff is supervisor.Backoff is Backoff
    jittered = Backoff(initial_s=1.0, max_s=8.0, jitter=0.5, rng=lambda: 1.0)
    assert [jittered.delay(n) for n in range(6)] == [0.0, 0.5, 1.0, 2.0, 4.0, 4.0]  # shortened by half at most
