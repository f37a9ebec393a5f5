"""`demo:`: a short clip made from the bundled sample photographs, looped at 15 fps.

The clip is written once with OpenCV (Motion-JPEG in AVI, which every OpenCV build can
write and read) into the cache folder (paths.cache_dir: EDGE_RUNTIME_CACHE_DIR, systemd's
CACHE_DIRECTORY, ...), then played like any video file, so the demo goes
through the same decode path as a real recording.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np

from ...paths import DEMO_SAMPLES as SAMPLES
from ...paths import cache_dir
from .base import SourceError, SourceKind, SourceOptions
from .opencv import VideoFileSource

SIZE = (960, 540)
FPS = 15.0
FRAMES_PER_IMAGE = 30
CLIP_VERSION = 1


def _frames(image: np.ndarray) -> list[np.ndarray]:
    """A slow zoom into the picture, letterboxed to the clip size."""
    h, w = image.shape[:2]
    out = []
    for i in range(FRAMES_PER_IMAGE):
        zoom = 1.0 + 0.15 * i / FRAMES_PER_IMAGE
        cw, ch = int(w / zoom), int(h / zoom)
        x0, y0 = (w - cw) // 2, (h - ch) // 2
        crop = image[y0 : y0 + ch, x0 : x0 + cw]
        scale = min(SIZE[0] / cw, SIZE[1] / ch)
        resized = cv2.resize(crop, (int(cw * scale), int(ch * scale)), interpolation=cv2.INTER_AREA)
        canvas = np.zeros((SIZE[1], SIZE[0], 3), np.uint8)
        y, x = (SIZE[1] - resized.shape[0]) // 2, (SIZE[0] - resized.shape[1]) // 2
        canvas[y : y + resized.shape[0], x : x + resized.shape[1]] = resized
        out.append(canvas)
    return out


def demo_clip() -> Path:
    path = cache_dir() / f"edge-runtime-demo-v{CLIP_VERSION}.avi"
    if path.is_file() and path.stat().st_size > 0:
        return path
    images = [image for p in sorted(SAMPLES.glob("*.jpg")) if (image := cv2.imread(str(p))) is not None]
    if not images:
        raise SourceError(f"demo: sample images missing from {SAMPLES}")
    tmp = path.with_suffix(f".{os.getpid()}.avi")
    writer = cv2.VideoWriter(str(tmp), cv2.VideoWriter.fourcc(*"MJPG"), FPS, SIZE)
    if not writer.isOpened():
        raise SourceError("demo: this OpenCV build cannot write a Motion-JPEG clip")
    for image in images:
        for frame in _frames(image):
            writer.write(frame)
    writer.release()
    tmp.replace(path)  # atomic: a second process never sees half a clip
    return path


def open_demo(realtime: bool = True) -> VideoFileSource:
    source = VideoFileSource(str(demo_clip()), loop=True, realtime=realtime)
    source.name = "demo:"
    return source


def _open(uri: str, options: SourceOptions) -> VideoFileSource:
    return open_demo(realtime=True)  # always looped and paced: it stands in for a camera


KINDS = {"demo": SourceKind(_open)}
