"""Pure: raw model outputs -> predictions, for every Custom Vision output layout.

Classification: ZipMap (`loss`, a list of {tag: probability}) or a probability tensor.
Detection: the YOLOv2 grid of compact exports (decoded here, as the code in the export
zip does) or the decoded boxes of [S1] exports. Boxes are mapped back to the original
image through the Window that preprocessing reports, then normalised to it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cv2
import numpy as np

from ..errors import LabelsError
from ..types import BoundingBox, Prediction, Predictions, Variant, Window
from .spec import ModelSpec

CLASSIFICATION_THRESHOLD = 0.0  # the service returns every tag
DETECTION_THRESHOLD = 0.10  # the export zip's default
MAX_DETECTIONS = 20  # the export zip's default
# The code shipped inside export zips (and the C# sample) applies a sigmoid to the box
# centre offsets t0, t1; the customvision-export-samples predict.py does not. We follow
# the export zip, which is what the service's own container runs.
SIGMOID_XY = True


@dataclass(frozen=True)
class PostprocessOptions:
    threshold: float | None = None  # None: the variant's default above
    top_k: int | None = None  # keep at most this many predictions
    max_detections: int = MAX_DETECTIONS
    nms_iou: float | None = None  # None: the export's (0.45)

    def __post_init__(self) -> None:
        # the settings (config.ModelConfig) check these for users; this catches library callers
        if self.top_k is not None and self.top_k < 1:
            raise ValueError(f"top_k must be at least 1 (None: no limit), not {self.top_k}")
        if self.max_detections < 1:
            raise ValueError(f"max_detections must be at least 1, not {self.max_detections}")


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 0.5 * (np.tanh(0.5 * x) + 1.0)  # = 1 / (1 + e^-x), without overflow warnings


def zipmap_probabilities(value: Sequence[Mapping[str, float]], labels: Sequence[str]) -> np.ndarray:
    scores = value[0]
    if set(scores) != set(labels):
        raise LabelsError(
            f"labels.txt ({len(labels)} tags) does not match the model's own tag names ({len(scores)} tags)"
        )
    return np.array([scores[name] for name in labels], np.float32)


def _tag(spec: ModelSpec, index: int) -> tuple[str, str]:
    labels = spec.labels or ()
    if not 0 <= index < len(labels):
        raise LabelsError(f"the model returned tag index {index} but labels.txt has {len(labels)} tags")
    return labels[index], spec.tag_ids[index] if spec.tag_ids else ""


def classify(probs: np.ndarray, spec: ModelSpec, options: PostprocessOptions) -> Predictions:
    threshold = CLASSIFICATION_THRESHOLD if options.threshold is None else options.threshold
    labels = spec.labels or ()
    if len(probs) != len(labels):
        raise LabelsError(f"the model returned {len(probs)} scores but labels.txt has {len(labels)} tags")
    order = np.argsort(-probs, kind="stable")
    if options.top_k is not None:
        order = order[: options.top_k]
    ordered = probs[order]
    keep = ordered >= threshold
    return Predictions(order[keep].tolist(), ordered[keep].astype(float).tolist(), labels, spec.tag_ids)


def decode_yolo(
    grid: np.ndarray, anchors: np.ndarray, sigmoid_xy: bool = SIGMOID_XY
) -> tuple[np.ndarray, np.ndarray]:
    """[1, A*(5+C), gh, gw] -> boxes [N,4] (x, y, w, h; top-left, network-normalised), probs [N,C]."""
    _, channels, gh, gw = grid.shape
    num_anchors = len(anchors)
    out = grid[0].astype(np.float32).transpose(1, 2, 0).reshape(gh, gw, num_anchors, channels // num_anchors)
    tx, ty = (_sigmoid(out[..., 0]), _sigmoid(out[..., 1])) if sigmoid_xy else (out[..., 0], out[..., 1])
    x = (tx + np.arange(gw)[None, :, None]) / gw
    y = (ty + np.arange(gh)[:, None, None]) / gh
    w = np.exp(out[..., 2]) * anchors[:, 0][None, None, :] / gw
    h = np.exp(out[..., 3]) * anchors[:, 1][None, None, :] / gh
    boxes = np.stack((x - w / 2, y - h / 2, w, h), axis=-1).reshape(-1, 4)
    logits = out[..., 5:]
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    probs = e / e.sum(axis=-1, keepdims=True) * _sigmoid(out[..., 4])[..., None]
    return boxes, probs.reshape(-1, probs.shape[-1])


def select_boxes(
    boxes: np.ndarray, probs: np.ndarray, threshold: float, iou: float, max_detections: int
) -> list[tuple[int, int, float]]:
    """Per-class NMS over every (box, class) pair above the threshold, best first.

    Equal to the export zip's greedy loop, in which a box suppressed for one class still
    competes with its next-best class. Returns (box index, class index, probability).
    """
    box_idx, cls_idx = np.nonzero(probs >= threshold)
    if box_idx.size == 0:
        return []
    scores = probs[box_idx, cls_idx]
    keep = cv2.dnn.NMSBoxesBatched(
        boxes[box_idx].astype(np.float64).tolist(), scores.tolist(), cls_idx.tolist(), threshold, iou
    )
    kept = sorted((int(k) for k in np.asarray(keep).reshape(-1)), key=lambda k: -scores[k])
    return [(int(box_idx[k]), int(cls_idx[k]), float(scores[k])) for k in kept[:max_detections]]


def _to_image(box: np.ndarray, win: Window) -> BoundingBox:
    x, y, w, h = (float(v) for v in box)
    return BoundingBox(
        left=(win.x + x * win.width) / win.image_width,
        top=(win.y + y * win.height) / win.image_height,
        width=w * win.width / win.image_width,
        height=h * win.height / win.image_height,
    )


def detect(
    boxes: np.ndarray, probs: np.ndarray, spec: ModelSpec, win: Window, options: PostprocessOptions
) -> tuple[Prediction, ...]:
    threshold = DETECTION_THRESHOLD if options.threshold is None else options.threshold
    iou = spec.nms_iou if options.nms_iou is None else options.nms_iou
    limit = options.max_detections if options.top_k is None else min(options.max_detections, options.top_k)
    found = []
    for b, c, p in select_boxes(boxes, probs, threshold, iou, limit):
        name, tag_id = _tag(spec, c)
        found.append(Prediction(c, name, p, tag_id, _to_image(boxes[b], win)))
    return tuple(found)


def postprocess(
    outputs: Mapping[str, Any], spec: ModelSpec, win: Window, options: PostprocessOptions
) -> Sequence[Prediction]:
    raw = outputs[spec.output]
    if spec.variant is Variant.YOLO:
        boxes, probs = decode_yolo(np.asarray(raw), spec.anchor_array)
        return detect(boxes, probs, spec, win, options)
    if spec.variant is Variant.S1:
        xyxy = np.asarray(raw, np.float32).reshape(-1, 4)
        classes = np.asarray(outputs["detected_classes"]).reshape(-1).astype(np.int64)
        scores = np.asarray(outputs["detected_scores"], np.float32).reshape(-1)
        xywh = np.concatenate([xyxy[:, :2], xyxy[:, 2:] - xyxy[:, :2]], axis=1)
        probs = np.zeros((len(scores), max(len(spec.labels or ()), int(classes.max(initial=-1)) + 1)), np.float32)
        probs[np.arange(len(scores)), classes] = scores
        return detect(xywh, probs, spec, win, options)
    if spec.zipmap:
        probs = zipmap_probabilities(raw, spec.labels or ())
    else:
        probs = np.asarray(raw, np.float32).reshape(-1)
    return classify(probs, spec, options)
