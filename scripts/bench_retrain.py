"""One table: what training a candidate on the device costs, and what it costs the camera.

    python scripts/bench_retrain.py [--base 20] [--new 50] [--fps 10] [--quiet-s 20]

A model store holds v1 of "shelf", trained by `edge-export train` on BASE images per tag
(red, green). A server (the real app under uvicorn, its camera in a worker process as
`serve` runs it) watches a real OpenCV clip looped at FPS frames per second with that
model. After QUIET_S seconds of the camera alone, a candidate is trained through
POST /api/models/shelf/candidates from the base set plus NEW new labels (a third tag among
them) and compared on held-out frames. The table gives the training and comparison times
and the camera's frames per second without and during the training.
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
from tests.datasets import noise_dataset  # noqa: E402
from tests.retrain_util import BEARER, TOKEN, base_bundle, store_with  # noqa: E402
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
    parser.add_argument("--new", type=int, default=50, help="new labels (in three tags)")
    parser.add_argument("--fps", type=float, default=10.0, help="the camera's rate")
    parser.add_argument("--quiet-s", type=float, default=20.0, help="seconds of the camera alone")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-retrain-"))
    try:
        bundle = base_bundle(work / "base", args.base)
        pair = work / "pair"
        shutil.copytree(work / "base" / "base", pair / "train")  # the base set, plus the new labels
        per_tag = max(1, args.new // 3)
        noise_dataset(work / "new", per_tag, ("red", "green", "blue"))
        for tag in ("red", "green", "blue"):
            (pair / "train" / tag).mkdir(parents=True, exist_ok=True)
            for f in (work / "new" / tag).iterdir():
                shutil.copy(f, pair / "train" / tag / f"new-{f.name}")
        noise_dataset(pair / "held_out", max(3, per_tag // 4), ("red", "green", "blue"))
        store = store_with(bundle, work / "models", pair)
        video = clip(work / "clip.avi", args.fps)
        settings = load_settings(env={}, overrides={
            "models": {"path": str(store)}, "events": {"store": {"path": str(work / "events")}},
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
        print(f"machine: {machine}; base {args.base} per tag x2, {per_tag * 3} new labels, "
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
