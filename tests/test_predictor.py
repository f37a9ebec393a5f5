"""Every export layout, end to end through a real onnxruntime session."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.model.predictor import Predictor
from edge_runtime.model.preprocess import preprocess, resized_size
from edge_runtime.types import Variant
from tests import models
from tests.conftest import solid, zip_export_path

RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)  # BGR, as OpenCV frames are


@pytest.mark.parametrize("layout", ["legacy", "modern", "float16", "multilabel"])
@pytest.mark.parametrize(("color", "tag"), [(RED, "red"), (GREEN, "green"), (BLUE, "blue")])
def test_classifiers_name_the_colour(exports, layout, color, tag):
    predictor = Predictor.load(exports[layout])
    result = predictor.predict(solid(color))
    assert result.predictions[0].tag_name == tag
    assert result.predictions[0].probability > 0.9
    probs = [p.probability for p in result.predictions]
    assert probs == sorted(probs, reverse=True)
    assert {p.tag_name for p in result.predictions} == set(models.COLOR_TAGS)


def test_variants_are_recognised(exports):
    expected = {"legacy": Variant.MULTICLASS, "modern": Variant.MULTICLASS, "float16": Variant.MULTICLASS,
                "multilabel": Variant.MULTILABEL, "yolo": Variant.YOLO, "s1": Variant.S1}
    for layout, variant in expected.items():
        assert Predictor.load(exports[layout], warm_up=False).spec.variant is variant, layout


def test_multilabel_scores_are_independent(exports):
    predictor = Predictor.load(exports["multilabel"])
    yellow = predictor.predict(solid((0, 255, 255)))  # red + green
    scores = {p.tag_name: p.probability for p in yellow.predictions}
    assert scores["red"] > 0.9 and scores["green"] > 0.9 and scores["blue"] < 0.1
    assert sum(scores.values()) > 1.5


def test_float16_matches_float32(exports):
    frame = np.random.default_rng(0).integers(0, 256, (300, 400, 3), dtype=np.uint8)
    p32 = Predictor.load(exports["modern"]).predict(frame)
    p16 = Predictor.load(exports["float16"]).predict(frame)
    assert [p.tag_name for p in p32.predictions] == [p.tag_name for p in p16.predictions]
    np.testing.assert_allclose([p.probability for p in p16.predictions],
                               [p.probability for p in p32.predictions], atol=5e-3)


def test_legacy_zipmap_without_labels_file_names_tags_from_the_model(tmp_path):
    folder = models.write_export(tmp_path / "nolabels", models.legacy_zipmap_classifier(), None, manifest=False)
    predictor = Predictor.load(folder)
    assert set(predictor.spec.labels or ()) == set(models.COLOR_TAGS)
    assert predictor.predict(solid(RED)).predictions[0].tag_name == "red"


def test_yolo_finds_the_red_square_where_it_is(exports):
    predictor = Predictor.load(exports["yolo"])
    frame = solid((40, 40, 40), 640, 480)
    net_w, net_h = resized_size(640, 480, predictor.spec.input)
    assert (net_w, net_h) == (608, 448)  # ByPixelCountAlign32 at 512x512: a 19 x 14 grid
    gw, gh = net_w // 32, net_h // 32
    # a red square filling grid cell (row 5, col 9), inset so the resize cannot bleed it
    sx, sy = 640 / net_w, 480 / net_h
    frame[int((5 * 32 + 2) * sy) : int((6 * 32 - 2) * sy), int((9 * 32 + 2) * sx) : int((10 * 32 - 2) * sx)] = RED
    result = predictor.predict(frame)
    assert [p.tag_name for p in result.predictions] == ["red"]
    box = result.predictions[0].bounding_box
    assert box is not None
    assert box.left == pytest.approx(9 / gw, abs=1e-4) and box.top == pytest.approx(5 / gh, abs=1e-4)
    assert box.width == pytest.approx(1 / gw, abs=1e-4) and box.height == pytest.approx(1 / gh, abs=1e-4)
    assert result.predictions[0].probability > 0.9


def test_yolo_output_follows_the_input_size(exports):
    predictor = Predictor.load(exports["yolo"])
    grids = set()
    for w, h in [(640, 480), (1280, 720), (300, 900)]:
        tensor, _ = preprocess(solid((0, 0, 0), w, h), predictor.spec.input)
        grids.add(predictor.infer(tensor)["model_outputs0"].shape)
    assert len(grids) == 3


def test_s1_takes_rgb_0_255_and_maps_boxes(exports):
    predictor = Predictor.load(exports["s1"])
    result = predictor.predict(solid((0, 128, 255), 500, 250))  # R=255, G=128 in BGR
    by_tag = {p.tag_name: p for p in result.predictions}
    assert by_tag["red"].probability == pytest.approx(1.0, abs=1e-3)
    assert by_tag["green"].probability == pytest.approx(128 / 255, abs=1e-3)
    box = by_tag["red"].bounding_box
    assert box is not None
    x1, y1, x2, y2 = models.S1_BOXES[0]
    assert (box.left, box.top, box.width, box.height) == pytest.approx((x1, y1, x2 - x1, y2 - y1), abs=1e-6)


def test_a_zip_export_loads_like_its_folder(exports, tmp_path):
    frame = solid(GREEN)
    from_folder = Predictor.load(exports["modern"]).predict(frame)
    from_zip = Predictor.load(zip_export_path(exports["modern"], tmp_path)).predict(frame)
    assert from_zip.predictions == from_folder.predictions


def test_a_bare_onnx_with_labels_beside_it_loads(exports):
    predictor = Predictor.load(exports["modern"] / "model.onnx")
    assert predictor.predict(solid(BLUE)).predictions[0].tag_name == "blue"


def test_json_is_the_custom_vision_prediction_object(exports):
    result = Predictor.load(exports["yolo"]).predict(solid(RED, 320, 320))
    body = result.to_json(project="p", iteration="i")
    assert set(body) == {"id", "project", "iteration", "created", "predictions"}
    assert body["created"].endswith("Z")
    first = body["predictions"][0]
    assert set(first) == {"probability", "tagId", "tagName", "boundingBox"}
    assert set(first["boundingBox"]) == {"left", "top", "width", "height"}
