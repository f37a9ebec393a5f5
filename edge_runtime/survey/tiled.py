"""A Predictor run over tiles: detection merged across tiles, classification as a grid.

    tiled = TiledPredictor(predictor, TileMode.parse("auto"), overlap=0.2, threshold=None)
    prepared = tiled.prepare(image)     # cut and resize; safe on a worker thread
    found = tiled.run(prepared)         # inference (batches of tiles of one size) and merge

Prepared tiles stay uint8 and, at native size, are views of the decoded image: the
float tensors (four times larger) exist only for the batch being run, so a 20-megapixel
photo in 130 tiles costs no memory beyond its own while it waits in the queue.

Each Prediction's box is normalised to the whole image, as Custom Vision reports it,
and comes with the tile it was found in ("full" for the whole-image pass).
"""

from __future__ import annotations

from collections import defaultdict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from ..model.postprocess import DETECTION_THRESHOLD, PostprocessOptions, postprocess
from ..model.predictor import Predictor
from ..model.preprocess import prepare as fit
from ..model.preprocess import to_tensor
from ..types import BoundingBox, Prediction, Window
from .tiling import Tile, TileMode, merge_boxes, native_size, tile_plan

GRID_THRESHOLD = 0.5  # classification tiles: a finding when its tag is at least this likely
MAX_PER_TILE = 100
MAX_PER_IMAGE = 1000
MAX_BATCH = 8  # tiles per session.run: bounds the activations held at once (larger was slower on CPU)


@dataclass(frozen=True)
class Found:
    prediction: Prediction
    tile: str


@dataclass(frozen=True)
class PreparedImage:
    width: int
    height: int
    tiles: tuple[Tile, ...]
    images: tuple[np.ndarray, ...] = field(repr=False)  # what the network sees, HxWx3 uint8
    windows: tuple[Window, ...]


class TiledPredictor:
    def __init__(self, predictor: Predictor, mode: TileMode, overlap: float = 0.2,
                 threshold: float | None = None) -> None:
        self.predictor = predictor
        self.mode = mode
        self.overlap = overlap
        self.detection = predictor.spec.variant.is_detection
        default = DETECTION_THRESHOLD if self.detection else GRID_THRESHOLD
        self.threshold = default if threshold is None else threshold
        self.options = PostprocessOptions(threshold=self.threshold, max_detections=MAX_PER_TILE)
        batch = predictor.model.inputs[0].dim(0) if len(predictor.model.inputs) == 1 else 1
        self.max_batch = MAX_BATCH if batch is None else 1  # a fixed batch dimension of 1: one at a time

    def plan(self, width: int, height: int) -> list[Tile]:
        # The whole-image pass catches objects larger than a tile; a classification grid has none.
        return tile_plan(width, height, self.mode, native_size(self.predictor.spec.input), self.overlap,
                         full_pass=self.detection)

    def prepare(self, image: np.ndarray) -> PreparedImage:
        height, width = image.shape[:2]
        tiles = self.plan(width, height)
        images, windows = [], []
        for t in tiles:
            fitted, win = fit(image[t.y:t.y + t.height, t.x:t.x + t.width], self.predictor.spec.input)
            images.append(fitted)
            windows.append(Window(t.x + win.x, t.y + win.y, win.width, win.height, width, height))
        return PreparedImage(width, height, tuple(tiles), tuple(images), tuple(windows))

    def _infer_all(self, prepared: PreparedImage) -> list[dict[str, object]]:
        """Raw outputs per tile; tiles of one shape go through the session together."""
        groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
        for i, image in enumerate(prepared.images):
            groups[image.shape].append(i)
        outputs: list[dict[str, object]] = [{} for _ in prepared.images]
        spec = self.predictor.spec.input
        chunks = [indices[start:start + self.max_batch]
                  for indices in groups.values() for start in range(0, len(indices), self.max_batch)]

        def infer(chunk: list[int]) -> dict[str, Any]:
            tensors = [to_tensor(prepared.images[i], spec) for i in chunk]
            return self.predictor.infer(np.concatenate(tensors) if len(tensors) > 1 else tensors[0])

        runs = min(self.predictor.model.runs, len(chunks))  # as many batches at once as the session runs
        if runs > 1:
            with ThreadPoolExecutor(runs, thread_name_prefix="tiles") as pool:
                raws = list(pool.map(infer, chunks))
        else:
            raws = [infer(chunk) for chunk in chunks]
        for chunk, raw in zip(chunks, raws, strict=True):
            for row, i in enumerate(chunk):
                outputs[i] = {name: value[row:row + 1] for name, value in raw.items()}
        return outputs

    def run(self, prepared: PreparedImage) -> list[Found]:
        found: list[Found] = []
        spec = self.predictor.spec
        for tile, window, raw in zip(prepared.tiles, prepared.windows, self._infer_all(prepared), strict=True):
            predictions = postprocess(raw, spec, window, self.options)
            if not self.detection:
                box = BoundingBox(tile.x / prepared.width, tile.y / prepared.height,
                                  tile.width / prepared.width, tile.height / prepared.height)
                predictions = tuple(replace(p, bounding_box=box) for p in predictions)
            found.extend(Found(p, tile.label) for p in predictions)
        if self.detection and len(prepared.tiles) > 1:
            found = self._merge(found)
        found.sort(key=lambda f: -f.prediction.probability)
        return found[:MAX_PER_IMAGE]

    @staticmethod
    def _merge(found: list[Found]) -> list[Found]:
        if not found:
            return found
        boxes = np.array([[b.left, b.top, b.width, b.height] for f in found
                          if (b := f.prediction.bounding_box) is not None], np.float64)
        scores = np.array([f.prediction.probability for f in found], np.float64)
        classes = np.array([f.prediction.tag_index for f in found], np.int64)
        return [found[i] for i in merge_boxes(boxes, scores, classes, limit=MAX_PER_IMAGE)]
