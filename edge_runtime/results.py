"""What the pipeline publishes for each frame it ran the model on."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from .camera import Frame
from .types import PredictionResult


@dataclass(frozen=True)
class FrameResult:
    frame: Frame
    prediction: PredictionResult
    inference_ms: float  # preprocess + run + postprocess
    published_mono: float

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id

    @property
    def age_ms(self) -> float:
        """From capture to publication."""
        return (self.published_mono - self.frame.captured_mono) * 1000

    def to_json(self, project: str = "", iteration: str = "") -> dict[str, Any]:
        """The Custom Vision prediction object plus where and when the frame came from."""
        body = self.prediction.to_json(project, iteration)
        body["camera"] = self.frame.camera_id
        body["seq"] = self.frame.seq
        body["captured"] = dt.datetime.fromtimestamp(self.frame.captured_at, dt.timezone.utc).strftime(
            "%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"
        body["ageMs"] = round(self.age_ms, 2)
        body["inferenceMs"] = round(self.inference_ms, 2)
        return body
