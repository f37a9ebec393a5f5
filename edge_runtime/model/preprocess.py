"""Pure: BGR uint8 frame -> the model's input tensor, driven by an InputSpec.

Geometry follows the export's metadata (see InputSpec for the order of the steps) with
OpenCV's bit-exact bilinear resize and the container's centre-crop arithmetic; colour order, pixel
range, mean/std and the NCHW layout are one `blobFromImage` call plus, only when the
export asks for it, a per-channel normalisation.

The work is bounded before any pixel is touched: `check_bounds` computes every size the
steps would produce and refuses a shape that is too thin or would grow too large
(limits.py), and preprocessing holds its frame's share of the process-wide decode budget.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import ImageShapeError
from ..types import CropMethod, InputSpec, ResizeMethod, Window
from .limits import current

# The exported container resizes with bilinear interpolation (INTER_LINEAR). OpenCV's SIMD
# kernels for INTER_LINEAR round differently on x86 and Arm, by up to one grey level, which
# moved the demo model's probabilities by up to 0.02 between a laptop and a Raspberry Pi.
# INTER_LINEAR_EXACT is the same interpolation computed bit-exactly everywhere, so one export
# gives the same answer on every device (measured by deploy/arm64-smoke.sh, docs/deploy.md).
INTERPOLATION = cv2.INTER_LINEAR_EXACT


def _center_crop(image: np.ndarray, win: Window, crop_w: int, crop_h: int) -> tuple[np.ndarray, Window]:
    h, w = image.shape[:2]
    crop_w, crop_h = min(crop_w, w), min(crop_h, h)
    x0, y0 = w // 2 - crop_w // 2, h // 2 - crop_h // 2  # the container's crop_center()
    sx, sy = win.width / w, win.height / h
    cropped = Window(win.x + x0 * sx, win.y + y0 * sy, crop_w * sx, crop_h * sy, win.image_width, win.image_height)
    return image[y0 : y0 + crop_h, x0 : x0 + crop_w], cropped


def _resize(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    if (image.shape[1], image.shape[0]) == size:
        return image
    return cv2.resize(image, size, interpolation=INTERPOLATION)


def resized_size(width: int, height: int, spec: InputSpec) -> tuple[int, int]:
    """(width, height) after the spec's resize step, for an image of the given size."""
    if spec.resize is ResizeMethod.STRETCH:
        return spec.target_width, spec.target_height
    if spec.resize is ResizeMethod.BY_SHORTER_SIDE:
        short = spec.target_width if width <= height else spec.target_height
        scale = short / min(width, height)
        if width <= height:
            return short, max(1, int(height * scale + 0.5))
        return max(1, int(width * scale + 0.5)), short
    # ByPixelCountAlign32, as the export zip's object_detection.py computes it.
    ratio = math.sqrt(spec.target_width * spec.target_height / width / height)
    new_w, new_h = int(width * ratio), int(height * ratio)
    return 32 * max(1, math.ceil(new_w / 32)), 32 * max(1, math.ceil(new_h / 32))


def _max_dimension_size(width: int, height: int, max_dimension: int) -> tuple[int, int]:
    if height > width:
        return max_dimension * width // height, max_dimension
    return max_dimension, max_dimension * height // width


def resize_steps(width: int, height: int, spec: InputSpec) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """(size before, size after) of every resize `prepare` makes, in order, without resizing."""
    steps = []
    w, h = width, height
    if spec.max_dimension and max(w, h) > spec.max_dimension:
        steps.append(((w, h), _max_dimension_size(w, h, spec.max_dimension)))
        w, h = steps[-1][1]
    if spec.center_square:
        w = h = min(w, h)
    steps.append(((w, h), resized_size(w, h, spec) if w > 0 and h > 0 else (w, h)))
    w, h = steps[-1][1]
    if spec.crop is CropMethod.ONE_CROP_CENTER:
        w, h = min(spec.crop_width, w), min(spec.crop_height, h)
    if spec.fixed_size is not None:
        steps.append(((w, h), spec.fixed_size))
    return steps


def check_aspect(width: int, height: int) -> None:
    """Refuse a long thin image, whatever the model (limits.py says why)."""
    limit = current().max_aspect_ratio
    if width < 1 or height < 1 or max(width, height) > limit * min(width, height):
        raise ImageShapeError(
            f"image is {width}x{height}; its longer side may be at most {limit} times "
            f"its shorter side (EDGE_RUNTIME_MAX_ASPECT_RATIO)"
        )


def check_bounds(width: int, height: int, spec: InputSpec) -> None:
    """Refuse, before any allocation, an image whose preprocessing would be unbounded."""
    check_aspect(width, height)
    limits = current()
    for _, (w, h) in resize_steps(width, height, spec):
        if w < 1 or h < 1 or w * h > limits.max_work_pixels:
            raise ImageShapeError(
                f"image of {width}x{height} would be resized to {w}x{h}; at most "
                f"{limits.max_work_pixels} pixels and 1 pixel a side (EDGE_RUNTIME_MAX_WORK_PIXELS)"
            )


def reduction(width: int, height: int, spec: InputSpec) -> int:
    """1, 2, 4 or 8: how much smaller a JPEG may be decoded, keeping twice the pixels the
    network needs along each side, so that preprocessing still shrinks the image."""
    scale_x = scale_y = 1.0
    for (w, h), (new_w, new_h) in resize_steps(width, height, spec):
        scale_x, scale_y = scale_x * new_w / w, scale_y * new_h / h
    scale = max(scale_x, scale_y)
    for factor in (8, 4, 2):
        if scale * factor * 2 <= 1:
            return factor
    return 1


def prepare(frame: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Window]:
    """Resize and crop; returns the HxWx3 uint8 image the network sees and where it came from."""
    h, w = frame.shape[:2]
    check_bounds(w, h, spec)
    image = frame
    win = Window(0.0, 0.0, float(w), float(h), w, h)
    if spec.max_dimension and max(w, h) > spec.max_dimension:
        image = _resize(image, _max_dimension_size(w, h, spec.max_dimension))
    if spec.center_square:
        side = min(image.shape[:2])
        image, win = _center_crop(image, win, side, side)
    image = _resize(image, resized_size(image.shape[1], image.shape[0], spec))
    if spec.crop is CropMethod.ONE_CROP_CENTER:
        image, win = _center_crop(image, win, spec.crop_width, spec.crop_height)
    if spec.fixed_size is not None:
        image = _resize(image, spec.fixed_size)
    return image, win


def to_tensor(image: np.ndarray, spec: InputSpec) -> np.ndarray:
    """HxWx3 BGR uint8 -> 1x3xHxW tensor in the model's colour order, range and dtype."""
    blob = np.asarray(
        cv2.dnn.blobFromImage(image, scalefactor=spec.scale, swapRB=not spec.bgr, ddepth=cv2.CV_32F), np.float32
    )
    if spec.normalizes:  # mean and std are listed in the model's own channel order
        mean, std = spec.mean_std
        blob = (blob - mean) / std
    return blob.astype(np.float16) if spec.dtype == "float16" else blob


def preprocess(frame: np.ndarray, spec: InputSpec) -> tuple[np.ndarray, Window]:
    """Camera frames and decoded uploads alike. The decode budget is held by whoever decoded
    the image (imageio.decoded, for uploads): a camera frame already exists, and making its
    grabber wait for a burst of uploads would only stall the camera. What preprocessing
    allocates is bounded by `check_bounds` inside `prepare`."""
    image, win = prepare(frame, spec)
    return to_tensor(image, spec), win
