"""Agreement of an INT8 model with its parent, counted in the decisions users act on."""

from __future__ import annotations

import numpy as np

from edge_runtime.int8.agreement import NOTHING, Agreement, agreement, box_agreement, tag_agreement, top1_agreement
from edge_runtime.model.predictor import Predictor
from edge_runtime.types import BoundingBox, Prediction, Variant
from tests.conftest import solid


def tag(index: int, probability: float) -> Prediction:
    return Prediction(index, "abc"[index], probability)


def box(index: int, probability: float, left: float, top: float, size: float = 0.2) -> Prediction:
    return Prediction(index, "abc"[index], probability, bounding_box=BoundingBox(left, top, size, size))


def test_top1_counts_a_frame_clear_when_the_parent_leads_by_the_clear_lead():
    assert top1_agreement([tag(0, 0.7), tag(1, 0.3)], [tag(0, 0.6), tag(1, 0.4)]) == Agreement(1, 1, 1, 1)
    assert top1_agreement([tag(0, 0.52), tag(1, 0.48)], [tag(1, 0.51), tag(0, 0.49)]) == Agreement(1, 0, 0, 0)


def test_multilabel_counts_each_tag_decision_and_clear_ones_by_their_distance_to_the_threshold():
    parent = [tag(0, 0.9), tag(1, 0.45), tag(2, 0.2)]
    child = [tag(0, 0.85), tag(1, 0.55)]  # tag 2 not reported: probability 0
    got = tag_agreement(parent, child, 3, 0.5)
    assert got == Agreement(decisions=3, matched=2, clear=2, clear_matched=2)  # 0.45 -> 0.55 is a near-tie
    assert got.rate == 2 / 3 and got.clear_rate == 1.0
    assert tag_agreement([tag(0, 0.9)], [tag(0, 0.1)], 1, 0.5) == Agreement(1, 0, 1, 0)


def test_boxes_match_by_tag_and_overlap_greedily_by_score_and_extra_boxes_count():
    parent = [box(0, 0.9, 0.1, 0.1), box(1, 0.15, 0.6, 0.6)]
    child = [box(0, 0.88, 0.11, 0.1), box(0, 0.7, 0.6, 0.6)]  # the second: right place, wrong tag
    got = box_agreement(parent, child, 0.1)
    # matched 1 of max(2, 2); clear: the matched pair, and the wrong-tag box (0.7) INT8 adds;
    # the parent's 0.15 box is a near-tie
    assert got == Agreement(decisions=2, matched=1, clear=2, clear_matched=1)
    # two parent boxes over one INT8 box: the higher score takes it
    twins = [box(0, 0.5, 0.1, 0.1), box(0, 0.9, 0.12, 0.1)]
    assert box_agreement(twins, [box(0, 0.9, 0.12, 0.1)], 0.1) == Agreement(2, 1, 2, 1)
    assert box_agreement([box(0, 0.9, 0.1, 0.1)], [box(0, 0.9, 0.25, 0.1)], 0.1).matched == 0  # IoU 1/7
    assert box_agreement([], [], 0.1) == NOTHING and NOTHING.rate == 1.0 and NOTHING.clear_rate is None


def test_agreements_add_over_frames():
    total = sum([Agreement(2, 1, 1, 1), Agreement(3, 3, 2, 1)], NOTHING)
    assert total == Agreement(5, 4, 3, 2) and total.clear_rate == 2 / 3


def red_cell(row: int, column: int) -> np.ndarray:
    frame = solid((30, 30, 30), 256, 256)
    frame[32 * row:32 * row + 32, 32 * column:32 * column + 32] = (20, 20, 230)
    return frame


def test_real_detector_boxes_agree_where_they_are_and_not_where_they_moved(exports):
    detector = Predictor.load(exports["yolo"])
    here, there = detector.predict(red_cell(2, 3)).predictions, detector.predict(red_cell(5, 1)).predictions
    assert len(here) >= 1 and all(p.bounding_box is not None for p in here)
    same = agreement(Variant.YOLO, here, here, 2, 0.1)
    assert same.rate == 1.0 and same.clear == same.decisions == len(here)
    moved = agreement(Variant.YOLO, here, there, 2, 0.1)
    assert moved.matched == 0 and moved.decisions == max(len(here), len(there)) and moved.clear_rate == 0.0


def test_real_multilabel_decisions_agree_per_tag(exports):
    classifier = Predictor.load(exports["multilabel"])
    red = classifier.predict(solid((20, 20, 230))).predictions  # BGR
    reddish_green = classifier.predict(solid((20, 230, 230))).predictions  # red and green both on
    got = agreement(Variant.MULTILABEL, red, reddish_green, 3, 0.5)
    assert got.decisions == 3 and got.matched == 2 and got.clear == 3 and got.clear_matched == 2
