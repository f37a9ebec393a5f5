"""Benchmark `edge-runtime survey`; prints tables to paste into docs/benchmarks.md.

    PYTHONPATH=. python scripts/bench_survey.py [MODEL] [--images 3] [--rounds 3] [--recall-images 12]

1. Throughput on 20-megapixel (5472x3648) geotagged JPEGs, all in one run on the same
   files: `predict`'s loop (read, decode, predict, one image after another), the survey
   with tiles off and on, with one worker and with one per core, and the tiled work done
   sequentially (decode, then tiles, then the next image) to show what the overlap of
   decoding and inference gains.
2. Recall of tiled against whole-image detection on a generated small-object set:
   2048x1536 photos, each with 8 red squares of 10 to 20 pixels at random places.

MODEL defaults to the small-object detector of tests/test_survey_model.py (a YOLO-layout
export that finds red squares only at native size); any Custom Vision detector works for
part 1.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

from edge_runtime.model.bench import machine
from edge_runtime.model.imageio import read_image
from edge_runtime.model.predictor import Predictor
from edge_runtime.survey.run import SurveyOptions, inference_split, survey
from edge_runtime.survey.tiled import TiledPredictor
from edge_runtime.survey.tiling import TileMode
from tests.survey_util import dji_xmp, geotagged_jpeg, place_squares, terrain, write_detector

BIG = (5472, 3648)  # a 20-megapixel drone camera
RECALL_SIZE = (2048, 1536)
SQUARES_PER_IMAGE = 8


def make_photos(folder: Path, count: int, size: tuple[int, int], seed: int) -> list[list[tuple[int, int, int]]]:
    """Geotagged JPEGs with red squares; returns each photo's squares as (x, y, side)."""
    rng = np.random.default_rng(seed)
    truth = []
    for i in range(count):
        image = terrain(*size, seed=seed + i)
        squares = []
        while len(squares) < SQUARES_PER_IMAGE:
            side = int(rng.integers(10, 21))
            x, y = (int(rng.integers(40, s - 40)) for s in size)
            # apart by more than the test detector's 64-pixel window, which would blend two squares
            if all(math.dist((x, y), (a, b)) > 80 for a, b, _ in squares):
                squares.append((x, y, side))
        for x, y, side in squares:
            place_squares(image, [(x, y)], side)
        geotagged_jpeg(folder / f"IMG_{i:04d}.JPG", image, 47.37 + i * 1e-4, 8.54, xmp=dji_xmp(80, 0))
        truth.append(squares)
    return truth


def timed(count: int, work) -> tuple[float, float]:  # type: ignore[no-untyped-def]
    """(images per second of wall time, CPU seconds per image over all of this process's threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    work()
    return count / (time.perf_counter() - start), (time.process_time() - cpu) / count


def predict_loop(predictor: Predictor, files: list[Path]) -> None:
    for path in files:
        predictor.predict(read_image(path))


def sequential_tiled(predictor: Predictor, files: list[Path]) -> None:
    tiled = TiledPredictor(predictor, TileMode.parse("auto"))
    for path in files:
        tiled.run(tiled.prepare(read_image(path)))


def throughput(model: Path, folder: Path, files: list[Path], out: Path,
               rounds: int) -> list[tuple[str, float, float]]:
    """Medians of `rounds` interleaved rounds (this kind of machine drifts by tens of percent
    within minutes). `predict` and the in-turn loop use every core for onnxruntime, as
    `predict` does; the survey keeps one core for decoding (its default)."""
    cores = os.cpu_count() or 1
    n = len(files)
    everything = Predictor.load(model)
    split = inference_split()
    surveying = Predictor.load(model, intra_op_threads=split.threads, runs=split.runs)
    one_run = Predictor.load(model, intra_op_threads=max(1, cores - 1))  # one batch of tiles at a time

    def run_survey(tiles: str, workers: int, predictor: Predictor = surveying) -> None:
        folder_name = f"{tiles}-{workers}-{predictor.model.runs}"
        survey(predictor, [folder], SurveyOptions(out=out / folder_name, tiles=TileMode.parse(tiles),
                                                  workers=workers, progress=False))

    runs = [
        ("predict (read, decode, predict in turn)", lambda: predict_loop(everything, files)),
        ("survey --tiles off --workers 1", lambda: run_survey("off", 1)),
        (f"survey --tiles off --workers {cores}", lambda: run_survey("off", cores)),
        ("tiled, in turn (decode, then tiles; no overlap)", lambda: sequential_tiled(everything, files)),
        ("survey --tiles auto --workers 1", lambda: run_survey("auto", 1)),
        (f"survey --tiles auto --workers {cores}", lambda: run_survey("auto", cores)),
        (f"survey --tiles auto --workers {cores}, one batch at a time ({max(1, cores - 1)} threads)",
         lambda: run_survey("auto", cores, one_run)),
    ]
    rates: dict[str, list[float]] = {label: [] for label, _ in runs}
    cpu: dict[str, list[float]] = {label: [] for label, _ in runs}
    for _ in range(rounds):
        for label, work in runs:
            rate, seconds = timed(n, work)
            rates[label].append(rate)
            cpu[label].append(seconds)
    return [(label, statistics.median(rates[label]), statistics.median(cpu[label])) for label, _ in runs]


Squares = list[tuple[int, int, int]]


def recall(predictor: Predictor, folder: Path, truth: list[Squares]) -> list[tuple[str, int, int, int]]:
    """(mode, squares found, false or duplicate findings, squares in all) for whole-image and tiled."""
    results = []
    for mode in ("off", "auto"):
        tiled = TiledPredictor(predictor, TileMode.parse(mode))
        found = extra = 0
        for i, squares in enumerate(truth):
            image = read_image(folder / f"IMG_{i:04d}.JPG")
            h, w = image.shape[:2]
            hits = [0] * len(squares)
            for f in tiled.run(tiled.prepare(image)):
                box = f.prediction.bounding_box
                assert box is not None
                cx, cy = (box.left + box.width / 2) * w, (box.top + box.height / 2) * h
                near = [k for k, (x, y, side) in enumerate(squares) if math.dist((cx, cy), (x, y)) <= side / 2]
                if near:
                    hits[near[0]] += 1
                else:
                    extra += 1
            found += sum(1 for hit in hits if hit)
            extra += sum(hit - 1 for hit in hits if hit > 1)
        results.append((mode, found, extra, sum(len(s) for s in truth)))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, help="detector export (default: the test detector)")
    parser.add_argument("--images", type=int, default=3, help="20-megapixel JPEGs to time (default 3)")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds; medians are shown (default 3)")
    parser.add_argument("--recall-images", type=int, default=12, help="photos in the recall set (default 12)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        model = args.model or write_detector(root / "model")
        predictor = Predictor.load(model)
        big, small = root / "big", root / "small"
        big.mkdir()
        small.mkdir()
        make_photos(big, args.images, BIG, seed=100)
        truth = make_photos(small, args.recall_images, RECALL_SIZE, seed=200)
        files = sorted(big.iterdir())
        size_mb = sum(p.stat().st_size for p in files) / len(files) / 1e6
        rows = throughput(model, big, files, root / "out", args.rounds)
        found = recall(predictor, small, truth)

    print(f"machine: {machine()}")
    print(f"onnxruntime {ort.__version__} ({', '.join(predictor.model.providers)}), OpenCV {cv2.__version__}, "
          f"numpy {np.__version__}; survey: {inference_split().runs} batches at once over "
          f"{inference_split().threads} onnxruntime threads, predict: all cores")
    print(f"model: {'the test small-object detector' if args.model is None else args.model} "
          f"({predictor.spec.variant.value}, resize target {predictor.spec.input.target_width})")
    print(f"\n{len(files)} JPEGs of {BIG[0]}x{BIG[1]} ({size_mb:.1f} MB each), medians of {args.rounds} rounds\n")
    base = rows[0][1]
    print("| run | images/s | vs predict | CPU s per image |\n|---|---:|---:|---:|")
    for label, rate, seconds in rows:
        print(f"| {label} | {rate:.2f} | {rate / base:.2f}x | {seconds:.2f} |")
    print(f"\n{len(truth)} photos of {RECALL_SIZE[0]}x{RECALL_SIZE[1]}, {SQUARES_PER_IMAGE} squares of 10-20 px each\n")
    print("| detection | found | recall | false or duplicate |\n|---|---:|---:|---:|")
    for mode, hit, extra, total in found:
        label = "whole image (--tiles off)" if mode == "off" else "tiled (--tiles auto)"
        print(f"| {label} | {hit}/{total} | {hit / total:.2f} | {extra} |")


if __name__ == "__main__":
    main()
