"""A model's base dataset: the images it was given before (models.path/NAME/dataset/), read
so that `export_dataset` merges them into the training part beside the new labels.

    base = read_base(Path("models/shelf/dataset"))   # None when there is none
    base.kind, [(i.path, i.tags, i.boxes) for i in base.items]

The layouts are the ones `edge-export train` reads: a folder per tag (classification), a
labels.json or labels.csv (multilabel), a COCO annotations.json (detection, boxes in pixels,
normalised here). Only the manifests are read: `edge-export check` and `train` check the
images themselves. A manifest that names a file outside the folder, or cannot be read, is a
one-line ExportError: a merge that silently lacks the base would train a worse model.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

from ..errors import ExportError
from .labels import Box

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp")
MULTILABEL_FILES = ("labels.json", "labels.csv")
COCO_FILES = ("annotations.json", "coco.json", "_annotations.coco.json")
MAX_MANIFEST_BYTES = 64 << 20


@dataclass(frozen=True)
class BaseItem:
    path: Path
    tags: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class BaseSet:
    kind: str  # "classification", "multilabel", "detection"
    items: list[BaseItem]


def _inside(root: Path, name: object) -> Path:
    path = (root / str(name)).resolve()
    if not isinstance(name, str) or not path.is_relative_to(root.resolve()) or not path.is_file():
        raise ExportError(f"{root}: names {str(name)[:80]!r}, which is not an image file inside it")
    return path


def _manifest(path: Path) -> str:
    if path.stat().st_size > MAX_MANIFEST_BYTES:
        raise ExportError(f"{path}: over {MAX_MANIFEST_BYTES >> 20} MB")
    return path.read_text()


def read_base(root: Path) -> BaseSet | None:
    """The base dataset in `root`, None when there is no such folder."""
    if not root.is_dir():
        return None
    try:
        coco = next((root / n for n in COCO_FILES if (root / n).is_file()), None)
        if coco is not None:
            return BaseSet("detection", _coco(root, json.loads(_manifest(coco))))
        listed = next((root / n for n in MULTILABEL_FILES if (root / n).is_file()), None)
        if listed is not None:
            return BaseSet("multilabel", _multilabel(root, listed))
    except (OSError, UnicodeDecodeError, ValueError, KeyError, TypeError, ZeroDivisionError) as exc:
        raise ExportError(f"base dataset {root}: cannot read it ({exc})") from None
    items = [BaseItem(p, (folder.name,)) for folder in sorted(root.iterdir())
             if folder.is_dir() and not folder.name.startswith((".", "_"))
             for p in sorted(folder.iterdir()) if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES]
    return BaseSet("classification", items)


def _multilabel(root: Path, manifest: Path) -> list[BaseItem]:
    if manifest.suffix == ".csv":
        with manifest.open(newline="") as f:
            rows = [(row["image"], [t.strip() for t in (row.get("tags") or "").split(";") if t.strip()])
                    for row in csv.DictReader(f)]
    else:
        rows = [(e["file"], [str(t) for t in e.get("tags", [])]) for e in json.loads(_manifest(manifest))["images"]]
    return [BaseItem(_inside(root, name), tuple(tags)) for name, tags in rows]


def _coco(root: Path, coco: dict[str, list[dict[str, object]]]) -> list[BaseItem]:
    categories = {c["id"]: str(c["name"]) for c in coco["categories"]}
    boxes: dict[object, list[Box]] = {}
    images = {i["id"]: i for i in coco["images"]}
    for a in coco["annotations"]:
        image = images[a["image_id"]]
        x, y, w, h = (float(v) for v in a["bbox"])  # type: ignore[attr-defined]
        iw, ih = float(image["width"]), float(image["height"])  # type: ignore[arg-type]
        boxes.setdefault(a["image_id"], []).append(
            Box(categories[a["category_id"]], x / iw, y / ih, w / iw, h / ih))
    return [BaseItem(_inside(root, image["file_name"]), (), tuple(boxes.get(image_id, [])))
            for image_id, image in images.items()]
