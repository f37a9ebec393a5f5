"""A folder or glob of still images, read in name order, optionally looped."""

from __future__ import annotations

import glob
import logging
from pathlib import Path

import numpy as np

from ...errors import ImageError
from ...model.imageio import read_image
from .base import SourceEnded, SourceError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff"}
log = logging.getLogger(__name__)


class ImageFolderSource:
    live = False

    def __init__(self, pattern: str, loop: bool = False) -> None:
        self.name = pattern
        self.loop = loop
        path = Path(pattern)
        if path.is_dir():
            files = [p for p in sorted(path.iterdir()) if p.suffix.lower() in IMAGE_SUFFIXES]
        else:
            files = [Path(p) for p in sorted(glob.glob(pattern)) if Path(p).suffix.lower() in IMAGE_SUFFIXES]
        if not files:
            raise SourceError(f"{pattern}: no images found")
        self.files = files
        self.index = 0

    def read(self) -> np.ndarray | None:
        for _ in range(len(self.files)):
            if self.index >= len(self.files):
                if not self.loop:
                    raise SourceEnded(f"{self.name}: no more images")
                self.index = 0
            path = self.files[self.index]
            self.index += 1
            try:
                return read_image(path)
            except ImageError as exc:  # one bad file must not stop the folder
                log.warning("skipping %s", exc)
        raise SourceError(f"{self.name}: none of the images can be read")

    def close(self) -> None:
        pass
