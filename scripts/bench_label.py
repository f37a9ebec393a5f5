"""One table: how long the label page's actions take on a real server.

    python scripts/bench_label.py [--saves 200] [--port 18941]

`edge-runtime serve` runs as a process of its own with the built-in demo clip as a camera
and an event store in a temporary folder. One client, as the page is one person: it grabs
SAVES frames from the camera (POST /api/label/grab), saves a label on each (PUT, a new tag),
saves each again over its revision (a correction), lists a page of 50 frames to label, and
fetches each frame's image. The table gives p50 and p99 of each, in milliseconds, with the
machine named.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

from edge_runtime.model.bench import machine

TOKEN = "bench-label-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}


def percentile(values: list[float], q: int) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def timed(action: list[float], call) -> httpx.Response:  # type: ignore[no-untyped-def]
    began = time.perf_counter()
    response = call()
    action.append((time.perf_counter() - began) * 1000)
    response.raise_for_status()
    return response  # type: ignore[no-any-return]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--saves", type=int, default=200)
    parser.add_argument("--port", type=int, default=18941)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-label-"))
    config = work / "edge-runtime.yaml"
    config.write_text(json.dumps({
        "cameras": [{"id": "cam", "source": "demo:", "loop": True}],
        "events": {"store": {"path": str(work / "data"), "min_free_mb": 0}},
        "samples": {"samplers": [{"type": "tags", "tags": ["none-such"]}]},  # a store, and no samples of its own
        "server": {"port": args.port}}))
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config)],
                            env={**os.environ, "EDGE_RUNTIME_TOKEN": TOKEN}, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    times: dict[str, list[float]] = {"grab a frame (POST /api/label/grab)": [], "save a new label (PUT)": [],
                                     "save over its revision (PUT)": [], "list 50 frames (GET /api/label/items)": [],
                                     "the frame's image (GET image.jpg)": []}
    grab, save, resave, listing, image = times.values()
    try:
        with httpx.Client(base_url=url, headers=BEARER, timeout=30) as client:
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    if client.post("/api/label/grab", params={"camera": "cam"}).status_code == 201:
                        break
                except httpx.HTTPError:
                    pass
                time.sleep(0.3)
            model = client.get("/api/label/models").json()["models"][0]["name"]
            ids = []
            for _ in range(args.saves):
                ids.append(timed(grab, lambda: client.post("/api/label/grab", params={"camera": "cam"})).json()["id"])
            for i, sample in enumerate(ids):
                timed(save, lambda s=sample, i=i: client.put(f"/api/label/items/{s}/labels/{model}",
                                                             json={"revision": 0, "tags": [f"tag-{i % 5}"]}))
            for sample in ids:
                timed(resave, lambda s=sample: client.put(f"/api/label/items/{s}/labels/{model}",
                                                          json={"revision": 1, "tags": ["corrected"]}))
            for _ in range(max(20, args.saves // 10)):
                timed(listing, lambda: client.get("/api/label/items", params={"model": model, "limit": 50}))
            for sample in ids:
                timed(image, lambda s=sample: client.get(f"/api/label/items/{s}/image.jpg"))
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    print(f"label actions on {machine()}; one client on loopback, demo camera running, {args.saves} frames\n")
    print(f"| {'action':<40} | {'n':>4} | {'p50 ms':>7} | {'p99 ms':>7} |")
    print(f"|{'-' * 42}|{'-' * 6}|{'-' * 9}|{'-' * 9}|")
    for name, values in times.items():
        print(f"| {name:<40} | {len(values):>4} | {percentile(values, 50):>7.1f} | {percentile(values, 99):>7.1f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
