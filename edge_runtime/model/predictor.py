"""Bundle + session + pre/postprocessing: one object that turns frames into predictions.

    predictor = Predictor.load("export.zip")
    result = predictor.predict(frame)            # a BGR uint8 frame from OpenCV
    json.dumps(result.to_json())
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..types import InputSpec, Outputs, PredictionResult, Window
from .bundle import Bundle, open_bundle
from .cpu import int8_warning
from .imageio import decode_image, to_bgr8
from .postprocess import PostprocessOptions, postprocess
from .preprocess import preprocess
from .session import OnnxModel
from .spec import ModelSpec, describe

log = logging.getLogger(__name__)
WARM_UP_FRAME = (480, 640)  # height, width: a typical camera frame


@dataclass(frozen=True)
class Prepared:
    """A preprocessed frame: the input tensor and where in the image it came from."""

    tensor: np.ndarray = field(repr=False)
    window: Window
    elapsed_s: float = 0.0  # time spent preprocessing
    input: InputSpec | None = None  # what it was prepared for: a swapped-in model with another input prepares again


class Health:
    """What a newly active version did in its first minutes: runs, failed runs, and runs
    whose outputs were not finite (checked only while `watching`, so it costs nothing after)."""

    def __init__(self) -> None:
        self.watching = False
        self.runs = self.errors = self.non_finite = 0

    def check(self, outputs: Outputs) -> None:
        self.runs += 1
        if non_finite(outputs) is not None:
            self.non_finite += 1


def non_finite(outputs: Outputs) -> str | None:
    """The name of the first float output holding NaN or an infinity, else None."""
    for name, value in outputs.items():
        if isinstance(value, np.ndarray) and value.dtype.kind == "f" and not np.isfinite(value).all():
            return name
    return None


class Predictor:
    def __init__(
        self, bundle: Bundle, model: OnnxModel, spec: ModelSpec, options: PostprocessOptions | None = None
    ) -> None:
        self.bundle = bundle
        self.model = model
        self.spec = spec
        self.options = options or PostprocessOptions()
        self.health = Health()

    @classmethod
    def load(
        cls,
        path: str | Path,
        providers: Sequence[str] | None = None,
        intra_op_threads: int = 0,
        inter_op_threads: int = 0,
        options: PostprocessOptions | None = None,
        warm_up: bool = True,
        spinning: bool = False,
        graph_cache: Path | None = None,
        runs: int = 1,
    ) -> Predictor:
        """Open an export, start its session and run it once, so the first real frame is not slow."""
        bundle = open_bundle(path)
        warning = int8_warning(bundle.info)
        if warning:
            log.warning("%s: %s", bundle.source, warning)
        model = OnnxModel.load(bundle.model_path, providers, intra_op_threads, inter_op_threads, spinning=spinning,
                               graph_cache=graph_cache, runs=runs)
        predictor = cls(bundle, model, describe(bundle, model), options)
        if warm_up:
            predictor.warm_up()
        return predictor

    def with_options(self, options: PostprocessOptions) -> Predictor:
        """The same loaded model (one session) with other thresholds and limits."""
        twin = Predictor(self.bundle, self.model, self.spec, options)
        twin.health = self.health
        return twin

    def warm_up(self) -> None:
        """One inference on a grey frame; a ZipMap model without labels.txt names its tags here."""
        frame = np.full((*WARM_UP_FRAME, 3), 128, np.uint8)
        tensor, _ = preprocess(frame, self.spec.input)
        outputs = self.infer(tensor)
        if self.spec.zipmap and self.spec.labels is None:
            labels = tuple(outputs[self.spec.output][0].keys())
            tag_ids = self.spec.ids.tag_ids(labels) if self.spec.ids else None
            self.spec = dataclasses.replace(self.spec, labels=labels, tag_ids=tag_ids)
        self.predict(frame)  # also checks labels against the outputs

    def infer(self, tensor: np.ndarray) -> Outputs:
        names = self.spec.output_names
        health = self.health
        if not health.watching:
            return dict(zip(names, self.model.run({self.spec.input.name: tensor}, names), strict=True))
        try:
            outputs = dict(zip(names, self.model.run({self.spec.input.name: tensor}, names), strict=True))
        except Exception:
            health.errors += 1
            raise
        health.check(outputs)
        return outputs

    def prepare(self, frame: np.ndarray) -> Prepared:
        """Stage 1 of 3: frame -> input tensor (pure; safe to run on another thread)."""
        start = time.perf_counter()
        tensor, window = preprocess(to_bgr8(frame), self.spec.input)
        return Prepared(tensor, window, time.perf_counter() - start, self.spec.input)

    def finish(self, outputs: Outputs, prepared: Prepared,
               options: PostprocessOptions | None = None) -> PredictionResult:
        """Stage 3 of 3: raw outputs -> result (stage 2 is `infer`)."""
        window = prepared.window
        predictions = postprocess(outputs, self.spec, window, options or self.options)
        return PredictionResult(predictions, image_width=window.image_width, image_height=window.image_height,
                                project=self.project, iteration=self.iteration)

    def predict(self, frame: np.ndarray, options: PostprocessOptions | None = None) -> PredictionResult:
        prepared = self.prepare(frame)
        return self.finish(self.infer(prepared.tensor), prepared, options)

    def predict_bytes(self, data: bytes, options: PostprocessOptions | None = None) -> PredictionResult:
        return self.predict(decode_image(data), options)

    @property
    def iteration(self) -> str:
        """The iteration's UUID: recorded in the export, or derived from the model (ids.py)."""
        return self.spec.ids.iteration if self.spec.ids else str(self.bundle.manifest.get("IterationId") or "")

    @property
    def project(self) -> str:
        """The project's UUID: recorded by edge-export, or derived from the model (ids.py)."""
        return self.spec.ids.project if self.spec.ids else ""
