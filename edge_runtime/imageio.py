"""Decode uploaded or stored images into BGR uint8 frames, refusing what is not one.

OpenCV's IMREAD_COLOR already applies EXIF orientation and turns grayscale, alpha and
16-bit images into 8-bit BGR, as the exported container does with PIL's convert("RGB").
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from . import MAX_IMAGE_PIXELS
from .errors import ImageDecodeError, ImageTooLargeError

JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    """Bytes of an image file -> BGR uint8 array; ImageError if they are not a usable image."""
    if not data:
        raise ImageDecodeError("empty image")
    if data.startswith(JPEG_SOI) and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        # OpenCV 4 returns a half-grey picture for a cut-off JPEG; refuse it on every version.
        raise ImageDecodeError("truncated JPEG: the data ends before the image does")
    try:
        image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    except cv2.error as exc:
        if "MAX_IMAGE_PIXELS" in str(exc) or "validateInputImageSize" in str(exc):
            raise ImageTooLargeError(f"image has more than {MAX_IMAGE_PIXELS} pixels") from exc
        raise ImageDecodeError("not a decodable image") from exc
    if image is None:
        raise ImageDecodeError("not a decodable image (unknown format, or corrupt or truncated data)")
    if image.shape[0] * image.shape[1] > max_pixels:
        raise ImageTooLargeError(f"image is {image.shape[1]}x{image.shape[0]}; at most {max_pixels} pixels")
    return image


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS) -> np.ndarray:
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageDecodeError(f"{path}: {exc.strerror or exc}") from exc
    try:
        return decode_image(data, max_pixels)
    except (ImageDecodeError, ImageTooLargeError) as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """Any camera or library frame (gray, BGRA, 16-bit) -> BGR uint8."""
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ImageDecodeError(f"frames must be uint8 or uint16, not {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ImageDecodeError(f"cannot use a frame shaped {frame.shape}")
