"""Short clips: a ring buffer of each camera's recent frames, written as MP4 by OpenCV.

    buffer = ClipBuffer(pre_s=3, fps=10, width=640)
    buffer.add(result)                       # every frame; keeps at most `fps` a second, shrunk
    frames = buffer.since("door", start - 3)
    write_clip(frames, path, fps=10)

Two codecs of OpenCV's pip wheels write MP4 (their FFmpeg has no H.264 encoder):

- "mp4v" (MPEG-4 Part 2, the default): a few ms of CPU per frame; VLC, ffplay and desktop
  players play it, browsers do not (the events page then offers it as a download).
- "vp09" (VP9): Chromium, Firefox and Safari play it, but OpenCV cannot pass libvpx its
  speed options, and it costs about 250 ms of CPU per 640x360 frame on a 2-core x86 VM
  (docs/benchmarks.md): for devices with cores to spare, short clips, small `width` and `fps`.

The recorder's thread writes clips at a low priority, never the camera loop's.
"""

from __future__ import annotations

import logging
from collections import deque
from pathlib import Path

import cv2
import numpy as np

from ..types import FrameResult
from .media import shrink

log = logging.getLogger(__name__)
CODECS = ("mp4v", "vp09")  # the first that opens, after the one asked for
Timed = tuple[float, np.ndarray]  # (capture time, shrunk BGR frame)


class ClipBuffer:
    """The last `pre_s` seconds of each camera, at most `fps` frames a second."""

    def __init__(self, pre_s: float, fps: float, width: int) -> None:
        self.pre_s, self.width = pre_s, width
        self.interval = 1.0 / fps
        self._frames: dict[str, deque[Timed]] = {}

    def add(self, result: FrameResult) -> Timed | None:
        """Keep this frame if it is due; the kept (time, image), or None if skipped."""
        at = result.frame.captured_at
        frames = self._frames.setdefault(result.camera_id, deque())
        if frames and at - frames[-1][0] < self.interval * 0.9:
            return None
        item = (at, shrink(result.frame.image, self.width))
        frames.append(item)
        while frames and frames[0][0] < at - self.pre_s:
            frames.popleft()
        return item

    def since(self, camera: str, start: float) -> list[Timed]:
        return [f for f in self._frames.get(camera, ()) if f[0] >= start]


def write_clip(frames: list[Timed], path: Path, fps: float, prefer: str = CODECS[0]) -> bool:
    """Write the frames as an MP4 at `path` (`prefer` first, then the fallback); False (and
    no file) when no codec opens."""
    if not frames:
        return False
    h, w = frames[0][1].shape[:2]
    for codec in dict.fromkeys((prefer, *CODECS)):
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*codec), fps, (w, h))
        if writer.isOpened():
            break
        writer.release()
    else:
        log.error("no video codec could be opened for %s", path)
        path.unlink(missing_ok=True)
        return False
    try:
        for _, image in frames:
            writer.write(image if image.shape[:2] == (h, w) else cv2.resize(image, (w, h)))
    finally:
        writer.release()
    return path.exists() and path.stat().st_size > 0
