"""Pure: where to cut an image into tiles, and how to merge what the tiles found.

    plan = tile_plan(4000, 3000, TileMode.parse("auto"), native=(512, 512), overlap=0.2)
    kept = merge_boxes(boxes, scores, classes, ios=0.5)

Tiles all have the same size and are spread evenly from edge to edge, sharing at least
the overlap asked for, so that one image's tiles make one batch. Boxes found in
several tiles are merged class by class with intersection over the smaller box, because
a box cut by a tile border is a smaller box inside the whole one: its IoU is low, its
IoS is high.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import ConfigError
from ..types import InputSpec, ResizeMethod

# `auto` leaves an image whole when tiling would gain less than this much resolution.
AUTO_MIN_GAIN = 1.5
MERGE_IOS = 0.5  # SAHI's default match threshold for its IOS merge


@dataclass(frozen=True)
class Tile:
    """A rectangle of the image in pixels; `full` marks the whole-image pass."""

    x: int
    y: int
    width: int
    height: int
    full: bool = False

    @property
    def label(self) -> str:
        return "full" if self.full else f"{self.x},{self.y},{self.width},{self.height}"


@dataclass(frozen=True)
class TileMode:
    """`auto`, `off` or a fixed tile size in pixels."""

    kind: str  # "auto", "off" or "size"
    width: int = 0
    height: int = 0

    @classmethod
    def parse(cls, text: str) -> TileMode:
        text = text.strip().lower()
        if text in ("auto", "off"):
            return cls(text)
        match = re.fullmatch(r"(\d+)x(\d+)", text)
        if not match or min(int(match[1]), int(match[2])) < 32:
            raise ConfigError(f"--tiles {text!r}: expected auto, off or WIDTHxHEIGHT in pixels (at least 32x32)")
        return cls("size", int(match[1]), int(match[2]))

    def __str__(self) -> str:
        return f"{self.width}x{self.height}" if self.kind == "size" else self.kind


def native_size(spec: InputSpec) -> tuple[int, int]:
    """The tile size that reaches the network without being scaled: its resize target."""
    if spec.resize is ResizeMethod.BY_PIXEL_COUNT_ALIGN32:
        side = round(math.sqrt(spec.target_width * spec.target_height))
        return side, side
    return spec.target_width, spec.target_height


def _starts(length: int, tile: int, overlap: float) -> list[int]:
    """Evenly spread starts, the first at 0 and the last ending at the edge, sharing at least `overlap`."""
    if length <= tile:
        return [0]
    step = max(1.0, tile * (1.0 - overlap))
    count = math.ceil((length - tile) / step) + 1
    return sorted({round(i * (length - tile) / (count - 1)) for i in range(count)})


def tile_plan(width: int, height: int, mode: TileMode, native: tuple[int, int], overlap: float = 0.2,
              full_pass: bool = True) -> list[Tile]:
    """The tiles to run, the whole-image pass (when wanted) last.

    `auto` tiles at the native size when the image is at least AUTO_MIN_GAIN times larger
    on a side; a fixed size is always used. A tile never exceeds the image.
    """
    if not 0.0 <= overlap < 1.0:
        raise ConfigError(f"--overlap {overlap}: expected at least 0 and below 1")
    whole = Tile(0, 0, width, height, full=True)
    if mode.kind == "off":
        return [whole]
    tile_w, tile_h = (mode.width, mode.height) if mode.kind == "size" else native
    if mode.kind == "auto" and max(width / tile_w, height / tile_h) < AUTO_MIN_GAIN:
        return [whole]
    tile_w, tile_h = min(tile_w, width), min(tile_h, height)
    tiles = [Tile(x, y, tile_w, tile_h) for y in _starts(height, tile_h, overlap)
             for x in _starts(width, tile_w, overlap)]
    if len(tiles) == 1:
        return [whole]
    return [*tiles, whole] if full_pass else tiles


def merge_boxes(boxes: np.ndarray, scores: np.ndarray, classes: np.ndarray, ios: float = MERGE_IOS,
                limit: int | None = None) -> list[int]:
    """Greedy class-aware NMS with intersection over the smaller box; indices kept, best first.

    boxes: [N,4] as left, top, width, height (any unit, the same for all).
    """
    order = np.argsort(-scores, kind="stable")
    x0, y0 = boxes[:, 0], boxes[:, 1]
    x1, y1 = x0 + boxes[:, 2], y0 + boxes[:, 3]
    area = np.maximum(boxes[:, 2], 0) * np.maximum(boxes[:, 3], 0)
    kept: list[int] = []
    suppressed = np.zeros(len(scores), bool)
    for i in order:
        if suppressed[i]:
            continue
        kept.append(int(i))
        if limit is not None and len(kept) >= limit:
            break
        inter_w = np.clip(np.minimum(x1[i], x1) - np.maximum(x0[i], x0), 0, None)
        inter_h = np.clip(np.minimum(y1[i], y1) - np.maximum(y0[i], y0), 0, None)
        smaller = np.minimum(area[i], area)
        overlap = np.where(smaller > 0, inter_w * inter_h / np.where(smaller > 0, smaller, 1), 0.0)
        suppressed |= (classes == classes[i]) & (overlap > ios)
    return kept
