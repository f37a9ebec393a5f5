"""Open a frame source from a URI.

    device index or /dev/videoN     V4L2 camera
    rtsp://, rtsps://, http(s)://   network stream (RTSP, MJPEG over HTTP)
    path/to/video.mp4               video file (--loop repeats, --realtime paces it)
    path/to/folder, "photos/*.jpg"  still images in name order
    gst:PIPELINE                    GStreamer pipeline ending in appsink (Jetson CSI cameras)
    picam: or picam:N               Raspberry Pi camera through picamera2
    demo:                           the built-in demo clip
"""

from __future__ import annotations

import glob
import re
from pathlib import Path

import cv2

from .base import Source, SourceEnded, SourceError
from .images import IMAGE_SUFFIXES, ImageFolderSource
from .opencv import CaptureSource, VideoFileSource, redact

__all__ = ["Source", "SourceEnded", "SourceError", "describe_uri", "open_source"]

NETWORK = re.compile(r"^(rtsp|rtsps|rtmp|http|https)://", re.IGNORECASE)


def describe_uri(uri: str) -> str:
    return redact(uri)


def open_source(uri: str, loop: bool = False, realtime: bool = False) -> Source:
    """Open the source that `uri` names; SourceError when it cannot be opened."""
    uri = uri.strip()
    if uri == "demo:" or uri == "demo":
        from .demo import open_demo

        return open_demo(realtime=True)
    if uri.isdigit():
        return CaptureSource.open(int(uri), cv2.CAP_V4L2 if _linux() else cv2.CAP_ANY, f"camera {uri}")
    if uri.startswith("/dev/video"):
        return CaptureSource.open(uri, cv2.CAP_V4L2, uri)
    if NETWORK.match(uri):
        return CaptureSource.open(uri, cv2.CAP_FFMPEG, redact(uri))
    if uri.startswith("gst:"):
        from .picam import has_gstreamer

        if not has_gstreamer():
            raise SourceError("gst: this OpenCV build has no GStreamer support (use the distribution's OpenCV)")
        return CaptureSource.open(uri[4:], cv2.CAP_GSTREAMER, "gst:" + uri[4:40])
    if uri.startswith("picam:"):
        from .picam import PicameraSource

        return PicameraSource.open(int(uri[6:] or 0))
    if uri.startswith("file://"):
        uri = uri[7:]
    path = Path(uri)
    if path.is_dir() or glob.has_magic(uri) or path.suffix.lower() in IMAGE_SUFFIXES:
        return ImageFolderSource(uri, loop=loop)
    if path.is_file():
        return VideoFileSource(uri, loop=loop, realtime=realtime)
    raise SourceError(f"{redact(uri)}: no such file, device or stream")


def _linux() -> bool:
    import sys

    return sys.platform.startswith("linux")
