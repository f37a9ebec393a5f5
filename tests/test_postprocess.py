"""Decoding against hand-computed cases and the export zip's greedy NMS."""

from __future__ import annotations

import math

import numpy as np
import pytest

from edge_runtime.errors import LabelsError
from edge_runtime.model.postprocess import PostprocessOptions, classify, decode_yolo, postprocess, select_boxes
from edge_runtime.model.spec import DEFAULT_ANCHORS, ModelSpec
from edge_runtime.types import CropMethod, InputSpec, PixelRange, ResizeMethod, Variant, Window

INPUT = InputSpec("data", "float32", None, None, False, PixelRange.NORMALIZED_0_1, (0, 0, 0), (1, 1, 1),
                  ResizeMethod.BY_PIXEL_COUNT_ALIGN32, 512, 512, CropMethod.NO_CROP, 0, 0)


def spec(variant: Variant, labels=("a", "b", "c"), output="model_output") -> ModelSpec:
    return ModelSpec(variant, INPUT, labels, None, output)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def test_yolo_cell_decodes_by_hand():
    anchors = np.array(DEFAULT_ANCHORS, np.float32)
    num_classes, gh, gw = 2, 3, 4
    grid = np.zeros((1, 5 * (5 + num_classes), gh, gw), np.float32)
    grid[0, :, :, :] = -30.0  # nothing anywhere...
    a, row, col = 2, 1, 3  # ...but anchor 2 of cell (1, 3)
    c = a * (5 + num_classes)
    grid[0, c : c + 7, row, col] = [0.5, -1.0, 0.2, -0.3, 2.0, 1.0, 0.0]
    boxes, probs = decode_yolo(grid, anchors)
    index = (row * gw + col) * 5 + a
    cx, cy = (sigmoid(0.5) + col) / gw, (sigmoid(-1.0) + row) / gh
    w, h = math.exp(0.2) * anchors[a, 0] / gw, math.exp(-0.3) * anchors[a, 1] / gh
    np.testing.assert_allclose(boxes[index], [cx - w / 2, cy - h / 2, w, h], rtol=1e-5)
    e1 = math.exp(1.0)
    expected = np.array([e1 / (e1 + 1), 1 / (e1 + 1)]) * sigmoid(2.0)
    np.testing.assert_allclose(probs[index], expected, rtol=1e-5)
    assert probs.shape == (gh * gw * 5, num_classes)
    others = np.delete(probs, index, axis=0)
    assert others.max() < 1e-6


def test_yolo_without_sigmoid_on_xy_when_asked():
    grid = np.zeros((1, 5 * 6, 1, 1), np.float32)
    grid[0, 0] = 0.25
    boxes, _ = decode_yolo(grid, np.array(DEFAULT_ANCHORS, np.float32), sigmoid_xy=False)
    w = DEFAULT_ANCHORS[0][0]
    assert boxes[0, 0] == pytest.approx(0.25 - w / 2)


def export_zip_nms(boxes, class_probs, threshold, iou_limit, max_detections):
    """The export zip's greedy loop, restated: pick the best (box, class), zero that class on
    every box overlapping it by more than the limit, and let those boxes compete again."""
    probs = class_probs.copy()
    picked = []
    while len(picked) < max_detections:
        b, c = np.unravel_index(np.argmax(probs), probs.shape)
        if probs[b, c] < threshold:
            break
        picked.append((int(b), int(c), float(probs[b, c])))
        x1 = np.maximum(boxes[b, 0], boxes[:, 0])
        y1 = np.maximum(boxes[b, 1], boxes[:, 1])
        x2 = np.minimum(boxes[b, 0] + boxes[b, 2], boxes[:, 0] + boxes[:, 2])
        y2 = np.minimum(boxes[b, 1] + boxes[b, 3], boxes[:, 1] + boxes[:, 3])
        inter = np.maximum(0, x2 - x1) * np.maximum(0, y2 - y1)
        iou = inter / (boxes[b, 2] * boxes[b, 3] + boxes[:, 2] * boxes[:, 3] - inter)
        probs[iou > iou_limit, c] = 0
        probs[b, c] = 0
    return picked


@pytest.mark.parametrize("seed", range(20))
def test_nms_matches_the_export_zip_on_random_scenes(seed):
    rng = np.random.default_rng(seed)
    n, classes = 60, 3
    xy = rng.uniform(0, 0.8, (n, 2))
    wh = rng.uniform(0.05, 0.3, (n, 2))
    boxes = np.concatenate([xy, wh], axis=1).astype(np.float32)
    probs = (rng.uniform(0, 1, (n, classes)) ** 3).astype(np.float32)
    ours = select_boxes(boxes, probs, 0.1, 0.45, 20)
    theirs = export_zip_nms(boxes, probs, 0.1, 0.45, 20)
    assert [(b, c) for b, c, _ in ours] == [(b, c) for b, c, _ in theirs]


def test_a_suppressed_box_competes_with_its_next_class():
    boxes = np.array([[0.1, 0.1, 0.3, 0.3], [0.11, 0.1, 0.3, 0.3], [0.6, 0.6, 0.2, 0.2]], np.float32)
    probs = np.array([[0.9, 0.0], [0.8, 0.4], [0.05, 0.7]], np.float32)
    assert select_boxes(boxes, probs, 0.1, 0.45, 20) == [
        (0, 0, pytest.approx(0.9)), (2, 1, pytest.approx(0.7)), (1, 1, pytest.approx(0.4))
    ]
    assert len(select_boxes(boxes, probs, 0.1, 0.45, 2)) == 2
    assert select_boxes(boxes, probs, 0.95, 0.45, 20) == []


def test_boxes_are_mapped_back_through_the_window():
    s = spec(Variant.S1, labels=("x",), output="detected_boxes")
    outputs = {
        "detected_boxes": np.array([[[0.25, 0.5, 0.75, 1.0]]], np.float32),
        "detected_classes": np.array([[0]]),
        "detected_scores": np.array([[0.8]], np.float32),
    }
    window = Window(100, 50, 200, 100, image_width=400, image_height=200)  # a crop of the original
    (p,) = postprocess(outputs, s, window, PostprocessOptions())
    assert p.bounding_box is not None
    assert (p.bounding_box.left, p.bounding_box.top) == pytest.approx((150 / 400, 100 / 200))
    assert (p.bounding_box.width, p.bounding_box.height) == pytest.approx((100 / 400, 50 / 200))


def test_classification_threshold_and_top_k():
    probs = np.array([0.1, 0.6, 0.3], np.float32)
    s = spec(Variant.MULTICLASS)
    assert [p.tag_name for p in classify(probs, s, PostprocessOptions())] == ["b", "c", "a"]
    assert [p.tag_name for p in classify(probs, s, PostprocessOptions(threshold=0.2))] == ["b", "c"]
    assert [p.tag_name for p in classify(probs, s, PostprocessOptions(top_k=1))] == ["b"]


def test_zipmap_output_is_read_by_tag_name():
    zipmap = "seq(map(string,tensor(float)))"
    s = ModelSpec(Variant.MULTICLASS, INPUT, ("a", "b", "c"), None, "loss", output_type=zipmap)
    result = postprocess({"loss": [{"c": 0.7, "a": 0.2, "b": 0.1}]}, s, Window(0, 0, 1, 1, 1, 1), PostprocessOptions())
    assert [(p.tag_name, p.tag_index) for p in result] == [("c", 2), ("a", 0), ("b", 1)]
    with pytest.raises(LabelsError, match="does not match"):
        postprocess({"loss": [{"c": 0.7, "a": 0.3}]}, s, Window(0, 0, 1, 1, 1, 1), PostprocessOptions())


def test_tag_ids_from_the_bundle_are_reported():
    s = ModelSpec(Variant.MULTICLASS, INPUT, ("a", "b"), ("id-a", "id-b"), "model_output")
    (first, _) = classify(np.array([0.2, 0.8], np.float32), s, PostprocessOptions())
    assert first.to_json()["tagId"] == "id-b"


def test_predictions_built_in_bulk_equal_constructed_ones():
    from edge_runtime.types import Prediction

    bulk = Prediction.many([2, 0], ["a", "b", "c"], [0.7, 0.2], ["ia", "ib", "ic"])
    assert bulk == (Prediction(2, "c", 0.7, "ic"), Prediction(0, "a", 0.2, "ia"))
    assert hash(bulk[0]) == hash(Prediction(2, "c", 0.7, "ic"))
    with pytest.raises(AttributeError):
        bulk[0].probability = 1.0  # type: ignore[misc]


def test_lazy_classifier_predictions_equal_eager_ones_and_encode_the_same():
    import json

    from edge_runtime.types import Prediction, PredictionResult, Predictions

    names = ("a", 'quote"d', "ünï")
    lazy = Predictions([2, 0, 1], [0.7, 0.2000000049, 0.1], names, ("id2", "", "id1"))
    eager = (Prediction(2, "ünï", 0.7, "id1"), Prediction(0, "a", 0.2000000049, "id2"),
             Prediction(1, 'quote"d', 0.1, ""))
    assert lazy == eager and len(lazy) == 3 and lazy[-1] == eager[-1] and lazy[:2] == eager[:2]
    assert list(lazy) == list(eager) and lazy[0] is lazy[0]  # made once, when read
    with pytest.raises(IndexError):
        lazy[3]
    assert json.loads(lazy.json_text()) == [p.to_json() for p in eager]
    result = PredictionResult(lazy, 10, 10, project="p", iteration="i")
    assert json.loads(result.json_text(extra={"camera": "c"})) == {**result.to_json(), "camera": "c"}
    plain = PredictionResult(eager, 10, 10)
    assert json.loads(plain.json_text("p2")) == plain.to_json("p2")


def test_probabilities_are_written_with_8_decimals_and_read_back_as_to_json_gives_them():
    import json
    import random

    from edge_runtime.types import Prediction, Predictions

    rng = random.Random(7)
    values = [0.0, 1.0, 0.5, 5e-9, 1.5e-8, 0.999999995, 0.125000005] + [rng.random() for _ in range(2000)]
    names = tuple(f"t{i}" for i in range(len(values)))
    lazy = Predictions(list(range(len(values))), values, names, None)
    text = lazy.json_text()
    assert text.startswith('[{"probability":0.00000000,"tagId":"0","tagName":"t0","boundingBox":null},'
                           '{"probability":1.00000000,')
    assert json.loads(text) == [Prediction(i, names[i], v).to_json() for i, v in enumerate(values)]
    # scores that are not probabilities (a model without softmax) keep Python's own writing
    odd = Predictions([0, 1], [1.75, -0.25], ("a", "b"), None)
    assert json.loads(odd.json_text()) == [Prediction(0, "a", 1.75).to_json(), Prediction(1, "b", -0.25).to_json()]
    assert Predictions([], [], (), None).json_text() == "[]"


def test_round_probability_takes_numpy_floats_and_leaves_what_is_not_finite():
    import json

    from edge_runtime.types import Predictions, round_probability

    assert round_probability(np.float32(0.99999994)) == round_probability(float(np.float32(0.99999994)))
    assert round_probability(0.123456785) == 0.12345678 and round_probability(1.0) == 1.0
    assert round_probability(float("nan")) is None and round_probability(float("inf")) is None  # JSON null
    assert round_probability(1e301) == 1e301  # too large to scale, still a number
    odd = Predictions([0, 1, 2], [float("inf"), float("nan"), 1e301], ("a", "b", "c"), None)
    assert [p["probability"] for p in json.loads(odd.json_text())] == [None, None, 1e301]
    assert [p.to_json()["probability"] for p in odd] == [None, None, 1e301]


def test_frame_results_are_encoded_once_for_every_sink():
    import json
    import time

    from edge_runtime.types import Frame, FrameResult, Prediction, PredictionResult

    frame = Frame("cam", 4, time.time(), time.monotonic(), np.zeros((2, 2, 3), np.uint8))
    result = FrameResult(frame, PredictionResult((Prediction(0, "a", 0.5),), 2, 2), 1.5, time.monotonic())
    first = result.json_text("p", "i")
    assert result.json_text("p", "i") is first  # the same string object: encoded once
    assert json.loads(first) == result.to_json("p", "i")
    assert json.loads(result.json_text("other", "i"))["project"] == "other"


def test_detection_keeps_top_k_and_top_k_means_the_same_for_every_variant():
    s = spec(Variant.S1, labels=("x", "y"), output="detected_boxes")
    outputs = {
        "detected_boxes": np.array([[[0.0, 0.0, 0.2, 0.2], [0.5, 0.5, 0.7, 0.7], [0.1, 0.6, 0.3, 0.9]]], np.float32),
        "detected_classes": np.array([[0, 1, 0]]),
        "detected_scores": np.array([[0.5, 0.9, 0.7]], np.float32),
    }
    window = Window(0, 0, 100, 100, 100, 100)
    every = postprocess(outputs, s, window, PostprocessOptions())
    assert [p.probability for p in every] == pytest.approx([0.9, 0.7, 0.5])
    top = postprocess(outputs, s, window, PostprocessOptions(top_k=2))
    assert [p.probability for p in top] == pytest.approx([0.9, 0.7])
    assert len(postprocess(outputs, s, window, PostprocessOptions(top_k=2, max_detections=1))) == 1
    for bad in ({"top_k": 0}, {"top_k": -1}, {"max_detections": 0}):
        with pytest.raises(ValueError, match="at least 1"):
            PostprocessOptions(**bad)
