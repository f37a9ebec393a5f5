"""`picam:` (or `picam:1`): a Raspberry Pi camera through picamera2, when it is installed."""

from __future__ import annotations

from typing import Any

import numpy as np

from .base import SourceError, SourceKind, SourceOptions

SIZE = (1280, 720)


class PicameraSource:
    live = True

    def __init__(self, camera: Any, name: str, read_timeout_s: float = 5.0) -> None:
        self.camera = camera
        self.name = name
        self.read_timeout_s = read_timeout_s

    @classmethod
    def open(cls, index: int = 0, read_timeout_s: float = 5.0) -> PicameraSource:
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
        return cls(camera, f"picam:{index}", read_timeout_s)

    def read(self) -> np.ndarray | None:
        try:
            frame = self.camera.capture_array("main", wait=self.read_timeout_s)
        except TimeoutError:
            return None  # no frame in time: the camera's watchdog decides
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


def open_picam(uri: str, options: SourceOptions) -> PicameraSource:
    index = uri.strip()[len("picam:"):]
    if not index.isdigit() and index:
        raise SourceError(f"{uri}: expected picam: or picam:N")
    return PicameraSource.open(int(index or 0), options.read_timeout_s)


KINDS = {"picam": SourceKind(open_picam)}
