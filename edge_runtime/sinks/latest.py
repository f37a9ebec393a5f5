"""The newest result of each camera (for /predictions/latest and readiness)."""

from __future__ import annotations

import threading

from ..types import FrameResult


class LatestResults:
    def __init__(self) -> None:
        self._latest: dict[str, FrameResult] = {}
        self._lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._latest[result.camera_id] = result

    def get(self, camera_id: str) -> FrameResult | None:
        with self._lock:
            return self._latest.get(camera_id)

    def all(self) -> dict[str, FrameResult]:
        with self._lock:
            return dict(self._latest)
