"""Training images for a detector, and what augmentation does to them and their boxes (numpy, OpenCV).

    samples = [network_sample(item, tags, spec) for item in dataset.items]   # as serving sees them
    batch = [augmented(samples, rng) for _ in range(8)]

Every sample is first made exactly as the runtime prepares a frame for the export (the
same `preprocess.prepare`: a stretch to the network's size, nothing cropped), so boxes stay
where they are in normalised coordinates. Augmentation then happens at the network's size:

- a random scale (0.45-1.3), shift and horizontal flip, the boxes moved with the pixels and
  clipped, a box kept only while most of it is still in the picture;
- 2x2 mosaics of four training images, each shrunk to about a quarter of the picture
  around a random centre, so that smaller objects, several a picture, are seen;
- a colour jitter in HSV (hue slightly, saturation and brightness more).

Anchors are the k-means clusters of the training boxes' sizes at the scales augmentation
shows them, with 1 - IoU as the distance (YOLOv2's choice over Euclidean distance, which
lets large boxes dominate).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import cv2
import numpy as np

from edge_runtime.model.imageio import decode_image
from edge_runtime.model.preprocess import prepare
from edge_runtime.types import InputSpec

from ..dataset import Item

FILL = 114  # grey, where a shifted or shrunk picture leaves the canvas empty
SCALE = (0.45, 1.3)
SHIFT = 0.25  # of the picture's side, at most, each way
MOSAIC_SHARE = 0.5
MOSAIC_SCALE = (0.35, 0.65)  # each quarter's side, as a share of the picture's
KEEP_VISIBLE = 0.4  # a clipped box is kept while this share of it is still in the picture
MIN_SIDE = 3.0  # pixels at the network's size
HUE, SATURATION, VALUE = 0.015, 0.6, 0.35


@dataclass(frozen=True)
class Sample:
    image: np.ndarray  # S x S x 3 BGR uint8, the network's size
    boxes: np.ndarray  # [N, 4] x0, y0, x1, y1, normalised to the picture
    classes: np.ndarray  # [N] tag index


def network_sample(item: Item, tags: Sequence[str], spec: InputSpec) -> Sample:
    """The image as the runtime prepares it for the export, with its boxes."""
    image, _ = prepare(decode_image(item.data), spec)
    index = {t: i for i, t in enumerate(tags)}
    boxes = np.array([[r.left, r.top, r.left + r.width, r.top + r.height] for r in item.regions],
                     np.float32).reshape(-1, 4)
    classes = np.array([index[r.tag] for r in item.regions], np.int64)
    return Sample(image, np.clip(boxes, 0.0, 1.0), classes)


def _kept(boxes: np.ndarray, classes: np.ndarray, size: int) -> tuple[np.ndarray, np.ndarray]:
    """Clip to the picture; drop boxes mostly outside it or too small to learn from."""
    clipped = np.clip(boxes, 0.0, 1.0)
    area = np.prod(np.maximum(boxes[:, 2:] - boxes[:, :2], 0), axis=1)
    visible = np.prod(np.maximum(clipped[:, 2:] - clipped[:, :2], 0), axis=1)
    sides = (clipped[:, 2:] - clipped[:, :2]) * size
    keep = (visible >= KEEP_VISIBLE * np.maximum(area, 1e-12)) & (sides.min(axis=1) >= MIN_SIDE)
    return clipped[keep].astype(np.float32), classes[keep]


def scaled(sample: Sample, rng: np.random.Generator, scale: tuple[float, float] = SCALE,
           shift: float = SHIFT, flip: bool = True) -> Sample:
    """A random scale about the centre, shift and flip of one picture, boxes moved alike."""
    size = sample.image.shape[0]
    s = rng.uniform(*scale)
    aspect = rng.uniform(0.85, 1.15)
    sx, sy = s * np.sqrt(aspect), s / np.sqrt(aspect)
    mirror = flip and rng.random() < 0.5
    tx, ty = rng.uniform(-shift, shift, 2)
    # normalised coordinates: p' = scale * (p - 0.5) + 0.5 + shift, x mirrored first
    ax = -sx if mirror else sx
    bx = 0.5 + tx - ax * 0.5
    by = 0.5 + ty - sy * 0.5
    matrix = np.array([[ax, 0, bx * size], [0, sy, by * size]], np.float64)
    image = cv2.warpAffine(sample.image, matrix, (size, size), flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_CONSTANT, borderValue=(FILL, FILL, FILL))
    b = sample.boxes
    x0, x1 = ax * b[:, 0] + bx, ax * b[:, 2] + bx
    y0, y1 = sy * b[:, 1] + by, sy * b[:, 3] + by
    moved = np.stack([np.minimum(x0, x1), y0, np.maximum(x0, x1), y1], axis=1)
    boxes, classes = _kept(moved, sample.classes, size)
    return Sample(image, boxes, classes)


def mosaic(quarters: Sequence[Sample], rng: np.random.Generator) -> Sample:
    """Four pictures around a random centre, each shrunk to about a quarter of the canvas."""
    size = quarters[0].image.shape[0]
    canvas = np.full_like(quarters[0].image, FILL)
    cx, cy = rng.uniform(0.35, 0.65, 2) * size
    boxes, classes = [], []
    for k, sample in enumerate(quarters):
        flipped = scaled(sample, rng, scale=(1.0, 1.0), shift=0.0)  # a flip only
        w = max(8, int(size * rng.uniform(*MOSAIC_SCALE)))
        h = max(8, int(w * rng.uniform(0.85, 1.15)))
        x0 = int(cx) - w if k % 2 == 0 else int(cx)
        y0 = int(cy) - h if k < 2 else int(cy)
        small = cv2.resize(flipped.image, (w, h), interpolation=cv2.INTER_AREA)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x0 + w, size), min(y0 + h, size)
        if cx1 > cx0 and cy1 > cy0:
            canvas[cy0:cy1, cx0:cx1] = small[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        b = flipped.boxes * np.array([w, h, w, h], np.float32) + np.array([x0, y0, x0, y0], np.float32)
        boxes.append(b / size)
        classes.append(flipped.classes)
    kept_boxes, kept_classes = _kept(np.concatenate(boxes), np.concatenate(classes), size)
    return Sample(canvas, kept_boxes, kept_classes)


def colour(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Hue, saturation and brightness jittered by random gains, through lookup tables."""
    gains = rng.uniform(-1, 1, 3) * (HUE, SATURATION, VALUE) + 1
    hue, sat, val = cv2.split(cv2.cvtColor(image, cv2.COLOR_BGR2HSV))
    x = np.arange(256, dtype=np.float32)
    lut_hue = ((x * gains[0]) % 180).astype(np.uint8)
    lut_sat = np.clip(x * gains[1], 0, 255).astype(np.uint8)
    lut_val = np.clip(x * gains[2], 0, 255).astype(np.uint8)
    hsv = cv2.merge((cv2.LUT(hue, lut_hue), cv2.LUT(sat, lut_sat), cv2.LUT(val, lut_val)))
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)


def augmented(samples: Sequence[Sample], rng: np.random.Generator, mosaic_share: float = MOSAIC_SHARE) -> Sample:
    """One training picture: a mosaic of four random samples, or one of them scaled and shifted."""
    if len(samples) >= 4 and rng.random() < mosaic_share:
        picked = mosaic([samples[i] for i in rng.choice(len(samples), 4, replace=False)], rng)
    else:
        picked = scaled(samples[int(rng.integers(len(samples)))], rng)
    return Sample(colour(picked.image, rng), picked.boxes, picked.classes)


def _shape_iou(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    """IoU of boxes [N, 2] and anchors [A, 2] (w, h) placed on one centre: [N, A]."""
    inter = np.minimum(sizes[:, None, 0], anchors[None, :, 0]) * np.minimum(sizes[:, None, 1], anchors[None, :, 1])
    union = sizes[:, None].prod(-1) + anchors[None].prod(-1) - inter
    return np.asarray(inter / union)


def shape_iou(sizes: np.ndarray, anchors: np.ndarray) -> np.ndarray:
    return _shape_iou(np.asarray(sizes, np.float64), np.asarray(anchors, np.float64))


def fit_anchors(sizes: np.ndarray, count: int, seed: int = 0, rounds: int = 100) -> np.ndarray:
    """`count` anchors (w, h), smallest area first, clustering `sizes` [N, 2] with 1 - IoU."""
    sizes = np.asarray(sizes, np.float64)
    rng = np.random.default_rng(seed)
    unique = np.unique(sizes, axis=0)
    if len(unique) <= count:  # fewer distinct sizes than anchors: spread them by scale
        base = unique[rng.integers(len(unique), size=count)]
        anchors = base * np.geomspace(0.5, 2.0, count)[:, None]
    else:
        anchors = unique[rng.choice(len(unique), count, replace=False)]
        for _ in range(rounds):
            nearest = _shape_iou(sizes, anchors).argmax(1)
            moved = np.array([np.median(sizes[nearest == k], axis=0) if np.any(nearest == k) else anchors[k]
                              for k in range(count)])
            if np.allclose(moved, anchors):
                break
            anchors = moved
    return anchors[np.argsort(anchors.prod(1))]
