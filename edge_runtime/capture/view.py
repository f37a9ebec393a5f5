"""What the server needs from whatever runs the cameras: the in-process Pipeline or a
WorkerPool, and a view of each camera (a Camera, or a worker's report of one).

    runner.start(); runner.healthy; runner.fps("door"); runner.stop(2.0)
    [cam.status() for cam in cameras]          # /cameras
"""

from __future__ import annotations

import enum
from typing import Protocol

from .camera import CameraState, CameraStats


class WorkerState(str, enum.Enum):
    RESTARTING = "restarting"  # the camera's worker process died and is being started again


STATES = (*(s.value for s in CameraState), *(s.value for s in WorkerState))  # every state a camera shows


class CameraView(Protocol):
    id: str
    name: str
    stats: CameraStats

    @property
    def state(self) -> enum.Enum: ...

    def status(self) -> dict[str, object]: ...


class CameraRunner(Protocol):
    def start(self) -> None: ...

    def stop(self, timeout: float = ...) -> None: ...

    @property
    def healthy(self) -> bool: ...

    def fps(self, camera_id: str) -> float: ...

    def skipped(self, camera_id: str) -> int: ...
