"""One table: what training a candidate on the device costs, and what it costs the camera.

    python scripts/bench_retrain.py [--base 20] [--new 50] [--fps 10] [--quiet-s 20]

A model store holds v1 of "shelf", trained by `edge-export train` on BASE images per tag
(red, green). A server (the real app under uvicorn, its camera in a worker process as
`serve` runs it) watches a real OpenCV clip looped at FPS frames per second with that
model. NEW frames (red, green and a third tag, blue, in turn) are kept as samples in the
real event store and labelled there, as the label page saves them; the base set is the
name's base dataset (STORE/shelf/dataset). After QUIET_S seconds of the camera alone, a
candidate is trained through POST /api/models/shelf/candidates from what export_dataset
writes (the base set and the labels not held out) and compared on the held-out labels
(the newest models.retrain.held_out share). The table gives the training and comparison
times and the camera's frames per second without and during the training.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import httpx
import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime.config import load_settings  # noqa: E402
from edge_runtime.serve import build_services  # noqa: E402
from edge_runtime.server import create_app  # noqa: E402
from tests.retrain_util import BEARER, TOKEN, base_bundle, label_in_store, store_with  # noqa: E402
from tests.server_util import running  # noqa: E402


def clip(path: Path, fps: float, frames: int = 100) -> Path:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (320, 240))
    rng = np.random.default_rng(1)
    for i in range(frames):
        image = rng.integers(0, 256, (240, 320, 3), dtype=np.uint8)
        image[..., 2 if i % 2 else 1] = 255
        writer.write(image)
    writer.release()
    return path


def fps(url: str) -> float:
    cams = httpx.get(f"{url}/cameras", headers=BEARER, timeout=10).json()
    return float(cams[0]["fps"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", type=int, default=20, help="base images per tag")
    parser.add_argument("--new", type=int, default=50, help="new labels (three tags in turn)")
    parser.add_argument("--fps", type=float, default=10.0, help="the camera's rate")
    parser.add_argument("--quiet-s", type=float, default=20.0, help="seconds of the camera alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    try:
        bundle = base_bundle(work / "base", args.base)
        store = store_with(bundle, work / "models", base=work / "base" / "base")
        label_in_store(work / "events", args.new)  # through the event store's own API
        video = clip(work / "clip.avi", args.fps)
        settings = load_settings(env={}, overrides={
            "models": {"path": str(store)}, "events": {"store": {"path": str(work / "events"), "min_free_mb": 0}},
            "cameras": [{"id": "cam", "source": str(video), "loop": True, "realtime": True, "max_fps": args.fps,
                         "model": "shelf"}]})
        app = create_app(build_services(settings, env={"EDGE_RUNTIME_TOKEN": TOKEN}))
        with running(app) as url:
            time.sleep(5)  # the worker starts and its rate settles
            quiet = []
            end = time.monotonic() + args.quiet_s
            while time.monotonic() < end:
                time.sleep(1)
                quiet.append(fps(url))
            started = time.monotonic()
            job = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30).json()
            during, phases = [], {}
            while True:
                time.sleep(1)
                during.append(fps(url))
                body = httpx.get(f"{url}/api/models/shelf/candidates/{job['id']}", headers=BEARER, timeout=10).json()
                phases.setdefault(body["phase"], time.monotonic())
                if body["state"] not in ("training", "comparing"):
                    break
            done = time.monotonic()
        if body["state"] != "ready":
            raise SystemExit(f"the training failed: {body['error']}")
        train_s = phases.get("compare", done) - started
        compare_s = done - phases.get("compare", done)
        machine = f"{platform.machine()}, {os.cpu_count()} cores, {platform.processor() or platform.system()}"
        print(f"machine: {machine}; base {args.base} per tag x2, {args.new} new labels in the event store, "
              f"{body['trainImages']} training images, {body['heldOutImages']} held out; camera at {args.fps:g} fps")
        print("| measure | value |")
        print("|---|---|")
        print(f"| training (edge-export train, child at nice 10) | {train_s:.1f} s |")
        print(f"| comparison (edge-export compare, both versions) | {compare_s:.1f} s |")
        print(f"| camera fps without training (median, min) | {statistics.median(quiet):.2f}, {min(quiet):.2f} |")
        print(f"| camera fps during training (median, min) | {statistics.median(during):.2f}, {min(during):.2f} |")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
