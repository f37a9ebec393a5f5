"""Read and check a labelled image set before anything is trained or uploaded.

Layouts (see README "Datasets"):

    classification   DATASET/<tag>/*.jpg                 one folder per tag
    multilabel       DATASET/labels.csv (image,tags)     tags separated by ';'
                     or DATASET/labels.json              {"images": [{"file": ..., "tags": [...]}]}
    detection        DATASET/annotations.json (COCO)     boxes in pixels, as COCO has them

Every image is read and decoded. Unreadable or truncated files, unsupported formats and
duplicates (by content hash) are skipped, files over 6 MB are re-encoded, and all of it
is listed in the report: nothing is dropped silently. A tag with fewer than 5 images is
an error, fewer than 15 a warning (Custom Vision's own limits and advice).
"""

from __future__ import annotations

import csv
import enum
import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from edge_runtime.errors import EdgeRuntimeError, ImageError, ImageFormatError
from edge_runtime.model.imageio import decode_image, sniff

SUFFIXES = {".jpg": "JPEG", ".jpeg": "JPEG", ".png": "PNG", ".bmp": "BMP", ".gif": "GIF", ".webp": "WEBP"}
UPLOADABLE = {"JPEG", "PNG", "BMP", "GIF"}  # what Custom Vision accepts
MAX_BYTES = 6 * 1024 * 1024
MIN_PER_TAG = 5
ADVISED_PER_TAG = 15
MULTILABEL_FILES = ("labels.csv", "labels.json")
COCO_FILES = ("annotations.json", "coco.json", "_annotations.coco.json")
MANIFEST_SUFFIXES = (".csv", ".json")
SET_APART = ("_negative", "_untagged", "_exports", "_predictions")  # folders `pull` writes beside the tags: never a tag
WHAT_A_DATASET_IS = ("a dataset is a folder with one sub-folder of images per tag, or a labels.csv or labels.json "
                     "(multilabel) or a COCO annotations.json (detection) with the images beside it")


class DatasetError(EdgeRuntimeError):
    """The dataset cannot be used as it is."""


class Kind(str, enum.Enum):
    CLASSIFICATION = "classification"
    MULTILABEL = "multilabel"
    DETECTION = "detection"


@dataclass(frozen=True)
class Region:
    tag: str
    left: float  # normalised to the image, as Custom Vision wants them
    top: float
    width: float
    height: float


@dataclass(frozen=True)
class Item:
    path: Path
    tags: tuple[str, ...]
    sha1: str
    data: bytes = field(repr=False, compare=False)  # what is uploaded (re-encoded if it was too big)
    width: int = 0
    height: int = 0
    regions: tuple[Region, ...] = ()


@dataclass
class Report:
    notices: list[tuple[str, str, str]] = field(default_factory=list)  # (file, problem, action)
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    formats: Counter[str] = field(default_factory=Counter)

    def note(self, path: Path | str, problem: str, action: str) -> None:
        self.notices.append((str(path), problem, action))


@dataclass
class Dataset:
    root: Path
    kind: Kind
    tags: list[str]
    items: list[Item]
    report: Report

    def counts(self) -> Counter[str]:
        counts: Counter[str] = Counter()
        for item in self.items:
            counts.update(set(item.tags) | {r.tag for r in item.regions})
        return counts

    def summary(self) -> str:
        counts = self.counts()
        width = max([len(t) for t in self.tags] + [3])
        lines = [f"{self.kind.value} dataset {self.root}: {len(self.items)} images, {len(self.tags)} tags", ""]
        lines.append(f"{'tag':<{width}}  images")
        lines += [f"{tag:<{width}}  {counts[tag]:>6}" for tag in self.tags]
        lines.append("")
        lines.append("formats: " + ", ".join(f"{k} {v}" for k, v in sorted(self.report.formats.items())))
        if self.report.notices:
            lines.append("")
            lines.append("file problems:")
            lines += [f"  {f}: {p} -> {a}" for f, p, a in self.report.notices]
        lines += [f"warning: {w}" for w in self.report.warnings]
        lines += [f"error: {e}" for e in self.report.errors]
        return "\n".join(lines)


def _shrink(image: np.ndarray, limit: int) -> bytes:
    """Re-encode as JPEG, halving the size until it fits."""
    quality = 90
    while True:
        ok, buf = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise DatasetError("JPEG encoding failed")
        if len(buf) <= limit:
            return buf.tobytes()
        image = cv2.resize(image, (image.shape[1] // 2, image.shape[0] // 2), interpolation=cv2.INTER_AREA)


class _Reader:
    """Reads each file once, checks it, and remembers hashes to skip duplicates."""

    def __init__(self, report: Report) -> None:
        self.report = report
        self.seen: dict[str, Path] = {}

    def read(self, path: Path) -> tuple[bytes, str, np.ndarray] | None:
        try:
            data = path.read_bytes()
        except OSError as exc:
            self.report.note(path, f"unreadable ({exc.strerror})", "skipped")
            return None
        try:  # the runtime's own check: the formats Custom Vision takes, by their first bytes
            kind = sniff(data).upper()
        except ImageFormatError:
            self.report.note(path, "not an image format Custom Vision takes", "skipped")
            return None
        try:
            image = decode_image(data)
        except ImageError as exc:
            self.report.note(path, str(exc), "skipped")
            return None
        sha1 = hashlib.sha1(data).hexdigest()
        if sha1 in self.seen:
            self.report.note(path, f"duplicate of {self.seen[sha1].name}", "skipped")
            return None
        self.seen[sha1] = path
        self.report.formats[kind] += 1
        if kind not in UPLOADABLE or len(data) > MAX_BYTES:
            why = f"{len(data) / 1e6:.1f} MB, over the 6 MB limit" if len(data) > MAX_BYTES else f"{kind} format"
            data = _shrink(image, MAX_BYTES)
            self.report.note(path, why, f"re-encoded as JPEG ({len(data) / 1e6:.1f} MB)")
        return data, sha1, image


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in SUFFIXES)


def _classification(root: Path, report: Report) -> tuple[list[str], list[Item]]:
    folders = sorted(p for p in root.iterdir()
                     if p.is_dir() and not p.name.startswith(".") and p.name.lower() not in SET_APART)
    if not folders:
        raise DatasetError(f"{root}: no tag folders or label file found; {WHAT_A_DATASET_IS}")
    reader, items = _Reader(report), []
    for folder in folders:
        for stray in sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() not in SUFFIXES):
            report.note(stray, "not an image file", "skipped")
        for path in _images_in(folder):
            got = reader.read(path)
            if got:
                data, sha1, image = got
                items.append(Item(path, (folder.name,), sha1, data, image.shape[1], image.shape[0]))
    return [f.name for f in folders], items


def _multilabel(root: Path, manifest: Path, report: Report) -> tuple[list[str], list[Item]]:
    rows: list[tuple[str, list[str]]] = []
    try:
        if manifest.suffix == ".csv":
            with manifest.open(newline="") as f:
                for row in csv.DictReader(f):
                    rows.append((row["image"], [t.strip() for t in (row.get("tags") or "").split(";") if t.strip()]))
        else:
            for entry in json.loads(manifest.read_text())["images"]:
                rows.append((entry["file"], [str(t) for t in entry.get("tags", [])]))
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{manifest}: not UTF-8 text; {WHAT_A_DATASET_IS}") from exc
    except (OSError, KeyError, TypeError, ValueError) as exc:
        raise DatasetError(f"{manifest}: cannot read it ({exc}); see the README for its columns") from exc
    reader, items, tags = _Reader(report), [], []
    for name, image_tags in rows:
        got = reader.read(root / name)
        if got:
            data, sha1, image = got
            items.append(Item(root / name, tuple(image_tags), sha1, data, image.shape[1], image.shape[0]))
            tags += [t for t in image_tags if t not in tags]
    return sorted(tags), items


def _coco(root: Path, annotations: Path, report: Report) -> tuple[list[str], list[Item]]:
    try:
        coco = json.loads(annotations.read_text())
        categories = {c["id"]: str(c["name"]) for c in coco["categories"]}
        images = {i["id"]: i for i in coco["images"]}
        boxes: dict[int, list[Region]] = {}
        for a in coco["annotations"]:
            region = _coco_region(a, images, categories, report)
            if region is not None:
                boxes.setdefault(a["image_id"], []).append(region)
    except UnicodeDecodeError as exc:
        raise DatasetError(f"{annotations}: not UTF-8 text; {WHAT_A_DATASET_IS}") from exc
    except (OSError, KeyError, TypeError, ValueError, ZeroDivisionError, AttributeError) as exc:  # not objects
        raise DatasetError(f"{annotations}: not usable COCO JSON ({exc})") from exc
    reader, items = _Reader(report), []
    for image_id, image in sorted(images.items()):
        path = root / str(image["file_name"])
        if not path.resolve().is_relative_to(root.resolve()):
            report.errors.append(f"image {image_id}: {image['file_name']!r} is outside the dataset folder")
            continue
        if not path.is_file():
            report.errors.append(f"image {image_id}: {image['file_name']} is named in {annotations.name} "
                                 f"but is not in {root}")
            continue
        got = reader.read(path)
        if got:
            data, sha1, decoded = got
            if (decoded.shape[1], decoded.shape[0]) != (image["width"], image["height"]):
                report.note(path, f"is {decoded.shape[1]}x{decoded.shape[0]}, COCO says "
                                  f"{image['width']}x{image['height']}", "boxes scaled to the COCO size")
            items.append(Item(path, (), sha1, data, decoded.shape[1], decoded.shape[0],
                              tuple(boxes.get(image_id, []))))
    return sorted(set(categories.values())), items


BOX_SLACK = 1.0  # pixels a box may reach past the image's edge (rounding by labelling tools)


def _coco_region(a: dict[str, Any], images: dict[Any, dict[str, Any]], categories: dict[Any, str],
                 report: Report) -> Region | None:
    """The annotation's box normalised to its image, or None with the reason in the report's errors."""
    where = f"annotation {a.get('id', '?')}"
    if a.get("image_id") not in images:
        report.errors.append(f"{where}: image {a.get('image_id')!r} is not among the images")
        return None
    if a.get("category_id") not in categories:
        report.errors.append(f"{where}: category {a.get('category_id')!r} is not among the categories")
        return None
    image = images[a["image_id"]]
    where += f" ({image.get('file_name')})"
    iw, ih = float(image["width"]), float(image["height"])
    values = a.get("bbox")
    if not isinstance(values, list) or len(values) != 4:
        report.errors.append(f"{where}: bbox must be [x, y, width, height] in pixels, not {values!r}")
        return None
    x, y, w, h = (float(v) for v in values)
    if not all(math.isfinite(v) for v in (x, y, w, h, iw, ih)) or not (iw > 0 and ih > 0):
        report.errors.append(f"{where}: bbox {values} or the image size {iw:g}x{ih:g} is not a finite number")
    elif w <= 0 or h <= 0:
        report.errors.append(f"{where}: bbox {values} has no width or no height")
    elif x < -BOX_SLACK or y < -BOX_SLACK or x + w > iw + BOX_SLACK or y + h > ih + BOX_SLACK:
        report.errors.append(f"{where}: bbox {values} reaches outside the {iw:g}x{ih:g} image")
    else:
        x, y = max(x, 0.0), max(y, 0.0)
        w, h = min(w, iw - x), min(h, ih - y)
        return Region(categories[a["category_id"]], x / iw, y / ih, w / iw, h / ih)
    return None


def load_dataset(path: Path) -> Dataset:
    root = path.parent if path.is_file() else path
    if not root.is_dir():
        raise DatasetError(f"{path}: no such folder; {WHAT_A_DATASET_IS}")
    if path.is_file() and path.name not in MULTILABEL_FILES + COCO_FILES and path.suffix not in MANIFEST_SUFFIXES:
        raise DatasetError(f"{path} is a file, not a dataset; {WHAT_A_DATASET_IS}")
    report = Report()
    manifest = path if path.is_file() else next((root / n for n in MULTILABEL_FILES + COCO_FILES
                                                 if (root / n).is_file()), None)
    if manifest is not None and (manifest.name in COCO_FILES or _is_coco(manifest)):
        kind = Kind.DETECTION
        tags, items = _coco(root, manifest, report)
    elif manifest is not None:
        kind = Kind.MULTILABEL
        tags, items = _multilabel(root, manifest, report)
    else:
        kind = Kind.CLASSIFICATION
        tags, items = _classification(root, report)
    dataset = Dataset(root, kind, tags, items, report)
    counts = dataset.counts()
    for tag in tags:
        if counts[tag] < MIN_PER_TAG:
            report.errors.append(f"tag {tag!r} has {counts[tag]} images; at least {MIN_PER_TAG} are needed")
        elif counts[tag] < ADVISED_PER_TAG:
            report.warnings.append(f"tag {tag!r} has {counts[tag]} images; {ADVISED_PER_TAG} or more train better")
    if not items:
        report.errors.append("no usable images")
    return dataset


def _is_coco(path: Path) -> bool:
    if path.suffix != ".json":
        return False
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(data, dict) and {"images", "annotations", "categories"} <= set(data)
