"""Sources read through cv2.VideoCapture: V4L2 devices, RTSP/HTTP streams, files, GStreamer."""

from __future__ import annotations

import time
import urllib.parse

import cv2
import numpy as np

from .base import SourceEnded, SourceError

OPEN_TIMEOUT_MS = 5000
READ_TIMEOUT_MS = 5000


def redact(uri: str) -> str:
    """rtsp://user:secret@host/x -> rtsp://user:***@host/x, so status and logs hold no passwords."""
    parts = urllib.parse.urlsplit(uri)
    if parts.password:
        netloc = f"{parts.username}:***@{parts.hostname}" + (f":{parts.port}" if parts.port else "")
        return urllib.parse.urlunsplit(parts._replace(netloc=netloc))
    return uri


class CaptureSource:
    """A live capture: camera device, network stream or GStreamer pipeline."""

    live = True

    def __init__(self, capture: cv2.VideoCapture, name: str) -> None:
        self.capture = capture
        self.name = name
        self.fps = capture.get(cv2.CAP_PROP_FPS) or None

    @classmethod
    def open(cls, target: str | int, api: int, name: str) -> CaptureSource:
        params = [cv2.CAP_PROP_OPEN_TIMEOUT_MSEC, OPEN_TIMEOUT_MS, cv2.CAP_PROP_READ_TIMEOUT_MSEC, READ_TIMEOUT_MS]
        capture = cv2.VideoCapture(target, api, params)
        if not capture.isOpened():
            capture.release()
            raise SourceError(f"{name}: cannot open")
        return cls(capture, name)

    def read(self) -> np.ndarray | None:
        ok, frame = self.capture.read()
        if not ok or frame is None:
            # a live source that stops delivering has dropped out: let the watchdog reopen it
            raise SourceError(f"{self.name}: read failed (stream ended or device gone)")
        return frame

    def close(self) -> None:
        self.capture.release()


class VideoFileSource:
    """A video file, optionally looped, optionally paced at its own frame rate."""

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
