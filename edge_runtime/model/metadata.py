"""Parse Custom Vision model metadata (all values are strings) into typed values.

Keys we act on are validated: an unknown value, or a number that is not finite or out
of its range, raises MetadataError naming the key, because guessing would silently
change every prediction (and a TargetWidth of 1e12 would ask for terabytes). Keys we do not act on are
ignored. Newer exports repeat the ONNX `metadata_props` in metadata_properties.json; the
copy inside the model wins where both exist.
"""

from __future__ import annotations

import enum
import json
import math
from collections.abc import Mapping
from typing import TypeVar

from ..errors import MetadataError

PIXEL_FORMAT = "Image.BitmapPixelFormat"
PIXEL_RANGE = "Image.NominalPixelRange"
POSTPROCESS = "CustomVision.Postprocess.Method"
YOLO_BIASES = "CustomVision.Postprocess.Yolo.Biases"
NMS_THRESHOLD = "CustomVision.Postprocess.Yolo.NmsThreshold"
RESIZE = "CustomVision.Preprocess.ResizeMethod"
CROP = "CustomVision.Preprocess.CropMethod"
TARGET_W = "CustomVision.Preprocess.TargetWidth"
TARGET_H = "CustomVision.Preprocess.TargetHeight"
CROP_W = "CustomVision.Preprocess.CropWidth"
CROP_H = "CustomVision.Preprocess.CropHeight"
MEAN = "CustomVision.Preprocess.NormalizeMean"
STD = "CustomVision.Preprocess.NormalizeStd"
MAX_DIMENSION = "CustomVision.Preprocess.MaxDimension"
# Seen only as zero; their meaning when non-zero is undocumented, so refuse rather than guess.
MUST_BE_ZERO = (
    "CustomVision.Preprocess.MinDimension",
    "CustomVision.Preprocess.MaxScale",
    "CustomVision.Preprocess.MinScale",
)

POSTPROCESS_METHODS = ("ClassificationMultiClass", "ClassificationMultiLabel", "Yolo", "SSD")
PIXEL_FORMATS = ("Rgb8", "Bgr8")
# Ranges of the numbers we act on. Exports use 224 to 640 pixel sides; the container
# shrinks to at most 1600. Means and stds are in the model's pixel range (1 or 255).
SIDE = (8, 4096)  # TargetWidth/Height, CropWidth/Height (0: unset)
MAX_DIMENSION_RANGE = (32, 16384)  # MaxDimension (0: never shrink)
MEAN_RANGE = (-255.0, 255.0)
STD_RANGE = (1e-6, 255.0)
ANCHOR_RANGE = (1e-6, 1000.0)  # YOLO anchor sides, in grid cells
MAX_ANCHORS = 64

E = TypeVar("E", bound=enum.Enum)


def merge(from_model: Mapping[str, str], from_file: Mapping[str, str]) -> dict[str, str]:
    return {**from_file, **from_model}


def choice(meta: Mapping[str, str], key: str, allowed: tuple[str, ...]) -> str | None:
    if key not in meta:
        return None
    value = meta[key].strip()
    if value not in allowed:
        raise MetadataError(f"metadata {key}={value!r} is not one of {', '.join(allowed)}")
    return value


def enum_value(meta: Mapping[str, str], key: str, kind: type[E]) -> E | None:
    allowed = tuple(str(m.value) for m in kind)
    value = choice(meta, key, allowed)
    return None if value is None else kind(value)


def number(meta: Mapping[str, str], key: str, default: float = 0.0) -> float:
    if key not in meta or not meta[key].strip():
        return default
    try:
        value = float(meta[key])
    except ValueError:
        raise MetadataError(f"metadata {key}={meta[key]!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise MetadataError(f"metadata {key}={meta[key]!r} must be a finite number, zero or positive")
    return value


def size(meta: Mapping[str, str], key: str, bounds: tuple[int, int] = SIDE) -> int:
    """A whole number of pixels: 0 when unset, else within `bounds`."""
    value = integer(meta, key)
    if value and not bounds[0] <= value <= bounds[1]:
        raise MetadataError(f"metadata {key}={meta[key]!r} must be 0 (unset) or from {bounds[0]} to {bounds[1]}")
    return value


def check_range(meta: Mapping[str, str], key: str, values: tuple[float, ...], bounds: tuple[float, float]) -> None:
    """Every value finite and within `bounds` (inclusive); the defaults pass when the key is absent."""
    if all(math.isfinite(v) and bounds[0] <= v <= bounds[1] for v in values):
        return
    raise MetadataError(f"metadata {key}={meta.get(key)!r}: each value must be from {bounds[0]:g} to {bounds[1]:g}")


def integer(meta: Mapping[str, str], key: str) -> int:
    value = number(meta, key)
    if value != int(value):
        raise MetadataError(f"metadata {key}={meta[key]!r} is not a whole number")
    return int(value)


def float_list(meta: Mapping[str, str], key: str) -> list[float] | None:
    if key not in meta:
        return None
    try:
        value = json.loads(meta[key])
        if not isinstance(value, list):
            raise ValueError
        return [float(v) for v in value]
    except (ValueError, TypeError, RecursionError, OverflowError):
        raise MetadataError(f"metadata {key}={meta[key]!r} is not a list of numbers") from None


def triple(meta: Mapping[str, str], key: str, default: float) -> tuple[float, float, float]:
    values = float_list(meta, key)
    if values is None or values == []:
        return (default, default, default)
    if len(values) == 1:
        values = values * 3
    if len(values) != 3:
        raise MetadataError(f"metadata {key}={meta[key]!r} should hold 3 values, one per channel")
    return (values[0], values[1], values[2])


def check_unsupported(meta: Mapping[str, str]) -> None:
    for key in MUST_BE_ZERO:
        if number(meta, key) != 0:
            raise MetadataError(f"metadata {key}={meta[key]!r} is not supported (only 0 has been seen)")
