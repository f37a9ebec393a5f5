"""One table: the camera loop against the anchors, FP32 and INT8, with and without an
event-stream client, as ratios of this machine's limit measured in the same round; and
the CPU that `serve` uses on a static scene with scene-change gating off and on.

    python scripts/bench_loops.py [MODEL] [--seconds 10] [--rounds 3] [--int8 DIR]

The limit for a model is min(bare inference rate, cores / CPU seconds per frame of
decode + preprocess + inference): what perfect overlap of capture and inference reaches.
Both halves take the best the session can do: the bare rate is the faster of one run
on every core and one single-thread run per core at once, and the inference CPU is the
cheaper of the two (one thread: no time spent waiting for other threads). The project's
loop is `edge-runtime serve` on a looped 1280x720 file, counted by the server itself
(/metrics), with serve's defaults (every tag in every result). The machine is noisy, so
every round measures the limit and then each loop, and the table gives the median over
rounds of each loop's rate and of its ratio to that round's limit. Without --int8, an
INT8 export of MODEL is made first with `edge-runtime quantize`, calibrated on the clip.
The anchors are scripts/anchor_loops.py.

    python scripts/bench_loops.py --mjpeg [--rounds 3] [--seconds 10] [--baseline CHECKOUT]

The cheap case only: a 1280x720 MJPEG clip (.avi) and two models, the demo and a small
CNN (tests/models.py `small_cnn`) whose run costs about as much as decoding a frame. For
each, in every round: the limit, then serve without and with one /events client, each
counted by the server and compared with that round's limit, and the process's CPU per
frame beside decode, preprocessing and inference measured alone; what is left over is the
loop's own cost. `--baseline` runs serve from another checkout of this project too, in the
same rounds (before and after a change, on the same machine at the same time).
"""

from __future__ import annotations

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path

import cv2
import httpx
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))  # tests.models builds the small model
from anchor_loops import LOOPS
from bench_pipeline import DEMO, SIZE, cpu_per_frame, start_server, write_clip

from edge_runtime.model.bench import machine
from edge_runtime.model.predictor import Predictor

PROCESSED = re.compile(r'^edge_frames_processed_total\{camera="(\w+)"\} ([0-9.e+]+)$', re.M)
SKIPPED = re.compile(r'^edge_frames_skipped_total\{camera="(\w+)"\} ([0-9.e+]+)$', re.M)


def parallel_rate(predictor: Predictor, tensor: np.ndarray, runs: int, seconds: float = 3.0) -> float:
    """Runs per second with `runs` threads calling session.run at once."""
    spec = predictor.spec
    feeds, names = {spec.input.name: tensor}, list(spec.output_names)
    predictor.model.session.run(names, feeds)
    count = [0] * runs
    deadline = time.perf_counter() + seconds

    def work(i: int) -> None:
        while time.perf_counter() < deadline:
            predictor.model.session.run(names, feeds)
            count[i] += 1

    threads = [threading.Thread(target=work, args=(i,)) for i in range(runs)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(count) / (time.perf_counter() - start)


def limit_and_stages(model: Path, clip: Path) -> tuple[float, dict[str, float]]:
    """The limit, and the CPU seconds per frame of the cheapest way to run each stage alone."""
    cores = os.cpu_count() or 1
    every_core, one_thread = Predictor.load(model), Predictor.load(model, intra_op_threads=1, runs=cores)
    stages = [cpu_per_frame(p, clip) for p in (every_core, one_thread)]
    tensor = every_core.prepare(np.zeros((SIZE[1], SIZE[0], 3), np.uint8)).tensor
    bare = max(1 / stages[0]["run_wall"], parallel_rate(one_thread, tensor, cores))
    cheapest = min(stages, key=lambda s: s["decode_cpu"] + s["pre_cpu"] + s["run_cpu"])
    return min(bare, cores / (cheapest["decode_cpu"] + cheapest["pre_cpu"] + cheapest["run_cpu"])), cheapest


def limit(model: Path, clip: Path) -> float:
    return limit_and_stages(model, clip)[0]


def processed(url: str) -> float:
    return sum(float(v) for _, v in PROCESSED.findall(httpx.get(f"{url}/metrics", timeout=10).text))


def served_rate(model: Path, clip: Path, seconds: float, sse: bool, extra: Sequence[str] = ()) -> float:
    """Frames per second the server itself counts, after a warm-up."""
    return served(model, clip, seconds, sse, extra)[0]


def served(model: Path, clip: Path, seconds: float, sse: bool, extra: Sequence[str] = (),
           tree: Path | None = None) -> tuple[float, float]:
    """Frames per second the server itself counts after a warm-up, and the server process's
    CPU seconds per frame meanwhile; serve from `tree` (another checkout) when given."""
    proc, url = start_server([str(model), "--source", f"cam={clip}", "--loop", *extra], tree)
    stop = threading.Event()
    reader = None
    try:
        if sse:
            def read_all() -> None:
                with httpx.stream("GET", f"{url}/events", timeout=None) as r:
                    for _ in r.iter_bytes():
                        if stop.is_set():
                            return

            reader = threading.Thread(target=read_all, daemon=True)
            reader.start()
        time.sleep(5)
        start, cpu0, t0 = processed(url), cpu_seconds(proc.pid), time.perf_counter()
        time.sleep(seconds)
        frames, cpu, elapsed = processed(url) - start, cpu_seconds(proc.pid) - cpu0, time.perf_counter() - t0
        return frames / elapsed, cpu / max(frames, 1.0)
    finally:
        stop.set()
        proc.terminate()
        proc.wait(15)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of a process so far, all its threads."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


def cpu_percent(pid: int, seconds: float) -> float:
    before, t0 = cpu_seconds(pid), time.perf_counter()
    time.sleep(seconds)
    return 100.0 * (cpu_seconds(pid) - before) / (time.perf_counter() - t0)


def static_clip(path: Path, frames: int = 150) -> Path:
    image = cv2.resize(cv2.imread(str(DEMO / "samples" / "coffee.jpg")), SIZE)
    rng = np.random.default_rng(0)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, SIZE)
    for _ in range(frames):  # a still scene with a camera's sensor noise
        noise = rng.normal(0, 2, image.shape)
        writer.write(np.clip(image + noise, 0, 255).astype(np.uint8))
    writer.release()
    return path


def static_cpu(model: Path, clip: Path, seconds: float, gate: bool) -> tuple[float, float]:
    """CPU use of serve (percent of one core) on a still scene paced at 30 fps, and the share of
    frames the gate skipped."""
    config = Path(tempfile.mkdtemp()) / "static.yaml"
    config.write_text(f"cameras:\n  - id: still\n    source: '{clip}'\n    loop: true\n    realtime: true\n"
                      f"    gate:\n      enabled: {str(gate).lower()}\n")
    proc, url = start_server([str(model), "--config", str(config)])
    try:
        time.sleep(5)
        before = httpx.get(f"{url}/metrics", timeout=10).text
        cpu = cpu_percent(proc.pid, seconds)
        after = httpx.get(f"{url}/metrics", timeout=10).text
        ran = sum(float(v) for _, v in PROCESSED.findall(after)) - sum(float(v) for _, v in PROCESSED.findall(before))
        skipped = sum(float(v) for _, v in SKIPPED.findall(after)) - sum(float(v) for _, v in SKIPPED.findall(before))
        return cpu, skipped / max(1.0, ran + skipped)
    finally:
        proc.terminate()
        proc.wait(15)


def first_result_s(model: Path, cache: Path) -> float:
    """Wall time of `edge-runtime predict` on one photo: start-up, model load, first result."""
    env = {**os.environ, "EDGE_RUNTIME_CACHE_DIR": str(cache)}
    start = time.perf_counter()
    photo = DEMO / "samples" / "coffee.jpg"
    subprocess.run([sys.executable, "-m", "edge_runtime.cli", "predict", str(model), str(photo)],
                   check=True, stdout=subprocess.DEVNULL, env=env)
    return time.perf_counter() - start


def startup(model: Path, work: Path, rounds: int = 5) -> tuple[float, float]:
    """Median time to first result with an empty graph cache (cold) and a filled one (warm)."""
    cold, warm = [], []
    for i in range(rounds):
        cache = work / f"cache-{i}"
        cold.append(first_result_s(model, cache))
        warm.append(first_result_s(model, cache))
    return sorted(cold)[rounds // 2], sorted(warm)[rounds // 2]


def quantized(model: Path, clip: Path, folder: Path) -> Path:
    out = folder / "int8"
    subprocess.run([sys.executable, "-m", "edge_runtime.cli", "quantize", str(model), "--calibrate", str(clip),
                    "--out", str(out), "--force", "--max-frames", "100"], check=True, stdout=subprocess.DEVNULL)
    return out


def resize_cpu(calls: int = 300) -> dict[int, tuple[float, float]]:
    """CPU ms per 1280x720 preprocessing resize (to 455x256, the bit-exact bilinear one) with
    OpenCV's pool at 2 threads and at 1: (the calling thread's, every other thread's), calls
    spaced 5 ms apart like a camera's frames, one core's worth of work at a time."""
    from edge_runtime.model.preprocess import INTERPOLATION

    def per_thread() -> dict[int, float]:
        out = {}
        for task in Path("/proc/self/task").iterdir():
            fields = (task / "stat").read_text().rsplit(")", 1)[1].split()
            out[int(task.name)] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        return out

    image = np.random.default_rng(0).integers(0, 256, (SIZE[1], SIZE[0], 3), np.uint8)
    me, before, found = threading.get_native_id(), cv2.getNumThreads(), {}
    try:
        for threads in (2, 1, 2, 1):
            cv2.setNumThreads(threads)
            cv2.resize(image, (455, 256), interpolation=INTERPOLATION)
            start = per_thread()
            for _ in range(calls):
                cv2.resize(image, (455, 256), interpolation=INTERPOLATION)
                time.sleep(0.005)
            end = per_thread()
            caller = (end[me] - start[me]) / calls * 1000
            others = sum(v - start.get(t, 0.0) for t, v in end.items() if t != me) / calls * 1000
            found[threads] = (caller, others)  # the second of the two runs of each
    finally:
        cv2.setNumThreads(before)
    return found


def small_model(folder: Path) -> Path:
    from tests.models import modern_metadata, small_cnn, write_export

    return write_export(folder / "small-cnn", small_cnn(), [f"tag{i}" for i in range(10)], metadata=modern_metadata())


def mjpeg_case(models: Sequence[Path], seconds: float, rounds: int, baseline: Path | None, work: Path) -> None:
    """The cheap case's table: each model's loop against its limit, and the loop's own CPU."""
    clip = write_clip(work / "clip.avi", 300, fourcc="MJPG")
    trees: list[tuple[str, Path | None]] = [("this checkout", None)] + ([("baseline", baseline)] if baseline else [])
    rows = [(model, tree, sse) for model in models for tree in trees for sse in (False, True)]
    limits: dict[Path, list[float]] = {model: [] for model in models}
    alone: dict[Path, list[dict[str, float]]] = {model: [] for model in models}
    rates: dict[tuple[Path, tuple[str, Path | None], bool], list[tuple[float, float, float]]] = {r: [] for r in rows}
    for i in range(rounds):
        for model in models:
            value, stages = limit_and_stages(model, clip)
            limits[model].append(value)
            alone[model].append(stages)
            for tree in (trees if i % 2 == 0 else trees[::-1]):  # alternate which tree goes first
                for sse in (False, True):
                    fps, cpu = served(model, clip, seconds, sse, tree=tree[1])
                    rates[model, tree, sse].append((fps, fps / value, cpu))

    def median(values: Sequence[float]) -> float:
        return statistics.median(values)

    print(f"machine: {machine()}")
    print(f"clip: 1280x720 MJPEG (.avi), looped; medians of {rounds} rounds, each ratio to its own round's limit\n")
    print("| OpenCV's pool | resize CPU ms, calling thread | the pool's other threads | in all |")
    print("|---|---:|---:|---:|")
    for threads, (caller, others) in resize_cpu().items():
        print(f"| {threads} thread{'s' if threads > 1 else ''} | {caller:.2f} | {others:.2f} | {caller + others:.2f} |")
    print()
    print("| model | decode ms | preprocess ms | inference ms | limit frames/s |")
    print("|---|---:|---:|---:|---:|")
    for model in models:
        stage = {k: median([s[k] for s in alone[model]]) * 1000 for k in ("decode_cpu", "pre_cpu", "run_cpu")}
        print(f"| {model.name} | {stage['decode_cpu']:.2f} | {stage['pre_cpu']:.2f} | {stage['run_cpu']:.2f} | "
              f"{median(limits[model]):.1f} |")
    print("\n| model | serve | /events client | frames/s | of the limit | rounds | CPU ms / frame | "
          "the loop's own ms / frame |")
    print("|---|---|---|---:|---:|---|---:|---:|")
    for model, tree, sse in rows:
        runs = rates[model, tree, sse]
        stages = median([s["decode_cpu"] + s["pre_cpu"] + s["run_cpu"] for s in alone[model]]) * 1000
        cpu = median([r[2] for r in runs]) * 1000
        spread = " ".join(f"{r[1]:.2f}" for r in runs)
        print(f"| {model.name} | {tree[0]} | {'yes' if sse else 'no'} | {median([r[0] for r in runs]):.1f} | "
              f"{median([r[1] for r in runs]):.2f} | {spread} | {cpu:.2f} | {cpu - stages:.2f} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, nargs="?", default=DEMO)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--int8", type=Path, help="an INT8 export of MODEL (default: made with quantize)")
    parser.add_argument("--mjpeg", action="store_true", help="only the cheap case: an MJPEG clip, MODEL and a "
                        "small model, the loop's own CPU per frame")
    parser.add_argument("--baseline", type=Path, metavar="CHECKOUT", help="with --mjpeg: also serve from this "
                        "checkout of the project, in the same rounds")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-loops-"))
    if args.mjpeg:
        mjpeg_case([args.model, small_model(work)], args.seconds, args.rounds, args.baseline, work)
        return
    clip = write_clip(work / "clip.mp4", 300)
    int8 = args.int8 or quantized(args.model, clip, work)

    one_run = work / "one-run.yaml"
    one_run.write_text("model:\n  runs: 1\n")
    loops: dict[tuple[str, str], Callable[[], float]] = {}
    for name, anchor in LOOPS.items():
        loops[f"anchor: {name}", "FP32"] = partial(anchor, clip, args.model, args.seconds)
    for flavor, model in (("FP32", args.model), ("INT8", int8)):
        loops["edge-runtime serve", flavor] = partial(served_rate, model, clip, args.seconds, False)
        loops["edge-runtime serve + /events client", flavor] = partial(served_rate, model, clip, args.seconds, True)
        loops["edge-runtime serve, one frame at a time (model.runs: 1)", flavor] = partial(
            served_rate, model, clip, args.seconds, False, ["--config", str(one_run)])
    limits: dict[str, list[float]] = {"FP32": [], "INT8": []}
    rates: dict[tuple[str, str], list[float]] = {key: [] for key in loops}
    ratios: dict[tuple[str, str], list[float]] = {key: [] for key in loops}
    for _ in range(args.rounds):
        for flavor, model in (("FP32", args.model), ("INT8", int8)):
            limits[flavor].append(limit(model, clip))
        for key, run in loops.items():
            rates[key].append(run())
            ratios[key].append(rates[key][-1] / limits[key[1]][-1])

    fp32, int8_limit = statistics.median(limits["FP32"]), statistics.median(limits["INT8"])
    print(f"machine: {machine()}")
    print(f"limit (median of {args.rounds} rounds): FP32 {fp32:.1f} frames/s, INT8 {int8_limit:.1f} frames/s "
          f"(INT8/FP32 {int8_limit / fp32:.2f}x)\n")
    print("| loop | model | frames/s | of the limit |")
    print("|---|---|---:|---:|")
    for key, values in rates.items():
        print(f"| {key[0]} | {key[1]} | {statistics.median(values):.1f} | {statistics.median(ratios[key]):.2f} |")

    cold, warm = startup(args.model, work)
    print("\n| time to first result (`edge-runtime predict`, one photo) | seconds |")
    print("|---|---:|")
    print(f"| cold: empty optimised-graph cache | {cold:.2f} |")
    print(f"| warm: graph from the cache | {warm:.2f} |")

    still = static_clip(work / "still.avi")
    print("\n| static scene, 30 fps | CPU (% of one core) | frames skipped |")
    print("|---|---:|---:|")
    for gate in (False, True):
        cpu, share = static_cpu(args.model, still, args.seconds, gate)
        print(f"| gating {'on' if gate else 'off'} | {cpu:.0f}% | {share:.0%} |")


if __name__ == "__main__":
    main()
