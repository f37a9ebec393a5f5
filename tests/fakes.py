"""A stand-in for `Predictor` with the same three stages and no model, for tests of what
runs around the model (cameras, pipeline, sinks, server) and for examples.

    fake = FakePredictor()
    pipeline = Pipeline(fake, [camera], sink)
    ...
    fake.prepared_on    # names of the threads that preprocessed each frame

It "sees" brightness: tag "bright" gets the mean pixel value / 255, "dark" the rest.
Frames whose first pixel equals `bad_value` make `infer` raise a ValueError, as a model
or driver fault from outside the runtime's own error tree would.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from edge_runtime.model.predictor import Prepared
from edge_runtime.types import Outputs, Prediction, PredictionResult, Window

LABELS = ("dark", "bright")


class FakePredictor:
    def __init__(self, infer_s: float = 0.0, bad_value: int | None = None) -> None:
        self.infer_s = infer_s
        self.bad_value = bad_value
        self.prepared_on: list[str] = []
        self.inferred = 0
        self._lock = threading.Lock()

    def prepare(self, frame: np.ndarray) -> Prepared:
        with self._lock:
            self.prepared_on.append(threading.current_thread().name)
        height, width = frame.shape[:2]
        tensor = np.asarray(frame, np.float32).mean(axis=(0, 1), keepdims=True)
        return Prepared(tensor, Window(0, 0, width, height, width, height))

    def infer(self, tensor: np.ndarray) -> Outputs:
        if self.infer_s:
            time.sleep(self.infer_s)
        with self._lock:
            self.inferred += 1
        if self.bad_value is not None and int(tensor.reshape(-1)[0]) == self.bad_value:
            raise ValueError("the fake model cannot take this frame")
        return {"bright": float(tensor.mean()) / 255.0}

    def finish(self, outputs: Outputs, prepared: Prepared) -> PredictionResult:
        bright = outputs["bright"]
        found = [Prediction(1, "bright", bright), Prediction(0, "dark", 1.0 - bright)]
        found.sort(key=lambda p: -p.probability)
        window = prepared.window
        return PredictionResult(tuple(found), window.image_width, window.image_height)

    @property
    def iteration(self) -> str:
        return "fake"
