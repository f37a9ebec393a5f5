"""Time the offline trainer on 200 images (scikit-learn's handwritten digits, 20 per digit).

    python scripts/bench_local_trainer.py [--per-class 20]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
from sklearn.datasets import load_digits

from edge_runtime.model.bench import machine
from exporter.dataset import load_dataset
from exporter.local import train_local


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--per-class", type=int, default=20)
    args = parser.parse_args()
    digits = load_digits()
    with tempfile.TemporaryDirectory() as tmp:
        counts: dict[int, int] = {}
        for image, target in zip(digits.images, digits.target, strict=True):
            if counts.get(target, 0) >= args.per_class:
                continue
            counts[target] = counts.get(target, 0) + 1
            folder = Path(tmp) / f"digit{target}"
            folder.mkdir(exist_ok=True)
            big = cv2.resize((image * 16).clip(0, 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
            cv2.imwrite(str(folder / f"{counts[target]}.png"), big)
        start = time.perf_counter()
        dataset = load_dataset(Path(tmp))
        checked = time.perf_counter()
        result = train_local(dataset)
        done = time.perf_counter()
    confusion = np.array(result.metrics.confusion)
    print(f"machine: {machine()}\n")
    print("| measure | value |\n|---|---:|")
    print(f"| images (train + held out) | {result.train_images} + {result.validation_images} |")
    print(f"| dataset check s | {checked - start:.2f} |")
    print(f"| training s (features with augmented copies, head, ONNX model) | {done - checked:.2f} |")
    print(f"| held-out top-1 accuracy | {confusion.trace() / confusion.sum():.3f} |")
    print(f"| held-out AP (mean over tags) | {result.metrics.average_precision:.3f} |")
    print(f"\nrecipe chosen by cross-validation on the training images: {result.recipe}")
    print("\n| candidate | cross-validated accuracy |\n|---|---:|")
    for name, score in result.candidates:
        print(f"| {name} | {score:.3f} |")


if __name__ == "__main__":
    main()
