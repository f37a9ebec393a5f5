"""Sources read through cv2.VideoCapture: V4L2 devices, RTSP/HTTP streams, video files, GStreamer.

OpenCV and FFmpeg print their own warnings straight to stderr, on every failed reopen.
`configure_logging` sets them to match ours: silent unless -v, since the camera already
logs each failure (once, then at debug level while it keeps failing).
"""

from __future__ import annotations

import logging
import os
import sys
import time

import cv2
import numpy as np

from .base import SourceEnded, SourceError, SourceKind, SourceOptions
from .uri import redact

OPEN_TIMEOUT_MS = 5000
FFMPEG_LOGLEVEL_ENV = "OPENCV_FFMPEG_LOGLEVEL"  # read when the FFmpeg backend first opens something
AV_LOG_QUIET, AV_LOG_WARNING = -8, 24


def configure_logging(level: int) -> None:
    """OpenCV's and FFmpeg's native messages at our level: warnings with -v (DEBUG), else none."""
    verbose = level <= logging.DEBUG
    native = getattr(cv2.utils, "logging", None)
    if native is not None:
        native.setLogLevel(native.LOG_LEVEL_WARNING if verbose else native.LOG_LEVEL_SILENT)
    else:  # OpenCV before 4.8 has only the older binding, with the same numbers (0 silent, 3 warning)
        cv2.setLogLevel(3 if verbose else 0)  # type: ignore[attr-defined]
    os.environ.setdefault(FFMPEG_LOGLEVEL_ENV, str(AV_LOG_WARNING if verbose else AV_LOG_QUIET))


class CaptureSource:
    """A live capture: camera device, network stream or GStreamer pipeline."""

    live = True

    def __init__(self, capture: cv2.VideoCapture, name: str, read_timeout_s: float) -> None:
        self.capture = capture
        self.name = name
        self.read_timeout_s = read_timeout_s
        self.fps = capture.get(cv2.CAP_PROP_FPS) or None

    @classmethod
    def open(cls, target: str | int, api: int, name: str, read_timeout_s: float) -> CaptureSource:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS,
                  cv2.CAP_PROP_READ_TIMEOUT_MSEC, max(1, int(read_timeout_s * 1000))]
        capture = cv2.VideoCapture(target, api, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{name}: cannot open")
        return cls(capture, name, read_timeout_s)

    def read(self) -> np.ndarray | None:
        start = time.monotonic()
        ok, frame = self.capture.read()
        if ok and frame is not None:
            return frame
        if time.monotonic() - start >= 0.9 * self.read_timeout_s:
            return None  # the backend's read timeout: no frame in time (the watchdog decides)
        # a live source that fails at once has dropped out: reopen it
        raise SourceError(f"{self.name}: read failed (stream ended or device gone)")

    def close(self) -> None:
        self.capture.release()


class VideoFileSource:
    """A video file, optionally looped, optionally paced at its own frame rate.

    Paced (`realtime`), it behaves like a camera (live: frames the consumer misses are
    dropped), but it still ends at the end of the file unless it loops.
    """

    def __init__(self, path: str, loop: bool = False, realtime: bool = False) -> None:
        self.path = path
        self.name = path
        self.loop = loop
        self.live = realtime
        self.capture = self._open()
        self.fps = self.capture.get(cv2.CAP_PROP_FPS) or 30.0
        self._next_at = time.monotonic()

    def _open(self) -> cv2.VideoCapture:
        capture = cv2.VideoCapture(self.path)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{self.path}: cannot open as a video")
        return capture

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok and self.loop:
            self.capture.release()
            self.capture = self._open()
            ok, frame = self.capture.read()
        if not ok or frame is None:
            raise SourceEnded(f"{self.path}: end of video")
        if self.live:  # keep the file's own frame rate
            self._next_at += 1.0 / self.fps
            delay = self._next_at - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            else:
                self._next_at = time.monotonic()
        return frame

    def close(self) -> None:
        self.capture.release()


def open_device(uri: str, options: SourceOptions) -> CaptureSource:
    uri = uri.strip()
    if uri.isdigit():
        api = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        return CaptureSource.open(int(uri), api, f"camera {uri}", options.read_timeout_s)
    return CaptureSource.open(uri, cv2.CAP_V4L2, uri, options.read_timeout_s)


def open_stream(uri: str, options: SourceOptions) -> CaptureSource:
    return CaptureSource.open(uri.strip(), cv2.CAP_FFMPEG, redact(uri.strip()), options.read_timeout_s)


def has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return any("GStreamer" in line and "YES" in line for line in info.splitlines())


def open_gstreamer(uri: str, options: SourceOptions) -> CaptureSource:
    pipeline = uri.strip()[len("gst:"):]
    if not has_gstreamer():
        raise SourceError("gst: this OpenCV build has no GStreamer support (use the distribution's OpenCV)")
    return CaptureSource.open(pipeline, cv2.CAP_GSTREAMER, "gst:" + pipeline[:36], options.read_timeout_s)


KINDS = {
    "device": SourceKind(open_device),
    **{scheme: SourceKind(open_stream) for scheme in ("rtsp", "rtsps", "rtmp", "http", "https")},
    "gst": SourceKind(open_gstreamer),
}
