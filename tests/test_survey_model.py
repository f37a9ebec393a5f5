"""The small-object detector of tests/survey_util.py, tested on its own: it finds red squares
only at the scale it is fed, once each, with a tight box."""

from __future__ import annotations

import pytest

from edge_runtime.model.predictor import Predictor
from edge_runtime.model.preprocess import preprocess
from tests.survey_util import SMALLEST, SQUARE, place_squares, terrain, write_detector


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Predictor:
    return Predictor.load(write_detector(tmp_path_factory.mktemp("det") / "export"))


def test_finds_a_square_once_with_a_tight_box_at_native_size(detector):
    image = terrain(512, 512)
    centres = [(100, 100), (240, 97), (400, 300), (64, 448)]  # 240: across a cell border; 64,448: on corners
    place_squares(image, centres)
    result = detector.predict(image)
    assert len(result.predictions) == len(centres)
    for p in result.predictions:
        box = p.bounding_box
        cx, cy = (box.left + box.width / 2) * 512, (box.top + box.height / 2) * 512
        assert min(abs(cx - x) + abs(cy - y) for x, y in centres) < 1.0
        assert abs(box.width * 512 - SQUARE) < 1.5 and p.probability >= 0.5  # 0.5: centred on a cell corner


def test_squares_vanish_when_the_image_is_shrunk(detector):
    image = terrain(2048, 1536)
    place_squares(image, [(300, 300), (1500, 1000)])
    tensor, _ = preprocess(image, detector.spec.input)
    assert tensor.shape[2] < 1536 / 2  # the whole photo reaches the model at under half its size
    assert detector.predict(image).predictions == ()
    assert len(detector.predict(image[:512, :512]).predictions) == 1  # the same square, at native size


def test_small_squares_and_other_colours_are_ignored(detector):
    image = terrain(512, 512)
    place_squares(image, [(100, 100)], side=SMALLEST - 3)
    image[300:320, 300:320] = (255, 0, 0)  # blue
    assert detector.predict(image).predictions == ()
