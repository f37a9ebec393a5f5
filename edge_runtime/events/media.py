"""An event's pictures: the best frame with its boxes drawn, and a small thumbnail of it."""

from __future__ import annotations

import cv2
import numpy as np

from ..model.annotate import annotate, encode_jpeg
from ..types import FrameResult


def shrink(image: np.ndarray, width: int) -> np.ndarray:
    """`image` scaled down to `width` (never up), keeping its aspect; even sizes for video."""
    h, w = image.shape[:2]
    if w <= width:
        size = (w - w % 2, h - h % 2)
    else:
        size = (width - width % 2, max(2, round(h * width / w)) // 2 * 2)
    if size == (w, h):
        return image
    return cv2.resize(image, size, interpolation=cv2.INTER_AREA)


def evidence(result: FrameResult, quality: int = 85, thumbnail_width: int = 320,
             keep_frame: bool = False) -> dict[str, bytes]:
    """{"snapshot": JPEG, "thumbnail": JPEG} of the frame with its predictions drawn, and
    "frame": the frame as it was, when asked for (training data must not have boxes drawn)."""
    drawn = annotate(result.frame.image, result.prediction)
    out = {"snapshot": encode_jpeg(drawn, quality),
           "thumbnail": encode_jpeg(shrink(drawn, thumbnail_width), min(quality, 80))}
    if keep_frame:
        out["frame"] = encode_jpeg(result.frame.image, max(quality, 90))
    return out
