"""Check an export offline against a labelled dataset, with the runtime itself.

Classification: precision, recall and AP per tag and a confusion matrix, to compare with
the figures the service reported. Detection (COCO): mAP at IoU 0.5, per tag and overall,
computed by pycocotools.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from edge_runtime.int8.coco import ap_per_category, run_cocoeval
from edge_runtime.model.imageio import decode_image
from edge_runtime.model.postprocess import PostprocessOptions
from edge_runtime.model.predictor import Predictor

from .dataset import Dataset, DatasetError, Kind
from .metrics import Evaluation, classification_metrics

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class DetectionMetrics:
    """As the service reports a detector: per tag, precision and recall of the boxes at the
    probability threshold (a box is right when it overlaps a true box of its tag by IoU 0.5,
    each true box matched once) and AP at IoU 0.5; overall, pooled precision and recall and the
    mean AP (mAP@0.5)."""

    map50: float
    per_tag: tuple[tuple[str, float], ...]  # (tag, AP@0.5)
    threshold: float = 0.5
    precision: float = float("nan")
    recall: float = float("nan")
    decisions: tuple[tuple[str, float, float, int], ...] = ()  # (tag, precision, recall, true boxes)
    source: str = ""

    def table(self) -> str:
        width = max([len(t) for t, _ in self.per_tag] + [7])
        pr = {t: (p, r, n) for t, p, r, n in self.decisions}
        lines = [f"{'tag':<{width}}  precision  recall  AP@0.5  boxes"]
        for t, ap in self.per_tag:
            p, r, n = pr.get(t, (float("nan"), float("nan"), 0))
            lines.append(f"{t:<{width}}  {_pct(p):>9}  {_pct(r):>6}  {_pct(ap):>6}  {n:>5}")
        lines.append(f"{'overall':<{width}}  {_pct(self.precision):>9}  {_pct(self.recall):>6}  "
                     f"{100 * self.map50:5.1f}%  (mAP@0.5)")
        lines.append(f"(probability threshold {self.threshold:.2f}, IoU 0.5"
                     f"{'; ' + self.source if self.source else ''})")
        return "\n".join(lines)

    def to_json(self) -> dict[str, object]:
        def number(v: float) -> float | None:
            return None if math.isnan(v) else v

        return {"mAP50": self.map50, "perTag": {t: number(a) for t, a in self.per_tag},
                "threshold": self.threshold, "precision": number(self.precision), "recall": number(self.recall),
                "perTagPerformance": [{"name": t, "precision": number(p), "recall": number(r),
                                       "averagePrecision": number(dict(self.per_tag).get(t, float("nan"))),
                                       "boxes": n} for t, p, r, n in self.decisions],
                "source": self.source}


def _pct(value: float) -> str:
    return "-" if math.isnan(value) else f"{100 * value:.1f}%"


def evaluate(predictor: Predictor, dataset: Dataset, threshold: float = 0.5,
             progress: Progress | None = None) -> Evaluation | DetectionMetrics:
    labels = list(predictor.spec.labels or ())
    if dataset.kind is Kind.DETECTION:
        if not predictor.spec.variant.is_detection:
            raise DatasetError("a COCO detection set needs a detection model")
        return _detection(predictor, dataset, labels, progress, threshold)
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
               progress: Progress | None, threshold: float = 0.5) -> DetectionMetrics:
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
    source = f"{len(dataset.items)} images of {dataset.root.name}"
    if not found:  # nothing detected anywhere: every tag with ground truth scores zero
        truths = Counter(int(a["category_id"]) for a in gt["annotations"])  # type: ignore[call-overload]
        per_tag = [(t, 0.0 if truths[cat[t]] else float("nan")) for t in labels]
        nothing = tuple((t, float("nan"), 0.0 if truths[cat[t]] else float("nan"), truths[cat[t]]) for t in labels)
        return DetectionMetrics(0.0, tuple(per_tag), threshold, float("nan"), 0.0 if truths else float("nan"),
                                nothing, source)
    run = run_cocoeval(gt, found)
    per_tag = list(zip(labels, ap_per_category(run, len(labels)), strict=True))
    valid = [ap for _, ap in per_tag if not math.isnan(ap)]
    decisions = _decisions(run, labels, cat, threshold)
    tp, made, boxes = (sum(d[i] for d in decisions.values()) for i in range(3))
    return DetectionMetrics(float(np.mean(valid)) if valid else 0.0, tuple(per_tag), threshold,
                            _ratio(tp, made), _ratio(tp, boxes),
                            tuple((t, _ratio(*decisions[t][:2]), _ratio(decisions[t][0], decisions[t][2]),
                                   decisions[t][2]) for t in labels), source)


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def _decisions(run: Any, labels: list[str], cat: dict[str, int], threshold: float) -> dict[str, tuple[int, int, int]]:
    """(right boxes, boxes at or above `threshold`, true boxes) per tag, from pycocotools' own
    matching at IoU 0.5 over all areas with up to 100 boxes an image."""
    out = {t: (0, 0, 0) for t in labels}
    tags = {i: t for t, i in cat.items()}
    all_areas, most = run.params.areaRng[0], run.params.maxDets[-1]
    for e in run.evalImgs:
        if e is None or e["aRng"] != all_areas or e["maxDet"] != most:
            continue
        scores = np.asarray(e["dtScores"], np.float64)
        counted = ~np.asarray(e["dtIgnore"], bool).reshape(1, -1)[0] & (scores >= threshold)
        right = np.asarray(e["dtMatches"]).reshape(1, -1)[0] > 0
        truths = int((~np.asarray(e["gtIgnore"], bool)).sum())
        tp, made, n = out[tags[e["category_id"]]]
        out[tags[e["category_id"]]] = (tp + int((right & counted).sum()), made + int(counted.sum()), n + truths)
    return out
