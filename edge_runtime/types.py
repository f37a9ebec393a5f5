"""Frozen value types shared by the runtime's modules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np


class Variant(str, enum.Enum):
    """What a model computes, decided from its outputs (and metadata where they agree)."""

    MULTICLASS = "multiclass"  # softmax over tags
    MULTILABEL = "multilabel"  # independent sigmoid per tag
    YOLO = "yolo"  # compact detection: YOLOv2 grid, decoded here
    S1 = "s1"  # compact [S1] detection: boxes, classes and scores come out decoded

    @property
    def is_detection(self) -> bool:
        return self in (Variant.YOLO, Variant.S1)


class ResizeMethod(str, enum.Enum):
    BY_SHORTER_SIDE = "ByShorterSide"
    STRETCH = "Stretch"
    BY_PIXEL_COUNT_ALIGN32 = "ByPixelCountAlign32"


class CropMethod(str, enum.Enum):
    NO_CROP = "NoCrop"
    ONE_CROP_CENTER = "OneCropCenter"  # centre crop of CropWidth x CropHeight after resizing
    FULL_IMAGE_SHORTER_SIDE = "FullImageShorterSide"  # centre square before resizing


class PixelRange(str, enum.Enum):
    NORMALIZED_0_1 = "Normalized_0_1"
    NOMINAL_0_255 = "NominalRange_0_255"


@dataclass(frozen=True)
class InputSpec:
    """Everything preprocessing needs to turn a BGR uint8 frame into the model's input.

    Steps, in order: shrink so the longer side is at most `max_dimension` (0: never);
    the centre square when `center_square` (FullImageShorterSide); the resize; the crop
    (OneCropCenter); a final stretch to the network's fixed size when the result differs.
    """

    name: str
    dtype: str  # "float32" or "float16"
    height: int | None  # None: dynamic
    width: int | None
    bgr: bool
    pixel_range: PixelRange
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: ResizeMethod
    target_width: int
    target_height: int
    crop: CropMethod  # NoCrop or OneCropCenter
    crop_width: int
    crop_height: int
    max_dimension: int = 0
    center_square: bool = False

    @property
    def scale(self) -> float:
        return 1.0 / 255.0 if self.pixel_range is PixelRange.NORMALIZED_0_1 else 1.0

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(getattr(self, f.name), "value", getattr(self, f.name))
                for f in dataclasses.fields(self)}

    @functools.cached_property
    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and std shaped [1,3,1,1] for the NCHW tensor; built once, not per frame."""
        return (np.asarray(self.mean, np.float32).reshape(1, 3, 1, 1),
                np.asarray(self.std, np.float32).reshape(1, 3, 1, 1))

    @property
    def normalizes(self) -> bool:
        return self.mean != (0.0, 0.0, 0.0) or self.std != (1.0, 1.0, 1.0)

    @property
    def fixed_size(self) -> tuple[int, int] | None:
        """(width, height) when the network's spatial size is fixed."""
        if self.width is None or self.height is None:
            return None
        return (self.width, self.height)


@dataclass(frozen=True)
class Window:
    """The region of the original image that the network saw, in original pixels."""

    x: float
    y: float
    width: float
    height: float
    image_width: int
    image_height: int


@dataclass(frozen=True)
class BoundingBox:
    """Normalised to the original image, as Custom Vision reports it."""

    left: float
    top: float
    width: float
    height: float

    def to_json(self) -> dict[str, float]:
        return {
            "left": round(self.left, 8),
            "top": round(self.top, 8),
            "width": round(self.width, 8),
            "height": round(self.height, 8),
        }


@dataclass(frozen=True)
class Prediction:
    tag_index: int
    tag_name: str
    probability: float
    tag_id: str = ""
    bounding_box: BoundingBox | None = None

    @classmethod
    def many(
        cls, indices: list[int], names: Sequence[str], probabilities: list[float], tag_ids: Sequence[str] | None
    ) -> tuple[Prediction, ...]:
        """Build the predictions of a classifier at once; equal to calling the constructor.

        A frozen dataclass's __init__ sets every field through object.__setattr__; filling
        the instance dict directly is 2.5x faster, which matters for 1000-tag models where
        building the result would otherwise cost as much as preprocessing.
        """
        new = object.__new__
        made = []
        for index, p in zip(indices, probabilities, strict=True):
            obj = new(cls)
            obj.__dict__.update(
                tag_index=index, tag_name=names[index], probability=p,
                tag_id=tag_ids[index] if tag_ids else "", bounding_box=None,
            )
            made.append(obj)
        return tuple(made)

    def to_json(self) -> dict[str, Any]:
        return {
            "probability": round(self.probability, 8),
            "tagId": self.tag_id or str(self.tag_index),
            "tagName": self.tag_name,
            "boundingBox": self.bounding_box.to_json() if self.bounding_box else None,
        }


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_ms(when: dt.datetime) -> str:
    """UTC with milliseconds and a Z, as the service writes `created`."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class PredictionResult:
    """The answer for one image; `to_json` gives the Custom Vision prediction object."""

    predictions: tuple[Prediction, ...]
    image_width: int
    image_height: int
    created: dt.datetime = field(default_factory=_now)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    project: str = ""  # the model's project and iteration UUIDs (ids.py); to_json's arguments override them
    iteration: str = ""

    def to_json(self, project: str = "", iteration: str = "") -> dict[str, Any]:
        project, iteration = project or self.project, iteration or self.iteration
        return {
            "id": self.id,
            "project": project,
            "iteration": iteration,
            "created": iso_ms(self.created),
            "predictions": [p.to_json() for p in self.predictions],
        }


@dataclass(frozen=True)
class Frame:
    """One captured image and where and when it came from."""

    camera_id: str
    seq: int  # grows by one per captured frame, never reset while the process runs
    captured_at: float  # wall clock, seconds since the epoch
    captured_mono: float  # monotonic clock, for ages and latencies
    image: np.ndarray = field(repr=False, compare=False)
    prepared: Any = field(default=None, repr=False, compare=False)  # filled by the camera's `prepare` hook


@dataclass(frozen=True)
class FrameResult:
    """What the pipeline publishes for each frame it ran the model on."""

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
        body["captured"] = iso_ms(dt.datetime.fromtimestamp(self.frame.captured_at, dt.timezone.utc))
        body["ageMs"] = round(self.age_ms, 2)
        body["inferenceMs"] = round(self.inference_ms, 2)
        return body
