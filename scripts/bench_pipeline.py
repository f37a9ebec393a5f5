"""Benchmark the camera loop and the HTTP server; prints tables to paste into docs/benchmarks.md.

    python scripts/bench_pipeline.py [MODEL] [--frames 300] [--requests 200]

1. Throughput over a 1280x720 video file: the pipeline (grabber thread + inference
   worker) against the sequential loop (read, predict, repeat) and against this
   machine's limit for the same work, measured in the same run:
   limit = min(bare session.run rate, cores / CPU seconds per frame of decode + preprocess
   + inference), which is what perfect overlap of capture and inference would reach.
2. Added latency: capture to published result, with the file paced like a camera.
3. POST /image latency at 1, 8 and 32 concurrent clients against `edge-runtime serve`
   in its own process, from a load generator on loopback.
4. Peak RSS of `edge-runtime serve` on the demo (camera loop, event and MJPEG clients).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import cv2
import httpx

from edge_runtime.capture.camera import Camera
from edge_runtime.capture.sources import open_source
from edge_runtime.model.bench import machine
from edge_runtime.model.postprocess import PostprocessOptions
from edge_runtime.model.predictor import Predictor
from edge_runtime.model.preprocess import preprocess
from edge_runtime.paths import DEMO_MODEL
from edge_runtime.pipeline import Pipeline

DEMO = DEMO_MODEL
SIZE = (1280, 720)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def write_clip(path: Path, frames: int, fourcc: str = "mp4v") -> Path:
    """The bundled samples at 1280x720, each zoomed in over a second of frames; `fourcc`
    "MJPG" (in an .avi) for the cheap source that decodes without reference frames."""
    images = [cv2.imread(str(p)) for p in sorted((DEMO / "samples").glob("*.jpg"))]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*fourcc), 30, SIZE)
    for i in range(frames):
        image = images[(i // 30) % len(images)]
        h, w = image.shape[:2]
        zoom = 1 + 0.2 * (i % 30) / 30
        crop = image[int(h * (1 - 1 / zoom) / 2):, int(w * (1 - 1 / zoom) / 2):]
        writer.write(cv2.resize(crop, SIZE, interpolation=cv2.INTER_LINEAR))
    writer.release()
    return path


def cpu_per_frame(predictor: Predictor, clip: Path) -> dict[str, float]:
    """Wall and CPU seconds of each stage, measured one stage at a time."""
    cap = cv2.VideoCapture(str(clip))
    decode_cpu, pre_cpu, run_cpu, run_wall = [], [], [], []
    spec = predictor.spec
    names = list(spec.output_names)
    while True:
        c0 = time.process_time()
        ok, frame = cap.read()
        if not ok:
            break
        c1 = time.process_time()
        tensor, _ = preprocess(frame, spec.input)
        c2 = time.process_time()
        w0 = time.perf_counter()
        predictor.model.session.run(names, {spec.input.name: tensor})
        w1 = time.perf_counter()
        c3 = time.process_time()
        decode_cpu.append(c1 - c0)
        pre_cpu.append(c2 - c1)
        run_cpu.append(c3 - c2)
        run_wall.append(w1 - w0)
    cap.release()
    return {k: statistics.median(v) for k, v in
            {"decode_cpu": decode_cpu, "pre_cpu": pre_cpu, "run_cpu": run_cpu, "run_wall": run_wall}.items()}


def sequential_fps(predictor: Predictor, clip: Path) -> float:
    cap = cv2.VideoCapture(str(clip))
    count, start = 0, time.perf_counter()
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        predictor.predict(frame)
        count += 1
    cap.release()
    return count / (time.perf_counter() - start)


def pipeline_run(predictor: Predictor, clip: Path, realtime: bool, seconds: float | None = None) -> dict[str, float]:
    results: list = []
    done = threading.Event()
    # a timed run loops the clip (a paced file ends like any other); preprocessing on the grabber, as serve wires it
    camera = Camera("bench", lambda: open_source(str(clip), loop=bool(seconds), realtime=realtime),
                    prepare=predictor.prepare)
    pipeline = Pipeline(predictor, [camera], results.append)
    start = time.perf_counter()
    pipeline.start()
    if seconds:
        done.wait(seconds)
    else:
        while not camera.finished:
            time.sleep(0.01)
        while pipeline.running:
            time.sleep(0.01)
    elapsed = time.perf_counter() - start
    pipeline.stop()
    ages = [r.age_ms for r in results]
    inference = [r.inference_ms for r in results]
    return {"fps": len(results) / elapsed, "frames": len(results), "dropped": camera.stats.dropped,
            "age_p50": statistics.median(ages), "age_p90": pct(ages, 0.9),
            "inference_p50": statistics.median(inference)}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(args: list[str], tree: Path | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`edge-runtime serve ARGS` on a free port, from `tree` (another checkout) when given."""
    port = free_port()
    env = {**os.environ, "XDG_CACHE_HOME": tempfile.mkdtemp()}
    if tree is not None:
        env["PYTHONPATH"] = os.pathsep.join([str(tree), *filter(None, [os.environ.get("PYTHONPATH")])])
    env.pop("EDGE_RUNTIME_TOKEN", None)
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", *args, "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
                            cwd=tree)  # `-m` puts the working folder first on the path
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(url: str, body: bytes, clients: int, requests: int) -> tuple[list[float], int]:
    latencies: list[float] = []
    errors = 0
    async with httpx.AsyncClient(timeout=30, limits=httpx.Limits(max_connections=clients)) as client:
        async def worker(n: int) -> None:
            nonlocal errors
            for _ in range(n):
                start = time.perf_counter()
                r = await client.post(f"{url}/image", content=body)
                latencies.append((time.perf_counter() - start) * 1000)
                if r.status_code != 200:
                    errors += 1
        per = max(1, requests // clients)
        await asyncio.gather(*(worker(per) for _ in range(clients)))
    return latencies, errors


def peak_rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", default=str(DEMO))
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    print(f"machine: {machine()}")
    # (intra-op threads, predictions kept per frame): all tags, as the service answers, and
    # the top 5, which leaves the publisher thread less Python work competing for the GIL.
    configs = [(0, None)] if cores == 1 else [(0, None), (cores - 1, None), (cores - 1, 5)]
    rows: dict[str, list[str]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        clip = write_clip(Path(tmp) / "clip.mp4", args.frames)
        for threads, top_k in configs:
            predictor = Predictor.load(args.model, intra_op_threads=threads,
                                       options=PostprocessOptions(top_k=top_k))
            # Interleaved rounds, medians: a shared machine's speed drifts within minutes.
            rounds = [(cpu_per_frame(predictor, clip), sequential_fps(predictor, clip),
                       pipeline_run(predictor, clip, realtime=False)) for _ in range(args.rounds)]
            stages = {k: statistics.median(r[0][k] for r in rounds) for k in rounds[0][0]}
            per_frame_cpu = stages["decode_cpu"] + stages["pre_cpu"] + stages["run_cpu"]
            limit = min(1 / stages["run_wall"], cores / per_frame_cpu)
            sequential = statistics.median(r[1] for r in rounds)
            piped_fps = statistics.median(r[2]["fps"] for r in rounds)
            spread = sorted(r[2]["fps"] / limit for r in rounds)
            dropped = sum(r[2]["dropped"] for r in rounds)
            column = [
                f"{(stages['decode_cpu'] + stages['pre_cpu']) * 1000:.2f}",
                f"{stages['run_wall'] * 1000:.2f} / {stages['run_cpu'] * 1000:.2f}",
                f"{limit:.1f} (run rate {1 / stages['run_wall']:.1f}, cores/CPU {cores / per_frame_cpu:.1f})",
                f"{sequential:.1f}", f"{piped_fps:.1f}",
                f"{piped_fps / limit:.2f} (rounds {spread[0]:.2f} to {spread[-1]:.2f})",
                f"{dropped:.0f}",
            ]
            label = f"threads {threads or f'0 (all {cores})'}" + (f", top {top_k}" if top_k else ", all tags")
            rows[label] = column
            if threads == 0:
                live = pipeline_run(predictor, clip, realtime=True, seconds=8)
                bare_run = stages["run_wall"]
        print(f"model: {args.model} ({predictor.spec.variant.value}), providers "
              f"{', '.join(predictor.model.providers)}, spinning off")

    labels = ["decode + preprocess CPU ms / frame", "session.run wall / CPU ms", "limit fps",
              "sequential loop fps (the floor)", "pipeline fps", "pipeline / limit", "frames dropped"]
    print(f"\n### Throughput, {SIZE[0]}x{SIZE[1]} video file ({args.frames} frames, mp4v), "
          f"medians of {args.rounds} interleaved rounds\n")
    print("| measure | " + " | ".join(rows) + " |\n|---|" + "---:|" * len(rows))
    for i, label in enumerate(labels):
        print(f"| {label} | " + " | ".join(col[i] for col in rows.values()) + " |")

    print("\n### Latency from capture to published result (file paced at 30 fps like a camera)\n")
    print("| measure | ms |\n|---|---:|")
    print(f"| inference (pre + run + post) p50 | {live['inference_p50']:.2f} |")
    print(f"| capture to publish p50 | {live['age_p50']:.2f} |")
    print(f"| capture to publish p90 | {live['age_p90']:.2f} |")
    print(f"| added beyond one inference, p50 | {live['age_p50'] - live['inference_p50']:.2f} |")

    body = cv2.imencode(".jpg", cv2.imread(str(DEMO / "samples" / "coffee.jpg")))[1].tobytes()
    print(f"\n### POST /image, {len(body) // 1024} KB JPEG (600x400), server in its own process\n")
    print("| response | clients | requests | p50 ms | p99 ms | req/s | errors |\n"
          "|---|---:|---:|---:|---:|---:|---:|")
    for label, extra in (("every tag", []), ("top 5 tags", ["--top-k", "5"])):
        server, url = start_server([args.model, *extra])
        try:
            asyncio.run(load(url, body, 1, 20))  # warm up
            for clients in (1, 8, 32):
                start = time.perf_counter()
                latencies, errors = asyncio.run(load(url, body, clients, args.requests))
                rate = len(latencies) / (time.perf_counter() - start)
                print(f"| {label} | {clients} | {len(latencies)} | {statistics.median(latencies):.2f} | "
                      f"{pct(latencies, 0.99):.2f} | {rate:.1f} | {errors} |")
        finally:
            server.terminate()
            server.wait(10)
    print(f"\nbare session.run p50 for comparison: {bare_run * 1000:.2f} ms")

    demo, url = start_server([])
    try:
        stop = threading.Event()

        def watch(path: str) -> None:
            with httpx.stream("GET", url + path, timeout=None) as r:
                for _ in r.iter_bytes():
                    if stop.is_set():
                        return

        for path in ("/events", "/stream.mjpg"):
            threading.Thread(target=watch, args=(path,), daemon=True).start()
        asyncio.run(load(url, body, 4, 100))
        time.sleep(15)
        stop.set()
        print(f"\n### edge-runtime serve on the demo\n\npeak RSS after 15 s with an event client, an MJPEG "
              f"client and 100 uploads: {peak_rss_mb(demo.pid):.0f} MB")
    finally:
        demo.terminate()
        demo.wait(10)


if __name__ == "__main__":
    main()
