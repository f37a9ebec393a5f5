"""What the events tests share: colour clips and frames a colour classifier sees, a real
server with one rule over a clip, and a feeder of real predictions at synthetic times."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import cv2
import httpx
import numpy as np
from fastapi import FastAPI

from edge_runtime.model.predictor import Predictor
from edge_runtime.types import Frame, FrameResult
from tests.conftest import solid
from tests.server_util import make_app

TOKEN = "s3cret-events-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RED, GREEN, GREY = (0, 0, 255), (0, 255, 0), (128, 128, 128)
RULE = {"name": "kiosk", "tags": ["red"], "min_probability": 0.8, "min_frames": 3, "end_after_s": 0.5}
T0 = 1_790_000_000.0


def colour_video(path: Path, pattern: list[tuple[tuple[int, int, int], int]], fps: float = 15,
                 size: tuple[int, int] = (320, 240)) -> Path:
    """A real MJPG video: (colour, frames) runs in order."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, size)
    assert writer.isOpened()
    for colour, count in pattern:
        for _ in range(count):
            writer.write(np.full((size[1], size[0], 3), colour, np.uint8))
    writer.release()
    return path


def events_app(predictor: Predictor, video: Path, data: Path, loop: bool = False, **events: Any) -> FastAPI:
    settings = {"device": "kiosk-1", "rules": [RULE], "store": {"path": str(data), "min_free_mb": 0}, **events}
    return make_app(predictor, token=TOKEN, events=settings,
                    cameras=[{"id": "door", "source": str(video), "realtime": True, "loop": loop}])


def ended(url: str) -> list[dict]:  # type: ignore[type-arg]
    r = httpx.get(f"{url}/api/events", headers=AUTH, timeout=5)
    assert r.status_code == 200
    return [e for e in r.json()["events"] if e["end"]]


class Feeder:
    """Runs frames through a real predictor and stamps them with synthetic times."""

    def __init__(self, predictor: Predictor, camera: str = "door", fps: float = 10.0) -> None:
        self.predictor, self.camera, self.dt = predictor, camera, 1.0 / fps
        self.seq, self.now = 0, T0
        self._cache: dict[bytes, object] = {}

    def result(self, image: np.ndarray) -> FrameResult:
        self.seq += 1
        self.now += self.dt
        frame = Frame(self.camera, self.seq, self.now, time.monotonic(), image)
        return FrameResult(frame, self.predictor.predict(image), 1.0, time.monotonic())


def colour_frames(feeder: Feeder, pattern: str, size: tuple[int, int] = (160, 120)) -> list[FrameResult]:
    """One frame per letter: r red, g green, . grey."""
    images = {"r": solid(RED, *size), "g": solid(GREEN, *size), ".": solid(GREY, *size)}
    return [feeder.result(images[c]) for c in pattern]
