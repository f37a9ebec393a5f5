"""Precision, recall and average precision per tag, as Custom Vision reports them.

precision = of the predictions made for a tag, the share that were right; recall = of
the images that truly carry the tag, the share the model found; average precision
summarises precision over all recall levels (scikit-learn's definition). A tag counts as
predicted for an image when its probability is at least the threshold. Overall
precision and recall pool every (image, tag) decision; overall AP is the mean over tags.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

NAMED_COLUMN_WIDTH = 12  # longer tag names would make the matrix too wide: columns are numbered then


@dataclass(frozen=True)
class TagMetrics:
    tag: str
    precision: float
    recall: float
    average_precision: float
    images: int  # how many images truly carry the tag


@dataclass(frozen=True)
class Evaluation:
    threshold: float
    precision: float
    recall: float
    average_precision: float
    per_tag: tuple[TagMetrics, ...]
    confusion: tuple[tuple[int, ...], ...] = ()  # multiclass only: rows truth, columns argmax
    source: str = ""  # "local validation split", "Custom Vision", "evaluate"
    warnings: tuple[str, ...] = ()

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = json.loads(json.dumps(asdict(self), default=float).replace("NaN", "null"))
        return body

    def table(self) -> str:
        width = max([len(t.tag) for t in self.per_tag] + [7])
        lines = [f"{'tag':<{width}}  precision  recall     AP  images"]
        for t in self.per_tag:
            lines.append(f"{t.tag:<{width}}  {_pct(t.precision):>9}  {_pct(t.recall):>6}  "
                         f"{_pct(t.average_precision):>5}  {t.images:>6}")
        lines.append(f"{'overall':<{width}}  {_pct(self.precision):>9}  {_pct(self.recall):>6}  "
                     f"{_pct(self.average_precision):>5}")
        lines.append(f"(probability threshold {self.threshold:.2f}{'; ' + self.source if self.source else ''})")
        lines += [f"warning: {w}" for w in self.warnings]
        if self.confusion:
            lines += ["", *confusion_lines([t.tag for t in self.per_tag], self.confusion)]
        return "\n".join(lines)


def confusion_lines(labels: list[str], matrix: tuple[tuple[int, ...], ...]) -> list[str]:
    """Columns are headed by the tag names when they are short; otherwise by numbers, and each
    row starts with its number, so column k is the tag of row k."""
    named = max(len(t) for t in labels) <= NAMED_COLUMN_WIDTH
    heads = labels if named else [str(i) for i in range(len(labels))]
    rows = labels if named else [f"{i:>{len(heads[-1])}} {t}" for i, t in enumerate(labels)]
    cell = max([len(str(v)) for row in matrix for v in row] + [len(h) for h in heads] + [3])
    width = max([len(r) for r in rows] + [7])
    how = "columns: top prediction" if named else "columns: top prediction, numbered as the rows"
    lines = [f"confusion matrix (rows: true tag, {how})", " " * (width + 2) + " ".join(f"{h:>{cell}}" for h in heads)]
    lines += [f"{r:<{width}}  " + " ".join(f"{v:>{cell}}" for v in row) for r, row in zip(rows, matrix, strict=True)]
    return lines


def _pct(value: float) -> str:
    return "-" if value is None or math.isnan(value) else f"{100 * value:.1f}%"


def _ratio(num: float, den: float) -> float:
    return float(num / den) if den else float("nan")


def classification_metrics(
    truth: np.ndarray, scores: np.ndarray, labels: list[str], threshold: float = 0.5,
    multiclass: bool = True, source: str = "",
) -> Evaluation:
    """`truth` and `scores` are [images, tags]: 0/1 ground truth and probabilities."""
    from sklearn.metrics import average_precision_score, confusion_matrix  # slow to import: only when needed

    truth = np.asarray(truth).astype(bool)
    predicted = np.asarray(scores) >= threshold
    per_tag = []
    for k, tag in enumerate(labels):
        tp = int(np.sum(predicted[:, k] & truth[:, k]))
        positives = int(truth[:, k].sum())
        ap = float(average_precision_score(truth[:, k], scores[:, k])) if positives else float("nan")
        per_tag.append(TagMetrics(tag, _ratio(tp, predicted[:, k].sum()), _ratio(tp, positives), ap, positives))
    tp_all = int(np.sum(predicted & truth))
    aps = [t.average_precision for t in per_tag if not math.isnan(t.average_precision)]
    confusion: tuple[tuple[int, ...], ...] = ()
    if multiclass and len(truth):
        matrix = confusion_matrix(truth.argmax(1), np.asarray(scores).argmax(1), labels=list(range(len(labels))))
        confusion = tuple(tuple(int(v) for v in row) for row in matrix)
    unmeasured = tuple(f"no evaluated image carries tag {t.tag!r}, so its recall and AP are not measured"
                       for t in per_tag if not t.images)
    return Evaluation(threshold, _ratio(tp_all, predicted.sum()), _ratio(tp_all, truth.sum()),
                   float(np.mean(aps)) if aps else float("nan"), tuple(per_tag), confusion, source, unmeasured)
