"""How well an INT8 model's answers match its float parent's, counted in the decisions a user
acts on, and which of them the parent made clearly.

    total = sum((agreement(Variant.YOLO, p, c, 0.1) for p, c in pairs), NOTHING)
    total.rate, total.clear_rate

- Multiclass: one decision per frame, the top tag. Clear where the parent's top tag leads
  its second by CLEAR_LEAD or more.
- Multilabel: one decision per frame and tag, "at or above the threshold". Clear where the
  parent's probability is CLEAR_LEAD or more away from the threshold.
- Detection: boxes. A parent box is matched by an INT8 box of the same tag at IoU MATCH_IOU
  or more, greedily, highest parent score first; agreement is matched / max(parent boxes,
  INT8 boxes), so missing boxes and extra ones both count. Clear: matched pairs whose
  parent box scores CLEAR_LEAD or more above the threshold, and unmatched boxes (either
  model's) that do themselves.

A near-tie (a lead of 0.01, a probability of 0.49 at threshold 0.5, a box at 0.11) flips
under any 8-bit approximation, so agreement on clear decisions is the figure a user can act on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..types import Prediction, Variant

CLEAR_LEAD = 0.1  # the parent's answer this far from flipping: a clear answer, not a near-tie
MATCH_IOU = 0.5


@dataclass(frozen=True)
class Agreement:
    decisions: int  # frames (multiclass), (frame, tag) pairs (multilabel), boxes (detection)
    matched: int
    clear: int  # of the decisions, those the parent made clearly
    clear_matched: int

    def __add__(self, other: Agreement) -> Agreement:
        return Agreement(self.decisions + other.decisions, self.matched + other.matched,
                         self.clear + other.clear, self.clear_matched + other.clear_matched)

    @property
    def rate(self) -> float:
        """0..1; 1 where there was nothing to decide (no boxes from either model)."""
        return self.matched / self.decisions if self.decisions else 1.0

    @property
    def clear_rate(self) -> float | None:
        return self.clear_matched / self.clear if self.clear else None


NOTHING = Agreement(0, 0, 0, 0)


def top1_agreement(parent: Sequence[Prediction], child: Sequence[Prediction]) -> Agreement:
    ranked = sorted(parent, key=lambda p: -p.probability)
    top = ranked[0].tag_name if ranked else None
    lead = ranked[0].probability - ranked[1].probability if len(ranked) > 1 else (
        ranked[0].probability if ranked else 0.0)
    other = sorted(child, key=lambda p: -p.probability)
    same = int(top == (other[0].tag_name if other else None))
    clear = int(lead >= CLEAR_LEAD)
    return Agreement(1, same, clear, same * clear)


def tag_agreement(parent: Sequence[Prediction], child: Sequence[Prediction], tags: int,
                  threshold: float) -> Agreement:
    """Per-tag decisions at `threshold`; a tag missing from the predictions has probability 0."""
    p, c = np.zeros(tags), np.zeros(tags)
    for prediction in parent:
        p[prediction.tag_index] = prediction.probability
    for prediction in child:
        c[prediction.tag_index] = prediction.probability
    same = (p >= threshold) == (c >= threshold)
    clear = np.abs(p - threshold) >= CLEAR_LEAD
    return Agreement(tags, int(same.sum()), int(clear.sum()), int((same & clear).sum()))


def iou(a: Prediction, b: Prediction) -> float:
    if a.bounding_box is None or b.bounding_box is None:
        return 0.0
    x, y = a.bounding_box, b.bounding_box
    w = min(x.left + x.width, y.left + y.width) - max(x.left, y.left)
    h = min(x.top + x.height, y.top + y.height) - max(x.top, y.top)
    inter = max(0.0, w) * max(0.0, h)
    union = x.width * x.height + y.width * y.height - inter
    return inter / union if union > 0 else 0.0


def box_agreement(parent: Sequence[Prediction], child: Sequence[Prediction], threshold: float) -> Agreement:
    """Boxes of one frame; both lists already cut at `threshold` by postprocessing."""
    strong = threshold + CLEAR_LEAD
    free = list(range(len(child)))
    matched = clear_matched = clear_missed = 0
    for box in sorted(parent, key=lambda p: -p.probability):
        overlaps = [(iou(box, child[j]), j) for j in free if child[j].tag_index == box.tag_index]
        best = max(overlaps, default=(0.0, -1))
        if best[0] >= MATCH_IOU:
            free.remove(best[1])
            matched += 1
            clear_matched += box.probability >= strong
        else:
            clear_missed += box.probability >= strong
    clear_extra = sum(child[j].probability >= strong for j in free)
    return Agreement(max(len(parent), len(child)), matched,
                     clear_matched + max(clear_missed, clear_extra), clear_matched)


def agreement(variant: Variant, parent: Sequence[Prediction], child: Sequence[Prediction], tags: int,
              threshold: float) -> Agreement:
    """One frame's agreement, counted as `variant` decides (see the module docstring)."""
    if variant.is_detection:
        return box_agreement(parent, child, threshold)
    if variant is Variant.MULTILABEL:
        return tag_agreement(parent, child, tags, threshold)
    return top1_agreement(parent, child)
