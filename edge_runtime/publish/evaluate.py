"""Top-1 accuracy of a classifier on a labelled folder, the publish gate's measure.

    DIR/<tag>/*.jpg          the tag is the image's folder name

    accuracy(predictor, Path("eval"))   # 0.93
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from ..errors import EdgeRuntimeError, ModelStoreError
from ..model.imageio import read_image
from ..model.predictor import Predictor

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".webp"}
MAX_IMAGES = 2000  # per tag: the gate must finish in a reasonable time on a small board


def labelled(folder: Path, labels: tuple[str, ...], limit: int = MAX_IMAGES) -> Iterator[tuple[str, np.ndarray]]:
    """(tag, image) for each readable image of each tag folder; a tag the model does not know,
    or a folder with none, is a one-line error."""
    if not folder.is_dir():
        raise ModelStoreError(f"{folder}: the labelled folder does not exist")
    tag_dirs = sorted(p for p in folder.iterdir() if p.is_dir() and not p.is_symlink())
    unknown = sorted(d.name for d in tag_dirs if d.name not in set(labels))
    if unknown:
        raise ModelStoreError(f"{folder}: has tags the model does not know: {', '.join(unknown[:5])}")
    found = 0
    for tag_dir in tag_dirs:
        files = sorted(p for p in tag_dir.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()
                       and not p.is_symlink())
        for path in files[:limit]:
            try:
                image = read_image(path)
            except EdgeRuntimeError:
                continue  # an unreadable image counts for neither version
            found += 1
            yield tag_dir.name, image
    if found == 0:
        raise ModelStoreError(f"{folder}: no images in tag folders (expected {folder}/<tag>/*.jpg)")


def accuracy(predictor: Predictor, folder: Path | None, limit: int = MAX_IMAGES,
             more: Iterable[tuple[str, np.ndarray]] = ()) -> float:
    """Top-1 accuracy on the tag folders of `folder` (None: none) and on `more` (tag, image)
    pairs, such as a model's held-out labels, whose tags may be ones the model does not know."""
    pairs = itertools.chain(labelled(folder, predictor.spec.labels or (), limit) if folder is not None else (), more)
    right = total = 0
    for tag, image in pairs:
        predictions = predictor.predict(image).predictions
        total += 1
        right += bool(predictions) and predictions[0].tag_name == tag
    if total == 0:
        raise ModelStoreError("no labelled images to measure the accuracy on")
    return right / total
