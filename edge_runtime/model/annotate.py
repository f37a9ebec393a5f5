"""Draw predictions on a frame: boxes and labels for detection, a caption for classification."""

from __future__ import annotations

import cv2
import numpy as np

from ..types import PredictionResult

PALETTE = [(56, 56, 255), (151, 157, 255), (31, 112, 255), (29, 178, 255), (49, 210, 207),
           (10, 249, 72), (23, 204, 146), (134, 219, 61), (52, 147, 26), (187, 212, 0)]
FONT = cv2.FONT_HERSHEY_SIMPLEX
CAPTION_LINES = 3


def _label(image: np.ndarray, text: str, x: int, y: int, color: tuple[int, int, int], scale: float) -> None:
    (tw, th), base = cv2.getTextSize(text, FONT, scale, 1)
    y = max(y, th + base)
    cv2.rectangle(image, (x, y - th - base), (x + tw + 4, y), color, -1)
    cv2.putText(image, text, (x + 2, y - base), FONT, scale, (255, 255, 255), 1, cv2.LINE_AA)


def annotate(frame: np.ndarray, result: PredictionResult) -> np.ndarray:
    """A copy of `frame` with the predictions drawn on it."""
    image: np.ndarray = frame.copy()
    h, w = image.shape[:2]
    scale = max(0.4, min(w, h) / 900)
    thickness = max(1, round(min(w, h) / 400))
    boxed = [p for p in result.predictions if p.bounding_box is not None]
    for p in boxed:
        box = p.bounding_box
        assert box is not None
        color = PALETTE[p.tag_index % len(PALETTE)]
        x0, y0 = int(box.left * w), int(box.top * h)
        x1, y1 = int((box.left + box.width) * w), int((box.top + box.height) * h)
        cv2.rectangle(image, (x0, y0), (x1, y1), color, thickness)
        _label(image, f"{p.tag_name} {p.probability:.0%}", x0, y0, color, scale)
    if not boxed:
        line = int(30 * scale / 0.6)
        for i, p in enumerate(result.predictions[:CAPTION_LINES]):
            _label(image, f"{p.tag_name} {p.probability:.1%}", 8, 8 + line * (i + 1),
                   PALETTE[p.tag_index % len(PALETTE)], scale)
    return image


def encode_jpeg(image: np.ndarray, quality: int = 80) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise ValueError("JPEG encoding failed")
    return data.tobytes()
