"""Frozen value types shared by the runtime's modules."""

from __future__ import annotations

import dataclasses
import datetime as dt
import enum
import functools
import json
import math
import operator
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, overload

import numpy as np

# A model's outputs by name, as onnxruntime returns them: arrays, or for a classifier with a
# ZipMap output a list of {tag: probability} maps (one per image).
Outputs = dict[str, "np.ndarray | list[dict[str, float]]"]


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
            "probability": round_probability(self.probability),
            "tagId": self.tag_id or str(self.tag_index),
            "tagName": self.tag_name,
            "boundingBox": self.bounding_box.to_json() if self.bounding_box else None,
        }


class Predictions(Sequence[Prediction]):
    """A classifier's predictions kept as columns (tag indices and probabilities, highest
    first); a Prediction object is made only when one is read, and `json_text` encodes all
    of them without making any. A 1000-tag model's results then cost little to publish and
    stream when a consumer reads only the top few, or only the JSON.

    Equal to the tuple of the same Predictions, and usable wherever a sequence is.
    """

    __slots__ = ("_indices", "_made", "_names", "_probabilities", "_tag_ids")

    def __init__(self, indices: list[int], probabilities: list[float], names: Sequence[str],
                 tag_ids: Sequence[str] | None) -> None:
        self._indices, self._probabilities = indices, probabilities
        self._names, self._tag_ids = names, tag_ids
        self._made: dict[int, Prediction] = {}

    def __len__(self) -> int:
        return len(self._indices)

    @overload
    def __getitem__(self, i: int) -> Prediction: ...

    @overload
    def __getitem__(self, i: slice) -> tuple[Prediction, ...]: ...

    def __getitem__(self, i: int | slice) -> Prediction | tuple[Prediction, ...]:
        if isinstance(i, slice):
            return tuple(self._make(j) for j in range(*i.indices(len(self))))
        if i < 0:
            i += len(self)
        if not 0 <= i < len(self):
            raise IndexError("prediction index out of range")
        return self._make(i)

    def _make(self, i: int) -> Prediction:
        made = self._made.get(i)
        if made is None:
            index = self._indices[i]
            made = self._made[i] = Prediction(index, self._names[index], self._probabilities[i],
                                              self._tag_ids[index] if self._tag_ids else "")
        return made

    def __eq__(self, other: object) -> bool:
        if isinstance(other, (Predictions, tuple)):
            return tuple(self) == tuple(other)
        return NotImplemented

    def __hash__(self) -> int:
        return hash(tuple(self))

    def __repr__(self) -> str:
        return f"Predictions({len(self)} tags)"

    def columns(self) -> tuple[list[int], list[float], Sequence[str], Sequence[str] | None]:
        """(tag indices, probabilities, tag names, tag ids), as built: for encoders that
        carry predictions as arrays without making an object per tag."""
        return self._indices, self._probabilities, self._names, self._tag_ids

    def json_text(self) -> str:
        """The JSON array of the predictions: `[p.to_json() ...]` with every probability
        written with 8 decimals ("0.50000000"), all formatted in one numpy operation."""
        tails = _json_tails(tuple(self._names), tuple(self._tag_ids) if self._tag_ids else None)
        if not self._indices:
            return "[]"
        texts = _probability_texts(self._probabilities)
        if texts is None:  # not probabilities from 0 to 1: each number as Python writes it
            return "[" + ",".join([f'{{"probability":{json.dumps(round_probability(p))},{tails[i].decode()}'
                                   for i, p in zip(self._indices, self._probabilities, strict=True)]) + "]"
        ordered = operator.itemgetter(*self._indices)(tails) if len(self._indices) > 1 else (tails[self._indices[0]],)
        body = b',{"probability":'.join(map(b",".join, zip(texts, ordered, strict=True)))
        return '[{"probability":' + body.decode("ascii") + "]"


PROBABILITY_DECIMALS = 8
_SCALE = 10.0 ** PROBABILITY_DECIMALS
_POWERS = 10 ** np.arange(PROBABILITY_DECIMALS - 1, -1, -1, dtype=np.int64)


def round_probability(p: float) -> float | None:
    """A probability as results report it: to 8 decimals, rounding half to even; the same
    arithmetic as _probability_texts, so that both writings give equal numbers. None (JSON
    null) for nan and inf, which JSON cannot write; a finite score too large to scale is
    kept as it is."""
    p = float(p)  # a numpy float32 would round in float32
    if not math.isfinite(p):
        return None
    scaled = p * _SCALE
    return round(scaled) / _SCALE if math.isfinite(scaled) else p


def _probability_texts(probabilities: Sequence[float]) -> list[bytes] | None:
    """Every probability as the 10 ASCII bytes of `round_probability` written with 8
    decimals, e.g. b"0.04000000"; None unless all are from 0 to 1."""
    values = np.asarray(probabilities, np.float64)
    if not ((values >= 0) & (values <= 1)).all():
        return None
    scaled = np.rint(values * _SCALE).astype(np.int64)
    text = np.empty((len(values), PROBABILITY_DECIMALS + 2), np.uint8)
    text[:, 0] = ord("0") + scaled // int(_SCALE)
    text[:, 1] = ord(".")
    text[:, 2:] = ord("0") + (scaled % int(_SCALE))[:, None] // _POWERS % 10
    return list(text.view(f"S{PROBABILITY_DECIMALS + 2}").ravel().tolist())


@functools.lru_cache(maxsize=8)
def _json_tails(names: tuple[str, ...], tag_ids: tuple[str, ...] | None) -> tuple[bytes, ...]:
    """Per tag, the constant rest of its prediction object (ASCII): built once per model."""
    dumps = functools.partial(json.dumps, ensure_ascii=True)
    return tuple(f'"tagId":{dumps((tag_ids[i] if tag_ids else "") or str(i))},"tagName":{dumps(name)},'
                 '"boundingBox":null}'.encode("ascii") for i, name in enumerate(names))


def predictions_json(predictions: Sequence[Prediction]) -> str:
    if isinstance(predictions, Predictions):
        return predictions.json_text()
    return json.dumps([p.to_json() for p in predictions], separators=(",", ":"))


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def iso_ms(when: dt.datetime) -> str:
    """UTC with milliseconds and a Z, as the service writes `created`."""
    return when.astimezone(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@dataclass(frozen=True)
class PredictionResult:
    """The answer for one image; `to_json` gives the Custom Vision prediction object."""

    predictions: Sequence[Prediction]  # a tuple, or Predictions (lazy) for classifiers
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

    def json_text(self, project: str = "", iteration: str = "", extra: Mapping[str, Any] | None = None) -> str:
        """`to_json` encoded compactly, with `extra` keys after the predictions; the
        predictions are encoded without building a dict per tag."""
        project, iteration = project or self.project, iteration or self.iteration
        head = json.dumps({"id": self.id, "project": project, "iteration": iteration,
                           "created": iso_ms(self.created)}, separators=(",", ":"))
        tail = json.dumps(dict(extra), separators=(",", ":"))[1:] if extra else "}"
        return f'{head[:-1]},"predictions":{predictions_json(self.predictions)}' + ("," + tail if extra else tail)


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
    reused: bool = False  # the scene did not change: `prediction` is the camera's previous one

    @property
    def camera_id(self) -> str:
        return self.frame.camera_id

    @property
    def age_ms(self) -> float:
        """From capture to publication."""
        return (self.published_mono - self.frame.captured_mono) * 1000

    def _where(self) -> dict[str, Any]:
        where = {"camera": self.frame.camera_id, "seq": self.frame.seq,
                 "captured": iso_ms(dt.datetime.fromtimestamp(self.frame.captured_at, dt.timezone.utc)),
                 "ageMs": round(self.age_ms, 2), "inferenceMs": round(self.inference_ms, 2)}
        if self.reused:
            where["reused"] = True
        return where

    def to_json(self, project: str = "", iteration: str = "") -> dict[str, Any]:
        """The Custom Vision prediction object plus where and when the frame came from."""
        body = self.prediction.to_json(project, iteration)
        body.update(self._where())
        return body

    def json_text(self, project: str = "", iteration: str = "") -> str:
        """`to_json` as compact JSON, encoded once per result however many sinks and
        clients ask (they all pass the server's project and iteration)."""
        cached = self.__dict__.get("_json")
        if cached is not None and cached[0] == (project, iteration):
            return str(cached[1])
        text = self.prediction.json_text(project, iteration, self._where())
        self.__dict__["_json"] = ((project, iteration), text)  # frozen: set beside the fields
        return text
