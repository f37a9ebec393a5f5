"""Two versions of one model side by side on the same labelled frames: the figures
`evaluate` gives for each, per tag, and the frames where their answers differ.

    report = compare(Predictor.load(active), Predictor.load(candidate), load_dataset(held_out))
    Path("compare.json").write_text(json.dumps(report))

Classification: precision, recall and AP per tag over the tags of the dataset and of both
models (a tag one model does not know scores 0 for it, so a new tag counts against the
version that lacks it). Detection: AP at IoU 0.5 per tag and mAP, as `evaluate` computes
them with pycocotools. Two answers differ when the top tag differs (multiclass), the set of
tags at or above the threshold differs (multilabel), or the tags of the boxes at or above
the threshold differ in kind or count (detection).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.model.imageio import decode_image
from edge_runtime.model.postprocess import PostprocessOptions
from edge_runtime.model.predictor import Predictor

from .dataset import Dataset, DatasetError, Kind
from .evaluate import DetectionMetrics, classification_scores, evaluate
from .metrics import classification_metrics

Progress = Callable[[str, int, int], None]
MAX_DISAGREEMENTS = 200  # frames listed at most; the count says how many there were


def _figure(value: float) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 6)


def _side(predictor: Predictor) -> dict[str, Any]:
    return {"iteration": predictor.iteration, "tags": list(predictor.spec.labels or ()),
            "variant": predictor.spec.variant.value}


def compare(active: Predictor, candidate: Predictor, dataset: Dataset, threshold: float = 0.5,
            progress: Progress | None = None) -> dict[str, Any]:
    """The comparison as JSON-ready values (see the module docstring)."""
    if not dataset.items:
        raise DatasetError(f"{dataset.root}: no labelled images to compare on")
    if active.spec.variant.is_detection != candidate.spec.variant.is_detection:
        raise DatasetError("a detector and a classifier cannot be compared")
    if dataset.kind is Kind.DETECTION:
        body = _detection(active, candidate, dataset, threshold, progress)
    else:
        body = _classification(active, candidate, dataset, threshold, progress)
    listed = body.pop("disagreements")
    return {"kind": dataset.kind.value, "threshold": threshold, "images": len(dataset.items),
            "active": _side(active), "candidate": _side(candidate), **body,
            "disagreementCount": len(listed), "disagreements": listed[:MAX_DISAGREEMENTS]}


def _staged(progress: Progress | None, stage: str) -> Progress | None:
    """`progress` told `stage` as the stage's name (which version is being run)."""
    if progress is None:
        return None
    told = progress

    def each(_: str, done: int, total: int) -> None:
        told(stage, done, total)

    return each


def _relative(dataset: Dataset, path: Path) -> str:
    try:
        return path.resolve().relative_to(dataset.root.resolve()).as_posix()
    except ValueError:
        return path.name


def _classification(active: Predictor, candidate: Predictor, dataset: Dataset, threshold: float,
                    progress: Progress | None) -> dict[str, Any]:
    labels = list(dict.fromkeys([*dataset.tags, *(active.spec.labels or ()), *(candidate.spec.labels or ())]))
    count = len(dataset.items)

    truth, old = classification_scores(active, dataset, labels, _staged(progress, "active"))
    _, new = classification_scores(candidate, dataset, labels, _staged(progress, "candidate"))
    multiclass = dataset.kind is Kind.CLASSIFICATION
    metrics = {side: classification_metrics(truth, scores, labels, threshold, multiclass=multiclass,
                                            source=f"{count} held-out images")
               for side, scores in (("active", old), ("candidate", new))}

    def answer(row: np.ndarray) -> list[str]:
        if multiclass:
            return [labels[int(row.argmax())]] if row.max() > 0 else []
        return [labels[k] for k in np.flatnonzero(row >= threshold)]

    differ: list[dict[str, Any]] = []
    for i, item in enumerate(dataset.items):
        a, c = answer(old[i]), answer(new[i])
        if a != c:
            differ.append({"index": len(differ), "image": _relative(dataset, item.path), "truth": list(item.tags),
                           "active": a, "candidate": c,
                           "activeRight": set(a) == set(item.tags), "candidateRight": set(c) == set(item.tags)})
    per_tag = []
    for k, tag in enumerate(labels):
        was, now = metrics["active"].per_tag[k], metrics["candidate"].per_tag[k]
        per_tag.append({"tag": tag, "images": was.images,
                        "active": {"precision": _figure(was.precision), "recall": _figure(was.recall),
                                   "ap": _figure(was.average_precision)},
                        "candidate": {"precision": _figure(now.precision), "recall": _figure(now.recall),
                                      "ap": _figure(now.average_precision)}})
    overall = {side: {"precision": _figure(m.precision), "recall": _figure(m.recall),
                      "ap": _figure(m.average_precision)} for side, m in metrics.items()}
    return {"perTag": per_tag, "overall": overall, "disagreements": differ}


def _boxes(predictor: Predictor, data: bytes, threshold: float) -> list[str]:
    options = PostprocessOptions(threshold=threshold, max_detections=100)
    return sorted(p.tag_name for p in predictor.predict(decode_image(data), options).predictions)


def _detection(active: Predictor, candidate: Predictor, dataset: Dataset, threshold: float,
               progress: Progress | None) -> dict[str, Any]:
    figures: dict[str, DetectionMetrics] = {}
    for side, predictor in (("active", active), ("candidate", candidate)):
        m = evaluate(predictor, dataset, threshold, progress=_staged(progress, side))
        assert isinstance(m, DetectionMetrics)
        figures[side] = m
    tags = list(dict.fromkeys([*dataset.tags, *(t for m in figures.values() for t, _ in m.per_tag)]))
    ap = {side: dict(m.per_tag) for side, m in figures.items()}
    per_tag = [{"tag": t, "images": sum(1 for i in dataset.items if any(r.tag == t for r in i.regions)),
                "active": {"ap": _figure(ap["active"].get(t, math.nan))},
                "candidate": {"ap": _figure(ap["candidate"].get(t, math.nan))}} for t in tags]
    differ: list[dict[str, Any]] = []
    for item in dataset.items:
        a, c = _boxes(active, item.data, threshold), _boxes(candidate, item.data, threshold)
        if Counter(a) != Counter(c):
            truth = sorted(r.tag for r in item.regions)
            differ.append({"index": len(differ), "image": _relative(dataset, item.path), "truth": truth,
                           "active": a, "candidate": c, "activeRight": Counter(a) == Counter(truth),
                           "candidateRight": Counter(c) == Counter(truth)})
    overall = {side: {"map50": _figure(m.map50)} for side, m in figures.items()}
    return {"perTag": per_tag, "overall": overall, "disagreements": differ}

