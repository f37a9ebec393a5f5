"""`path/to/video.mp4`, `file://...`, a folder or a glob of still images."""

from __future__ import annotations

import glob
from pathlib import Path

from .base import Source, SourceError, SourceKind, SourceOptions
from .images import IMAGE_SUFFIXES, ImageFolderSource
from .opencv import VideoFileSource


def _path(uri: str) -> str:
    uri = uri.strip()
    return uri[len("file://"):] if uri.startswith("file://") else uri


def _is_images(path: str) -> bool:
    return Path(path).is_dir() or glob.has_magic(path) or Path(path).suffix.lower() in IMAGE_SUFFIXES


def check(uri: str) -> None:
    """A file or folder that does not exist now will not appear by retrying: say so at start."""
    path = _path(uri)
    if glob.has_magic(path) or Path(path).exists():
        return
    raise SourceError(f"{path}: no such file, folder or device (a camera is a number, /dev/videoN or a URL)")


def open_file(uri: str, options: SourceOptions) -> Source:
    path = _path(uri)
    if _is_images(path):
        return ImageFolderSource(path, loop=options.loop)
    if Path(path).is_file():
        return VideoFileSource(path, loop=options.loop, realtime=options.realtime)
    raise SourceError(f"{path}: no such file, device or stream")


KINDS = {"file": SourceKind(open_file, check)}
