"""Each camera's newest frame and result, drawn and encoded only when a client asks."""

from __future__ import annotations

import threading

from ..model.annotate import annotate, encode_jpeg
from ..types import FrameResult


class AnnotatedFrames:
    def __init__(self, quality: int = 80) -> None:
        self.quality = quality
        self._latest: dict[str, FrameResult] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._latest[result.camera_id] = result

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._latest)

    def latest_seq(self, camera_id: str) -> int:
        with self._lock:
            result = self._latest.get(camera_id)
        return result.frame.seq if result else 0

    def jpeg(self, camera_id: str) -> tuple[int, bytes] | None:
        """(frame seq, annotated JPEG) of the newest frame, rendered once per frame."""
        with self._lock:
            result = self._latest.get(camera_id)
        if result is None:
            return None
        with self._render_lock:
            cached = self._jpeg.get(camera_id)
            if cached and cached[0] == result.frame.seq:
                return cached
            data = encode_jpeg(annotate(result.frame.image, result.prediction), self.quality)
            self._jpeg[camera_id] = (result.frame.seq, data)
            return self._jpeg[camera_id]
