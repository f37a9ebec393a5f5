"""Frames/s and busy cores of `edge-runtime serve` with N cameras, in-process or in worker
processes, against N separate single-camera servers; prints a table for docs/benchmarks.md.

    python scripts/bench_scale.py --cameras 1 2 --workers 0 2 [--separate] [--uploads 40] [--rounds 3]
    python scripts/bench_scale.py --cameras 1 2 4 8 --workers 0 auto --separate --seconds 30   # a 16-core box

Each camera reads the same 1280x720 MJPEG file in a loop as fast as the model takes frames
(no pacing, so nothing is dropped and frames/s is the throughput), with the demo model and
`--top-k 5` unless told otherwise. After a warm-up the script counts frames processed
(from /metrics) and CPU seconds of the server and every process under it (from /proc)
over `--seconds`: busy cores = CPU seconds / wall seconds. `--separate` also runs one
server per camera (in-process, cores/N threads each) at once: the "N separate
processes" reference that worker processes should come close to. `--uploads K` times K
POST /image requests from one client while the cameras run (p50), for the uploads'
own session.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import numpy as np

from edge_runtime.model.bench import machine
from edge_runtime.workers.plan import plan_workers

ROOT = Path(__file__).resolve().parent.parent
SAMPLE = ROOT / "edge_runtime" / "demo" / "samples" / "coffee.jpg"
TICK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_clip(path: Path, frames: int, size: tuple[int, int]) -> Path:
    """An MJPEG file of moving content, so decoding is real work."""
    base = cv2.resize(cv2.imread(str(SAMPLE)), size)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, size)
    for i in range(frames):
        writer.write(np.roll(base, i * 8, axis=1))
    writer.release()
    return path


def family(pid: int) -> list[int]:
    """pid and every process under it, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
    found, frontier = [pid], [pid]
    while frontier:
        frontier = [p for p, pp in parents.items() if pp in frontier]
        found += frontier
    return found


def cpu_seconds(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])  # utime + stime
    return total / TICK


def rss_mb(pids: list[int]) -> float:
    total = 0
    for pid in pids:
        try:
            total += int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE
        except (OSError, IndexError, ValueError):
            continue
    return total / 2**20


@dataclass
class Server:
    proc: subprocess.Popen[bytes]
    url: str
    cameras: int
    log: Path

    def processed(self) -> float:
        text = httpx.get(f"{self.url}/metrics", timeout=10).text
        return sum(float(line.split()[-1]) for line in text.splitlines()
                   if line.startswith("edge_frames_processed_total{"))

    def ready(self) -> bool:
        try:
            latest = httpx.get(f"{self.url}/predictions/latest", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            return False
        return len(latest) == self.cameras if self.cameras > 1 else "predictions" in latest

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


def start(model: str, clip: Path, cameras: int, workers: str, threads: int, top_k: int, tmp: Path) -> Server:
    port = free_port()
    config = {
        "model": {"path": model, "top_k": top_k, "threads": threads},
        "workers": workers if workers == "auto" else int(workers),
        "cameras": [{"id": f"cam{i}", "source": str(clip), "loop": True} for i in range(cameras)],
        "server": {"port": port},
        "log": {"level": "warning"},
    }
    path = tmp / f"config-{port}.yaml"
    path.write_text(json.dumps(config))
    env = {k: v for k, v in os.environ.items() if k != "EDGE_RUNTIME_TOKEN"}
    log = path.with_suffix(".log")
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(path)],
                                stdout=out, stderr=subprocess.STDOUT, env=env)
    return Server(proc, f"http://127.0.0.1:{port}", cameras, log)


def measure(servers: list[Server], warm_s: float, seconds: float, uploads: int) -> dict[str, float]:
    deadline = time.monotonic() + 180
    while not all(s.ready() for s in servers):
        if time.monotonic() > deadline or any(s.proc.poll() is not None for s in servers):
            tails = "\n".join(s.log.read_text(errors="replace")[-2000:] for s in servers)
            raise RuntimeError(f"a server did not start:\n{tails}")
        time.sleep(0.2)
    time.sleep(warm_s)
    pids = [p for s in servers for p in family(s.proc.pid)]
    frames0, cpu0, t0 = sum(s.processed() for s in servers), cpu_seconds(pids), time.monotonic()
    time.sleep(seconds)
    frames1, cpu1, t1 = sum(s.processed() for s in servers), cpu_seconds(pids), time.monotonic()
    out = {"fps": (frames1 - frames0) / (t1 - t0), "cores": (cpu1 - cpu0) / (t1 - t0), "rss": rss_mb(pids),
           "processes": len(pids)}
    if uploads:
        body = SAMPLE.read_bytes()
        times = []
        with httpx.Client(timeout=30) as client:
            for _ in range(uploads):
                began = time.perf_counter()
                client.post(f"{servers[0].url}/image", content=body).raise_for_status()
                times.append((time.perf_counter() - began) * 1000)
        out["upload_p50"] = statistics.median(times)
    return out


def row(label: str, cameras: int, workers: str, m: dict[str, float]) -> str:
    upload = f"{m['upload_p50']:.1f}" if "upload_p50" in m else "-"
    return (f"| {label} | {cameras} | {workers} | {m['fps']:.1f} | {m['cores']:.2f} | {m['rss']:.0f} "
            f"({int(m['processes'])}) | {upload} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cameras", type=int, nargs="+", default=[1, 2], help="camera counts to run")
    parser.add_argument("--workers", nargs="+", default=["0", "auto"],
                        help="workers settings to compare: 0 (in-process), auto or a number")
    parser.add_argument("--separate", action="store_true", help="also run one server per camera, side by side")
    parser.add_argument("--model", default="demo")
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--threads", type=int, default=0, help="model.threads (0: the plan decides)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warm", type=float, default=3.0, help="seconds after the first results")
    parser.add_argument("--uploads", type=int, default=0, help="time this many POST /image from one client")
    parser.add_argument("--size", default="1280x720")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; medians are printed")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))
    cores = os.cpu_count() or 1

    setups: list[tuple[str, int, str, int]] = []  # label, cameras, workers, servers (1, or one per camera)
    for n in args.cameras:
        for workers in args.workers:
            plan = plan_workers(workers if workers == "auto" else int(workers), [f"cam{i}" for i in range(n)],
                                threads=args.threads)
            label = "1 process" if plan.in_process else f"{len(plan.groups)} workers x {plan.threads} threads"
            setups.append((label, n, workers, 1))
        if args.separate and n > 1:
            setups.append((f"{n} separate servers, {max(1, cores // n)} threads each", n, "0", n))

    runs: dict[int, list[dict[str, float]]] = {i: [] for i in range(len(setups))}
    load_before = Path("/proc/loadavg").read_text().split()[0]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        clip = write_clip(tmp / "clip.avi", 120, (width, height))
        for _ in range(args.rounds):  # rounds interleave the setups, so that drift hits them alike
            for i, (_label, n, workers, count) in enumerate(setups):
                if count == 1:
                    servers = [start(args.model, clip, n, workers, args.threads, args.top_k, tmp)]
                else:
                    servers = [start(args.model, clip, 1, "0", max(1, cores // n), args.top_k, tmp)
                               for _ in range(count)]
                try:
                    runs[i].append(measure(servers, args.warm, args.seconds, args.uploads))
                finally:
                    for s in servers:
                        s.stop()
    load_after = Path("/proc/loadavg").read_text().split()[0]
    print(f"{machine()}; load average {load_before} before, {load_after} after")
    print(f"model {args.model}, top-k {args.top_k}, {width}x{height} MJPEG file; medians of {args.rounds} "
          f"interleaved rounds of {args.seconds:g} s after {args.warm:g} s of warm-up\n")
    print("| setup | cameras | workers | frames/s | busy cores | RSS MB (processes) | upload p50 ms |")
    print("|---|---:|---|---:|---:|---:|---:|")
    for i, (label, n, workers, _count) in enumerate(setups):
        median = {key: statistics.median(r[key] for r in runs[i]) for key in runs[i][0]}
        print(row(label, n, workers, median))


if __name__ == "__main__":
    main()
