"""What the server needs from whatever runs the cameras: the in-process Pipeline or a
WorkerPool, and a view of each camera (a Camera, or a worker's report of one).

    runner.start(); runner.healthy; runner.fps("door"); runner.stop(2.0)
    [cam.status() for cam in cameras]          # /cameras
    ModelledCamera(camera, slot).status()      # with "model", "version" and "iteration"
"""

from __future__ import annotations

import enum
from typing import Any, Protocol

from ..model.slot import ModelSlot
from .camera import CameraState, CameraStats


class WorkerState(str, enum.Enum):
    RESTARTING = "restarting"  # the camera's worker process died and is being started again


STATES = (*(s.value for s in CameraState), *(s.value for s in WorkerState))  # every state a camera shows


class CameraView(Protocol):
    @property
    def id(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def stats(self) -> CameraStats: ...

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


def model_fields(name: str, version: int | None, iteration: str, error: str = "") -> dict[str, object]:
    """What /cameras says of a camera's model, in-process or in a worker: its published name,
    the version and iteration its results come from, and why a swap left it on that one."""
    fields: dict[str, object] = {"model": name, "version": version, "iteration": iteration}
    if error:
        fields["model_error"] = error
    return fields


class ModelledCamera:
    """A camera of this process with the slot it takes its model from."""

    def __init__(self, camera: CameraView, slot: ModelSlot[Any]) -> None:
        self.camera, self.slot = camera, slot

    @property
    def id(self) -> str:
        return self.camera.id

    @property
    def name(self) -> str:
        return self.camera.name

    @property
    def stats(self) -> CameraStats:
        return self.camera.stats

    @property
    def state(self) -> enum.Enum:
        return self.camera.state

    def status(self) -> dict[str, object]:
        active = self.slot.active  # None while emptied for a load (unload-first)
        iteration = str(getattr(active.predictor, "iteration", "")) if active else ""
        return {**self.camera.status(), **model_fields(self.slot.name, active.version if active else None, iteration)}
