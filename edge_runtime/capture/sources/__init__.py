"""Frame sources, picked by URI:

    0, /dev/video0                  V4L2 camera
    rtsp://, rtsps://, http(s)://   network stream (RTSP, MJPEG over HTTP)
    path/to/video.mp4               video file (--loop repeats, --realtime paces it)
    path/to/folder, "photos/*.jpg"  still images in name order
    gst:PIPELINE                    GStreamer pipeline ending in appsink (Jetson CSI cameras)
    picam: or picam:N               Raspberry Pi camera through picamera2
    demo:                           the built-in demo clip

Every module here with a `KINDS` table (scheme -> SourceKind) is found at first use, so a
new kind of source is one new file.
"""

from __future__ import annotations

import functools
import importlib
import pkgutil
from pathlib import Path

from .base import Source, SourceEnded, SourceError, SourceKind, SourceOptions
from .uri import check_uri, redact, scheme_of

__all__ = ["Source", "SourceEnded", "SourceError", "SourceKind", "SourceOptions", "check_source",
           "describe_uri", "kinds", "open_source"]


@functools.cache
def kinds() -> dict[str, SourceKind]:
    """Scheme -> SourceKind, from every module of this package that has a KINDS table."""
    table: dict[str, SourceKind] = {}
    for module in pkgutil.iter_modules(__path__):
        found = getattr(importlib.import_module(f"{__name__}.{module.name}"), "KINDS", None)
        for scheme, kind in (found or {}).items():
            if scheme in table:
                raise RuntimeError(f"source scheme {scheme!r} is defined twice")
            table[scheme] = kind
    return table


def _kind(uri: str) -> SourceKind:
    check_uri(uri)
    scheme = scheme_of(uri)
    kind = kinds().get(scheme)
    if kind is None and Path(uri).exists():  # a file whose name has a colon
        kind = kinds()["file"]
    if kind is None:
        raise SourceError(f"{redact(uri)}: unknown kind of source {scheme + ':'!r} "
                          f"(known: {', '.join(sorted(kinds()))})")
    return kind


def describe_uri(uri: str) -> str:
    return redact(uri)


def check_source(uri: str) -> None:
    """SourceError now for a source that retrying cannot fix (a bad URL, a missing file)."""
    kind = _kind(uri)
    if kind.check is not None:
        kind.check(uri)


def open_source(uri: str, loop: bool = False, realtime: bool = False,
                read_timeout_s: float = SourceOptions.read_timeout_s) -> Source:
    """Open the source that `uri` names; SourceError when it cannot be opened."""
    return _kind(uri).open(uri, SourceOptions(loop=loop, realtime=realtime, read_timeout_s=read_timeout_s))
