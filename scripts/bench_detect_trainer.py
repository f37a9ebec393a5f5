"""Benchmark of the local detection trainer on a stand-in for Custom Vision's object-detection quickstart.

The quickstart's photos cannot be fetched here, so the set is built from photos that ship
in scikit-image (public domain / CC0): two objects ("cat", Chelsea's head; "cup", the coffee
cup and saucer), cut out with a soft elliptical edge, pasted at random positions and sizes
onto random crops of other photos, one object a photo, 15 photos a tag, at known boxes.
Held-out photos use other background photos and new positions; the mosaics put four
held-out photos in one (2x2, so each object is half the size and there are four a photo).

    pip install 'edge-runtime[train]' scikit-image
    python scripts/bench_detect_trainer.py [--budget 150] [--size 320] [--repeat 1]

Prints a table: training time (wall, and the process's CPU time: on a busy machine the wall
time says more about the neighbours than about the trainer), held-out mAP@0.5 (the trainer's own validation split, and
the separate held-out photos), mAP@0.5 on the mosaics, AP per tag.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from edge_runtime.model.bench import machine
from edge_runtime.model.predictor import Predictor
from exporter.dataset import load_dataset
from exporter.detection.train import Recipe, train_detector
from exporter.evaluate import DetectionMetrics, evaluate
from exporter.package import write_export

WIDTH, HEIGHT = 480, 360
TRAIN_BACKGROUNDS = ("astronaut", "brick", "grass", "camera", "hubble_deep_field", "immunohistochemistry")
HELD_OUT_BACKGROUNDS = ("rocket", "gravel", "moon", "retina", "coins", "colorwheel")


def _photo(name: str) -> np.ndarray:
    import skimage.data

    image = getattr(skimage.data, name)()
    if image.ndim == 2:
        image = np.stack([image] * 3, axis=-1)
    return cv2.cvtColor(np.ascontiguousarray(image[..., :3]), cv2.COLOR_RGB2BGR)


def objects() -> dict[str, np.ndarray]:
    """Each object as BGRA, its alpha a feathered ellipse."""
    crops = {"cat": _photo("chelsea")[0:300, 20:360], "cup": _photo("coffee")[10:390, 70:490]}
    out = {}
    for tag, crop in crops.items():
        h, w = crop.shape[:2]
        alpha = np.zeros((h, w), np.uint8)
        cv2.ellipse(alpha, (w // 2, h // 2), (w // 2 - 4, h // 2 - 4), 0, 0, 360, 255, -1)
        alpha = cv2.GaussianBlur(alpha, (0, 0), 3)
        out[tag] = np.dstack([crop, alpha])
    return out


def _background(photo: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = photo.shape[:2]
    scale = rng.uniform(0.5, 1.0)
    ch, cw = int(h * scale), int(min(w, h * scale * WIDTH / HEIGHT))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    return cv2.resize(photo[y : y + ch, x : x + cw], (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def _paste(canvas: np.ndarray, thing: np.ndarray, rng: np.random.Generator) -> list[float]:
    ow = int(WIDTH * rng.uniform(0.28, 0.55))
    oh = min(HEIGHT - 2, int(ow * thing.shape[0] / thing.shape[1] * rng.uniform(0.85, 1.15)))
    small = cv2.resize(thing, (ow, oh), interpolation=cv2.INTER_AREA)
    if rng.random() < 0.5:
        small = small[:, ::-1]
    x, y = int(rng.integers(0, WIDTH - ow + 1)), int(rng.integers(0, HEIGHT - oh + 1))
    alpha = small[..., 3:].astype(np.float32) / 255
    colour = small[..., :3].astype(np.float32) * rng.uniform(0.8, 1.2)
    region = canvas[y : y + oh, x : x + ow].astype(np.float32)
    canvas[y : y + oh, x : x + ow] = np.clip(alpha * colour + (1 - alpha) * region, 0, 255).astype(np.uint8)
    ys, xs = np.nonzero(small[..., 3] > 127)  # the box is the visible object's
    return [float(x + xs.min()), float(y + ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)]


def _write_coco(root: Path, images: list[tuple[np.ndarray, list[tuple[str, list[float]]]]], tags: list[str]) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    coco: dict[str, list[dict[str, object]]] = {
        "images": [], "annotations": [], "categories": [{"id": i + 1, "name": t} for i, t in enumerate(tags)]}
    for i, (image, boxes) in enumerate(images):
        h, w = image.shape[:2]
        cv2.imwrite(str(root / f"{i:03d}.jpg"), image, [cv2.IMWRITE_JPEG_QUALITY, 92])
        coco["images"].append({"id": i + 1, "file_name": f"{i:03d}.jpg", "width": w, "height": h})
        for tag, box in boxes:
            coco["annotations"].append({"id": len(coco["annotations"]) + 1, "image_id": i + 1,
                                        "category_id": tags.index(tag) + 1, "bbox": box,
                                        "area": box[2] * box[3], "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps(coco))
    return root


def build_set(root: Path, per_tag: int, backgrounds: tuple[str, ...], seed: int) -> Path:
    rng = np.random.default_rng(seed)
    things, photos = objects(), [_photo(b) for b in backgrounds]
    images = []
    for tag, thing in things.items():
        for _ in range(per_tag):
            canvas = _background(photos[int(rng.integers(len(photos)))], rng)
            images.append((canvas, [(tag, _paste(canvas, thing, rng))]))
    order = rng.permutation(len(images))
    return _write_coco(root, [images[i] for i in order], sorted(things))


def build_mosaics(source: Path, root: Path, count: int, seed: int) -> Path:
    """2x2 mosaics of the held-out photos, each at half size: four smaller objects a photo."""
    rng = np.random.default_rng(seed)
    coco = json.loads((source / "annotations.json").read_text())
    tags = [c["name"] for c in sorted(coco["categories"], key=lambda c: c["id"])]
    boxes: dict[int, list[tuple[str, list[float]]]] = {}
    for a in coco["annotations"]:
        boxes.setdefault(a["image_id"], []).append((tags[a["category_id"] - 1], a["bbox"]))
    photos = coco["images"]
    images = []
    for _ in range(count):
        canvas = np.zeros((HEIGHT, WIDTH, 3), np.uint8)
        found: list[tuple[str, list[float]]] = []
        for k, i in enumerate(rng.choice(len(photos), 4, replace=False)):
            photo = cv2.imread(str(source / photos[i]["file_name"]))
            x0, y0 = (k % 2) * WIDTH // 2, (k // 2) * HEIGHT // 2
            canvas[y0 : y0 + HEIGHT // 2, x0 : x0 + WIDTH // 2] = cv2.resize(photo, (WIDTH // 2, HEIGHT // 2),
                                                                            interpolation=cv2.INTER_AREA)
            found += [(t, [x0 + b[0] / 2, y0 + b[1] / 2, b[2] / 2, b[3] / 2]) for t, b in boxes[photos[i]["id"]]]
        images.append((canvas, found))
    return _write_coco(root, images, tags)


def _score(folder: Path, dataset: Path) -> DetectionMetrics:
    metrics = evaluate(Predictor.load(folder), load_dataset(dataset))
    assert isinstance(metrics, DetectionMetrics)
    return metrics


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", type=float, default=Recipe().budget_s, help="seconds of training steps")
    parser.add_argument("--size", type=int, default=Recipe().size)
    parser.add_argument("--views", type=int, default=Recipe().views)
    parser.add_argument("--steps", type=int, help="a fixed number of steps instead of the budget")
    parser.add_argument("--repeat", type=int, default=1, help="train this many times (seeds 0, 1, ...)")
    parser.add_argument("--keep", type=Path, help="keep the sets and the last export here")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or Path(tmp)
        train_set = build_set(work / "train", 15, TRAIN_BACKGROUNDS, seed=1)
        held_out = build_set(work / "held-out", 10, HELD_OUT_BACKGROUNDS, seed=2)
        mosaics = build_mosaics(held_out, work / "mosaics", 10, seed=3)
        rows = []
        for seed in range(args.repeat):
            dataset = load_dataset(train_set)
            recipe = Recipe(size=args.size, views=args.views, budget_s=args.budget, steps=args.steps)
            start, cpu = time.perf_counter(), time.process_time()
            result = train_detector(dataset, seed=seed, recipe=recipe)
            seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
            folder = write_export(work / f"export-{seed}", result.model, result.labels, result.metadata,
                                  domain=result.domain)
            plain, mixed = _score(folder, held_out), _score(folder, mosaics)
            assert isinstance(result.metrics, DetectionMetrics)
            rows.append((seed, seconds, cpu, result.metrics.map50, plain, mixed, result.recipe))
    print(f"machine: {machine()}; Python {platform.python_version()}")
    print("set: 2 tags x 15 photos (one object each) for training, of which the trainer holds out 20%; "
          "20 held-out photos on other backgrounds; 10 mosaics of 4 held-out photos\n")
    print("| seed | training, wall (s) | training, CPU (s) | mAP@0.5 validation split | mAP@0.5 held-out | "
          "mAP@0.5 mosaics | AP held-out (cat / cup) | AP mosaics (cat / cup) |")
    print("|---|---|---|---|---|---|---|---|")
    for seed, seconds, cpu, val, plain, mixed, _ in rows:
        ap = lambda m: " / ".join(f"{100 * a:.1f}" for _, a in m.per_tag)  # noqa: E731
        print(f"| {seed} | {seconds:.0f} | {cpu:.0f} | {100 * val:.1f}% | {100 * plain.map50:.1f}% | "
              f"{100 * mixed.map50:.1f}% | {ap(plain)} | {ap(mixed)} |")
    print(f"\nrecipe: {rows[-1][6]}; load average while it ran: {os.getloadavg()[0]:.1f}")
    print(f"\nheld-out photos, last run:\n{rows[-1][4].table()}\n\nmosaics, last run:\n{rows[-1][5].table()}")


if __name__ == "__main__":
    main()
