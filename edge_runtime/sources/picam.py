"""`picam:` (or `picam:1`): a Raspberry Pi camera through picamera2, when it is installed."""

from __future__ import annotations

from typing import Any

import cv2
import numpy as np

from .base import SourceError

SIZE = (1280, 720)


class PicameraSource:
    live = True

    def __init__(self, camera: Any, name: str) -> None:
        self.camera = camera
        self.name = name

    @classmethod
    def open(cls, index: int = 0) -> PicameraSource:
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise SourceError("picam: picamera2 is not installed (apt install python3-picamera2)") from exc
        try:
            camera = Picamera2(index)
            camera.configure(camera.create_video_configuration(main={"size": SIZE, "format": "RGB888"}))
            camera.start()
        except Exception as exc:  # picamera2 raises plain RuntimeErrors and IndexErrors
            raise SourceError(f"picam:{index}: cannot start the camera: {exc}") from exc
        return cls(camera, f"picam:{index}")

    def read(self) -> np.ndarray | None:
        try:
            frame = self.camera.capture_array("main")
        except Exception as exc:
            raise SourceError(f"{self.name}: capture failed: {exc}") from exc
        # picamera2's "RGB888" is laid out B, G, R in memory: already OpenCV's order
        return np.ascontiguousarray(frame[:, :, :3]) if frame.shape[2] == 4 else frame

    def close(self) -> None:
        try:
            self.camera.stop()
            self.camera.close()
        except Exception:
            pass


def has_gstreamer() -> bool:
    info = cv2.getBuildInformation()
    return any("GStreamer" in line and "YES" in line for line in info.splitlines())
