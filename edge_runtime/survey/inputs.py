"""What a survey reads: image files and folders (recursive) and videos sampled every N seconds.

    inputs, missing = collect([Path("flight1"), Path("DJI_0003.MP4")])
    for seconds, frame in sample_frames(Path("DJI_0003.MP4"), every=2.0): ...
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from ..capture.sources.images import IMAGE_SUFFIXES

VIDEO_SUFFIXES = {".mp4", ".mov", ".avi", ".mkv", ".m4v", ".mts", ".ts"}


@dataclass(frozen=True)
class Input:
    path: Path
    video: bool
    name: str  # shown in the outputs: the path below the folder given, or the file's name

    @property
    def key(self) -> str:
        return str(self.path.resolve())


def collect(paths: Sequence[Path]) -> tuple[list[Input], list[Path]]:
    """Inputs in name order (folders searched recursively), and the paths that do not exist.

    Drones restart their file numbers in every card folder, so a file found in a folder is
    named by its path below that folder (100MEDIA/DJI_0001.JPG).
    """
    found: dict[Path, tuple[Path, str]] = {}
    missing = []
    for path in paths:
        if path.is_dir():
            files = sorted(p for p in path.rglob("*") if p.is_file())
            chosen = [(p, p.relative_to(path).as_posix()) for p in files
                      if p.suffix.lower() in IMAGE_SUFFIXES | VIDEO_SUFFIXES]
        elif path.is_file():
            chosen = [(path, path.name)]  # named on purpose: tried even with an odd suffix, and reported if bad
        else:
            missing.append(path)
            continue
        for p, name in chosen:
            found.setdefault(p.resolve(), (p, name))
    names = Counter(name for _, name in found.values())
    inputs = [Input(p, p.suffix.lower() in VIDEO_SUFFIXES, name if names[name] == 1 else str(p))
              for p, name in found.values()]
    return inputs, missing


def _fps(capture: cv2.VideoCapture) -> float:
    """The container's frame rate, or 30 where it says none, zero, NaN or infinity."""
    fps = capture.get(cv2.CAP_PROP_FPS)
    return fps if math.isfinite(fps) and fps > 0 else 30.0


def video_info(path: Path) -> tuple[float, int] | None:
    """(frames per second, frame count) of a readable video, else None."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return None
        count = capture.get(cv2.CAP_PROP_FRAME_COUNT)
        return _fps(capture), int(count) if math.isfinite(count) and count > 0 else 0
    finally:
        capture.release()


def samples_expected(path: Path, every: float) -> int:
    info = video_info(path)
    if info is None or info[1] <= 0:
        return 1
    fps, count = info
    return max(1, int(count / fps / every) + 1)


def sample_frames(path: Path, every: float) -> Iterator[tuple[float, np.ndarray]]:
    """(seconds from the start, BGR frame) every `every` seconds, the first frame included.

    Frames are grabbed in order (seeking is unreliable in many containers) and only the
    sampled ones are converted.
    """
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            raise OSError("cannot open the video")
        fps = _fps(capture)
        index, next_t = 0, 0.0
        while capture.grab():
            t = index / fps
            index += 1
            if t + 0.5 / fps < next_t:
                continue
            ok, frame = capture.retrieve()
            if ok and frame is not None:
                yield t, frame
            next_t += every
            while next_t <= t:
                next_t += every
        if index == 0:
            raise OSError("no frames could be read")
    finally:
        capture.release()
