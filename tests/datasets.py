"""Small labelled datasets and exports that several test modules build: colour-noise
folders per tag, COCO boxes, an export zip as the service hands it out."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import cv2
import numpy as np

from exporter.package import write_export
from tests import models

RNG = np.random.default_rng(11)


def noise_dataset(root: Path, per_tag: int, tags: tuple[str, ...] = ("red", "green")) -> Path:
    for t, tag in enumerate(tags):
        (root / tag).mkdir(parents=True, exist_ok=True)
        for i in range(per_tag):
            image = RNG.integers(0, 256, (24, 24, 3), dtype=np.uint8)
            image[..., 2 - t] = 255
            cv2.imwrite(str(root / tag / f"{i:03d}.png"), image)
    return root


def make_export_zip(root: Path) -> Path:
    """A real export the service hands out: the runtime's own colour classifier layout."""
    folder = write_export(root / "export", models.color_classifier(tags=2), ("red", "green"),
                          models.modern_metadata())
    path = root / "export.zip"
    with zipfile.ZipFile(path, "w") as zf:
        for f in folder.iterdir():
            zf.write(f, f.name)
    return path


def coco_dataset(root: Path, count: int = 8) -> Path:
    """Red squares on grey, with their boxes in COCO JSON."""
    images, annotations = [], []
    for i in range(count):
        image = np.full((448, 608, 3), 60, np.uint8)
        col, row = 2 + i % 5, 1 + i % 4
        image[row * 32 + 2 : row * 32 + 30, col * 32 + 2 : col * 32 + 30] = (0, 0, 255)
        cv2.imwrite(str(root / f"{i}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i}.png", "width": 608, "height": 448})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": 1, "bbox": [col * 32, row * 32, 32, 32],
                            "area": 1024, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": 1, "name": "red"}, {"id": 2, "name": "green"}]}))
    return root / "annotations.json"
