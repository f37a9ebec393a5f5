"""mAP at IoU 0.5 on a COCO set, computed by pycocotools: how `quantize --eval` judges a detector.

    truth = read_coco(Path("held-out/annotations.json"))
    fp32_map, int8_map = (mean_ap(p, truth) for p in (fp32, int8))

`run_cocoeval` is the one place pycocotools is driven; `edge-export evaluate` uses it too.
The COCO file is checked as it is read: each image inside the set's folder, each box made of
finite numbers with a width and a height, each category known. Needs pycocotools (the
`quantize` extra).
"""

from __future__ import annotations

import contextlib
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import ConfigError, EdgeRuntimeError, MissingExtraError
from ..model.imageio import read_image
from ..model.postprocess import PostprocessOptions
from ..model.predictor import Predictor

COCO_NAMES = ("annotations.json", "coco.json", "_annotations.coco.json")
MAX_COCO_BYTES = 64 * 1024 * 1024
EVERY_BOX = PostprocessOptions(threshold=0.01, max_detections=100)


@dataclass(frozen=True)
class Truth:
    root: Path
    tags: tuple[str, ...]  # by category id order
    images: tuple[tuple[str, int, int], ...]  # (file name, width, height)
    boxes: tuple[tuple[int, str, tuple[float, float, float, float]], ...]  # (image index, tag, x y w h pixels)


def coco_file(path: Path) -> Path | None:
    """The COCO file `path` names or holds, if any."""
    if path.is_file() and path.suffix == ".json":
        return path
    return next((path / n for n in COCO_NAMES if (path / n).is_file()), None) if path.is_dir() else None


def read_coco(path: Path) -> Truth:
    if path.stat().st_size > MAX_COCO_BYTES:
        raise ConfigError(f"{path}: over {MAX_COCO_BYTES // 2**20} MB; not a COCO file to evaluate on")
    try:
        coco = json.loads(path.read_text())
        categories = {c["id"]: str(c["name"]) for c in coco["categories"]}
        index = {image["id"]: k for k, image in enumerate(coco["images"])}
        images = tuple((str(i["file_name"]), int(i["width"]), int(i["height"])) for i in coco["images"])
        boxes = []
        for a in coco["annotations"]:
            box = tuple(float(v) for v in a["bbox"])
            if a["category_id"] not in categories or a["image_id"] not in index:
                raise ValueError(f"annotation {a.get('id')} names an unknown category or image")
            if len(box) != 4 or not all(math.isfinite(v) for v in box) or box[2] <= 0 or box[3] <= 0:
                raise ValueError(f"annotation {a.get('id')} has a box that is not 4 finite numbers with a size")
            boxes.append((index[a["image_id"]], categories[a["category_id"]], box))
    except (OSError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: not usable COCO JSON ({exc})") from exc
    root = path.parent.resolve()
    for name, _, _ in images:
        if not (root / name).resolve().is_relative_to(root):
            raise ConfigError(f"{path}: image {name!r} is outside the set's folder")
    tags = tuple(categories[k] for k in sorted(categories))
    return Truth(root, tags, images, tuple(boxes))


def run_cocoeval(gt: dict[str, Any], found: Sequence[dict[str, Any]]) -> Any:
    """pycocotools' COCOeval at IoU 0.5 over `gt` (a COCO dict) and `found` (its result list), run."""
    try:
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError as exc:
        raise MissingExtraError("mAP needs pycocotools: pip install 'edge-runtime[quantize]'") from exc
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its own tables
        coco_gt = COCO()
        coco_gt.dataset = gt
        coco_gt.createIndex()
        run = COCOeval(coco_gt, coco_gt.loadRes(list(found)), "bbox")
        run.params.iouThrs = np.array([0.5])
        run.evaluate()
        run.accumulate()
    return run


def ap_per_category(run: Any, count: int) -> list[float]:
    """AP@0.5 of categories 1..count (NaN where a category has no true box)."""
    precision = run.eval["precision"][0, :, :, 0, -1]  # [recall, category] at IoU 0.5, all areas, 100 dets
    out = []
    for k in range(count):
        values = precision[:, k]
        values = values[values > -1]
        out.append(float(values.mean()) if values.size else float("nan"))
    return out


def mean_ap(predictor: Predictor, truth: Truth, skipped: list[str] | None = None) -> float:
    """mAP@0.5 of `predictor` over the set's tags that have true boxes (the model's labels must hold them)."""
    labels = list(predictor.spec.labels or ())
    unknown = sorted(set(truth.tags) - set(labels))
    if unknown:
        raise ConfigError(f"--eval has tags the model does not know: {', '.join(unknown)}")
    gt: dict[str, Any] = {"images": [], "annotations": [],
                          "categories": [{"id": i + 1, "name": t} for i, t in enumerate(labels)]}
    for k, (_, width, height) in enumerate(truth.images):
        gt["images"].append({"id": k + 1, "width": width, "height": height})
    for n, (k, tag, (x, y, w, h)) in enumerate(truth.boxes):
        gt["annotations"].append({"id": n + 1, "image_id": k + 1, "category_id": labels.index(tag) + 1,
                                  "bbox": [x, y, w, h], "area": w * h, "iscrowd": 0})
    found: list[dict[str, Any]] = []
    for k, (name, w, h) in enumerate(truth.images):
        try:
            frame = read_image(truth.root / name)
        except EdgeRuntimeError as exc:
            if skipped is not None:
                skipped.append(str(exc))
            continue
        for p in predictor.predict(frame, EVERY_BOX).predictions:
            b = p.bounding_box
            if b is not None:
                found.append({"image_id": k + 1, "category_id": p.tag_index + 1, "score": p.probability,
                              "bbox": [b.left * w, b.top * h, b.width * w, b.height * h]})
    if not truth.boxes:
        raise ConfigError(f"{truth.root}: the COCO set has no boxes to evaluate on")
    if not found:
        return 0.0
    aps = [a for a in ap_per_category(run_cocoeval(gt, found), len(labels)) if not math.isnan(a)]
    return float(np.mean(aps)) if aps else 0.0
