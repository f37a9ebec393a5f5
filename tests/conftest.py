from __future__ import annotations

import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from edge_runtime.paths import DEMO_MODEL
from tests import models

DEMO = DEMO_MODEL
# Optimised graphs and other caches go to a folder of the test run's own, never the user's.
os.environ.setdefault("EDGE_RUNTIME_CACHE_DIR", tempfile.mkdtemp(prefix="edge-runtime-test-cache-"))


@pytest.fixture(scope="session")
def exports(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One export folder per Custom Vision layout."""
    root = tmp_path_factory.mktemp("exports")
    return {
        "legacy": models.write_export(root / "legacy", models.legacy_zipmap_classifier(), models.COLOR_TAGS),
        "modern": models.write_export(
            root / "modern", models.color_classifier(), models.COLOR_TAGS, metadata=models.modern_metadata()
        ),
        "float16": models.write_export(
            root / "float16", models.color_classifier(dtype=10), models.COLOR_TAGS, model_name="modelf16.onnx"
        ),
        "multilabel": models.write_export(root / "multilabel", models.color_classifier(multilabel=True),
                                          models.COLOR_TAGS),
        "yolo": models.write_export(root / "yolo", models.yolo_detector(), ("red", "green"), domain="ObjectDetection"),
        "s1": models.write_export(root / "s1", models.s1_detector(), ("red", "green"), domain="ObjectDetection"),
    }


def solid(bgr: tuple[int, int, int], width: int = 640, height: int = 480) -> np.ndarray:
    return np.full((height, width, 3), bgr, np.uint8)


def jpeg_bytes(image: np.ndarray, quality: int = 95) -> bytes:
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
    assert ok
    return data.tobytes()


def zip_export_path(folder: Path, tmp_path: Path) -> Path:
    return models.zip_folder(folder, tmp_path / f"{folder.name}.zip")


def write_video(path: Path, frames: int = 30, size: tuple[int, int] = (320, 240), fps: float = 30.0,
                fourcc: str = "MJPG") -> Path:
    """A real video file written by OpenCV; frame i is filled with grey level 4*i (mod 256)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), fps, size)
    assert writer.isOpened()
    for i in range(frames):
        frame = np.full((size[1], size[0], 3), (4 * i) % 256, np.uint8)
        cv2.putText(frame, str(i), (10, size[1] // 2), cv2.FONT_HERSHEY_SIMPLEX, 1, (0, 0, 255), 2)
        writer.write(frame)
    writer.release()
    return path


def wait_for(predicate, timeout: float = 10.0, interval: float = 0.02) -> bool:  # type: ignore[no-untyped-def]
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return bool(predicate())


@pytest.fixture()
def browser(tmp_path: Path):  # type: ignore[no-untyped-def]
    """A headless Chromium, offline (tests/browser.py); skips where it is not installed."""
    from tests.browser import chromium

    driver = chromium(tmp_path / "profile")
    yield driver
    driver.quit()


@pytest.fixture(scope="module")
def colours(exports):  # type: ignore[no-untyped-def]
    """The colour classifier export (red, green, blue...), loaded once a module."""
    from edge_runtime.model.predictor import Predictor

    return Predictor.load(exports["modern"])


@pytest.fixture()
def tiny_disk(tmp_path):  # type: ignore[no-untyped-def]
    mount = tmp_path / "tiny"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture(autouse=True)
def _limits_of_this_test_only():  # type: ignore[no-untyped-def]
    """serve installs its settings' limits for the process: no test leaves them to the next."""
    yield
    from edge_runtime.model import limits

    limits.reset()


@pytest.fixture(scope="module")
def cv_export_zip(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real export as the Custom Vision service hands it out."""
    from tests.datasets import make_export_zip

    return make_export_zip(tmp_path_factory.mktemp("cvexport"))


@pytest.fixture()
def cv_service(cv_export_zip: Path) -> Iterator[tuple[Any, str]]:
    """The loopback double of the training API: (its state, its endpoint)."""
    from tests.cv_double import serving

    with serving(cv_export_zip) as served:
        yield served
