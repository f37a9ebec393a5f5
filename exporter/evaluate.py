"""Check an export offline against a labelled dataset, with the runtime itself.

Classification: precision, recall and AP per tag and a confusion matrix, to compare with
the figures the service reported. Detection (COCO): mAP at IoU 0.5, per tag and overall,
computed by pycocotools.
"""

from __future__ import annotations

import contextlib
import io
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from edge_runtime.model.imageio import decode_image
from edge_runtime.model.postprocess import PostprocessOptions
from edge_runtime.model.predictor import Predictor

from .dataset import Dataset, DatasetError, Kind
from .metrics import Evaluation, classification_metrics

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DetectionMetrics:
    map50: float
    per_tag: tuple[tuple[str, float], ...]

    def table(self) -> str:
        width = max([len(t) for t, _ in self.per_tag] + [7])
        lines = [f"{'tag':<{width}}  AP@0.5"]
        lines += [f"{t:<{width}}  {'-' if math.isnan(ap) else f'{100 * ap:.1f}%':>6}" for t, ap in self.per_tag]
        lines.append(f"{'mAP@0.5':<{width}}  {100 * self.map50:.1f}%")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        return {"mAP50": self.map50, "perTag": {t: (None if math.isnan(a) else a) for t, a in self.per_tag}}


def evaluate(predictor: Predictor, dataset: Dataset, threshold: float = 0.5,
             progress: Progress | None = None) -> Evaluation | DetectionMetrics:
    labels = list(predictor.spec.labels or ())
    if dataset.kind is Kind.DETECTION:
        if not predictor.spec.variant.is_detection:
            raise DatasetError("a COCO detection set needs a detection model")
        return _detection(predictor, dataset, labels, progress)
    if predictor.spec.variant.is_detection:
        raise DatasetError("a classification set needs a classification model")
    unknown = sorted(set(dataset.tags) - set(labels))
    if unknown:
        raise DatasetError(f"the dataset has tags the model does not know: {', '.join(unknown)}")
    truth, scores = classification_scores(predictor, dataset, labels, progress)
    return classification_metrics(truth, scores, labels, threshold,
                                  multiclass=predictor.spec.variant.value == "multiclass",
                                  source=f"{len(dataset.items)} images of {dataset.root.name}")


def classification_scores(predictor: Predictor, dataset: Dataset, labels: list[str],
                          progress: Progress | None = None) -> tuple[np.ndarray, np.ndarray]:
    """[images, tags] 0/1 truth and the model's probabilities, in the order of `labels`
    (which may hold tags the model does not know: they score 0, and tags it knows but
    `labels` lacks are left out)."""
    everything = PostprocessOptions(threshold=0.0)
    known = list(predictor.spec.labels or ())
    column = {tag: labels.index(tag) for tag in known if tag in labels}
    truth = np.zeros((len(dataset.items), len(labels)), np.float32)
    scores = np.zeros_like(truth)
    for row, item in enumerate(dataset.items):
        for tag in item.tags:
            truth[row, labels.index(tag)] = 1
        for p in predictor.predict(decode_image(item.data), everything).predictions:
            if (k := column.get(known[p.tag_index])) is not None:
                scores[row, k] = p.probability
        if progress:
            progress("evaluate", row + 1, len(dataset.items))
    return truth, scores


def _detection(predictor: Predictor, dataset: Dataset, labels: list[str],
               progress: Progress | None) -> DetectionMetrics:
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    cat = {tag: i + 1 for i, tag in enumerate(labels)}
    gt: dict[str, list[dict[str, object]]] = {"images": [], "annotations": [], "categories": [
        {"id": i, "name": t} for t, i in cat.items()]}
    found: list[dict[str, object]] = []
    options = PostprocessOptions(threshold=0.01, max_detections=100)
    for image_id, item in enumerate(dataset.items, start=1):
        w, h = item.width, item.height
        gt["images"].append({"id": image_id, "width": w, "height": h})
        for r in item.regions:
            if r.tag in cat:
                gt["annotations"].append({"id": len(gt["annotations"]) + 1, "image_id": image_id,
                                          "category_id": cat[r.tag], "bbox": [r.left * w, r.top * h, r.width * w,
                                                                              r.height * h],
                                          "area": r.width * w * r.height * h, "iscrowd": 0})
        for p in predictor.predict(decode_image(item.data), options).predictions:
            b = p.bounding_box
            assert b is not None
            found.append({"image_id": image_id, "category_id": p.tag_index + 1, "score": p.probability,
                          "bbox": [b.left * w, b.top * h, b.width * w, b.height * h]})
        if progress:
            progress("evaluate", image_id, len(dataset.items))
    if not found:  # nothing detected anywhere: every tag with ground truth scores zero
        has_truth = {a["category_id"] for a in gt["annotations"]}
        per_tag = [(t, 0.0 if cat[t] in has_truth else float("nan")) for t in labels]
        return DetectionMetrics(0.0, tuple(per_tag))
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its own tables
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        coco_dt = coco_gt.loadRes(found)
        run = COCOeval(coco_gt, coco_dt, "bbox")
        run.params.iouThrs = np.array([0.5])
        run.evaluate()
        run.accumulate()
    precision = run.eval["precision"][0, :, :, 0, -1]  # [recall, category] at IoU 0.5, all areas, 100 dets
    per_tag = []
    for k, tag in enumerate(labels):
        values = precision[:, k]
        values = values[values > -1]
        per_tag.append((tag, float(values.mean()) if values.size else float("nan")))
    valid = [ap for _, ap in per_tag if not math.isnan(ap)]
    return DetectionMetrics(float(np.mean(valid)) if valid else 0.0, tuple(per_tag))
