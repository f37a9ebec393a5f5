"""Preprocessing against a straightforward reference written from the format's own words.

The references below follow the exported container and the export zip's code step by
step (plain arithmetic for sizes, slicing for crops, numpy for the colour work); the
runtime uses its own code path (one blobFromImage call, a Window that tracks crops).
Both resize with OpenCV's bit-exact bilinear kernel (LINEAR below); the container's
INTER_LINEAR differs from it by at most one grey level, which a test checks too.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest

from edge_runtime.model.predictor import Predictor
from edge_runtime.model.preprocess import preprocess
from edge_runtime.types import CropMethod, InputSpec, PixelRange, ResizeMethod
from tests import models

RNG = np.random.default_rng(7)
LINEAR = cv2.INTER_LINEAR_EXACT
SIZES = [(640, 480), (480, 640), (1280, 720), (301, 199), (224, 224), (2000, 1700)]


def random_frame(width: int, height: int) -> np.ndarray:
    return RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)


def crop_center(img: np.ndarray, cropx: int, cropy: int) -> np.ndarray:
    h, w = img.shape[:2]
    startx, starty = w // 2 - cropx // 2, h // 2 - cropy // 2
    return img[starty : starty + cropy, startx : startx + cropx]


def colour(img: np.ndarray, bgr: bool, range255: bool, mean, std, dtype=np.float32) -> np.ndarray:
    x = img.astype(np.float32)
    if not bgr:
        x = x[:, :, ::-1]
    if not range255:
        x = x / np.float32(255)
    x = (x - np.asarray(mean, np.float32)) / np.asarray(std, np.float32)
    return x.transpose(2, 0, 1)[None].astype(dtype)


def reference_by_shorter_side(img, target, crop, mean=(0, 0, 0), std=(1, 1, 1)):
    h, w = img.shape[:2]
    if w <= h:
        size = (target, int(h * target / w + 0.5))
    else:
        size = (int(w * target / h + 0.5), target)
    resized = cv2.resize(img, size, interpolation=LINEAR)
    return colour(crop_center(resized, crop, crop), False, False, mean, std)


def reference_container(img, network):
    """The exported container's classification path for exports without metadata."""
    h, w = img.shape[:2]
    if not (h < 1600 and w < 1600):
        new_size = (1600 * w // h, 1600) if h > w else (1600, 1600 * h // w)
        img = cv2.resize(img, new_size, interpolation=LINEAR)
    h, w = img.shape[:2]
    min_dim = min(w, h)
    square = crop_center(img, min_dim, min_dim)
    resized = cv2.resize(square, (256, 256), interpolation=LINEAR)
    return crop_center(resized, network, network)


def reference_pixel_count_align32(img, target=512 * 512):
    h, w = img.shape[:2]
    ratio = math.sqrt(target / w / h)
    new_w, new_h = 32 * math.ceil(int(w * ratio) / 32), 32 * math.ceil(int(h * ratio) / 32)
    return colour(cv2.resize(img, (new_w, new_h), interpolation=LINEAR), False, False, (0, 0, 0), (1, 1, 1))


@pytest.mark.parametrize("size", SIZES)
def test_by_shorter_side_then_center_crop(exports, size):
    spec = Predictor.load(exports["modern"], warm_up=False).spec.input
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    np.testing.assert_allclose(tensor, reference_by_shorter_side(frame, 256, 224), rtol=0, atol=1e-6)


@pytest.mark.parametrize("size", SIZES)
def test_mean_and_std_from_metadata(size):
    mean, std = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
    spec = InputSpec("data", "float32", 224, 224, False, PixelRange.NORMALIZED_0_1, mean, std,
                     ResizeMethod.BY_SHORTER_SIDE, 256, 256, CropMethod.ONE_CROP_CENTER, 224, 224)
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    np.testing.assert_allclose(tensor, reference_by_shorter_side(frame, 256, 224, mean, std), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("size", SIZES)
def test_float16_input(exports, size):
    spec = Predictor.load(exports["float16"], warm_up=False).spec.input
    assert spec.dtype == "float16"
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    assert tensor.dtype == np.float16
    np.testing.assert_array_equal(tensor, reference_by_shorter_side(frame, 256, 224).astype(np.float16))


@pytest.mark.parametrize("size", SIZES)
def test_legacy_export_without_metadata_uses_the_container_path(exports, size):
    spec = Predictor.load(exports["legacy"], warm_up=False).spec.input
    assert (spec.bgr, spec.pixel_range) == (True, PixelRange.NOMINAL_0_255)
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    expected = colour(reference_container(frame, 227), True, True, (0, 0, 0), (1, 1, 1))
    np.testing.assert_array_equal(tensor, expected)


@pytest.mark.parametrize("size", SIZES)
def test_pixel_count_align32_for_detection(exports, size):
    spec = Predictor.load(exports["yolo"], warm_up=False).spec.input
    frame = random_frame(*size)
    tensor, window = preprocess(frame, spec)
    expected = reference_pixel_count_align32(frame)
    assert tensor.shape == expected.shape
    assert tensor.shape[2] % 32 == 0 and tensor.shape[3] % 32 == 0
    np.testing.assert_allclose(tensor, expected, rtol=0, atol=1e-6)
    assert (window.x, window.y, window.width, window.height) == (0, 0, size[0], size[1])


@pytest.mark.parametrize("size", SIZES)
def test_stretch_rgb_0_255_for_s1(exports, size):
    spec = Predictor.load(exports["s1"], warm_up=False).spec.input
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    expected = colour(cv2.resize(frame, (320, 320), interpolation=LINEAR), False, True, (0, 0, 0),
                      (1, 1, 1))
    np.testing.assert_array_equal(tensor, expected)


def test_detection_without_metadata_falls_back_to_the_export_zip(tmp_path):
    folder = models.write_export(tmp_path / "yolo", models.yolo_detector(metadata={}), ("red", "green"),
                                 domain="ObjectDetection")
    spec = Predictor.load(folder, warm_up=False).spec.input
    frame = random_frame(1280, 720)
    tensor, _ = preprocess(frame, spec)
    np.testing.assert_allclose(tensor, reference_pixel_count_align32(frame), atol=1e-6)


def test_window_tracks_the_center_crop(exports):
    spec = Predictor.load(exports["modern"], warm_up=False).spec.input
    _, window = preprocess(random_frame(1280, 720), spec)
    # 1280x720 -> 455x256, then a 224 crop at x 115, y 16; back in original pixels:
    sx, sy = 1280 / 455, 720 / 256
    assert window.x == pytest.approx((455 // 2 - 112) * sx)
    assert window.y == pytest.approx((128 - 112) * sy)
    assert window.width == pytest.approx(224 * sx) and window.height == pytest.approx(224 * sy)


@pytest.mark.parametrize("size", SIZES)
def test_within_one_grey_level_of_the_container_resize(exports, size):
    spec = Predictor.load(exports["s1"], warm_up=False).spec.input  # 0-255: one level is 1.0
    frame = random_frame(*size)
    tensor, _ = preprocess(frame, spec)
    container = colour(cv2.resize(frame, (320, 320), interpolation=cv2.INTER_LINEAR), False, True, (0, 0, 0),
                       (1, 1, 1))
    assert np.abs(tensor - container).max() <= 1.0
