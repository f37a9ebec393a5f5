"""One table: what a hot swap costs the requests running through it.

    python scripts/bench_swap.py [--clients 32] [--seconds 60] [--every 10] [--swap beside|unload-first]

`edge-runtime serve` runs as a process of its own over a model store holding the demo
model, with one camera (the built-in demo clip) and CLIENTS upload clients posting a photo
to the Prediction API route as fast as they are answered. After a quiet third of the
run, a new version (the demo model under a new iteration id) is PUT to /api/models every
EVERY seconds. The table gives failed requests, p50/p99 latency before and during the
swaps, the time from the end of each upload to the first answer from the new version
(and the PUT's own time, which includes the load, warm-up and verification), and the
server's peak resident memory against its memory before the first swap.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import zipfile
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "edge_runtime" / "demo"
PHOTO = (DEMO / "samples" / "coffee.jpg").read_bytes()
TOKEN = "bench-swap-token-0123456789abcdef"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
ROUTE = "/customvision/v3.1/prediction/bench/classify/iterations/demo/image"


def version_zip(work: Path, n: int) -> Path:
    folder = work / f"v{n}"
    shutil.copytree(DEMO, folder, ignore=shutil.ignore_patterns("samples", "README.md"))
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = f"00000000-0000-0000-0000-{n:012d}"
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    out = work / f"v{n}.zip"
    with zipfile.ZipFile(out, "w") as zf:
        for path in sorted(folder.iterdir()):
            zf.write(path, path.name)
    return out


def rss_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


class Clients:
    def __init__(self, url: str, count: int) -> None:
        self.url, self.stop = url, threading.Event()
        self.samples: list[tuple[float, float, int, str]] = []  # start, seconds, status, iteration
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self.run, daemon=True) for _ in range(count)]

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=BEARER, timeout=60) as http:
            while not self.stop.is_set():
                began = time.monotonic()
                try:
                    r = http.post(ROUTE, content=PHOTO)
                    status, iteration = r.status_code, r.json().get("iteration", "") if r.status_code == 200 else ""
                except httpx.HTTPError:
                    status, iteration = 0, ""
                with self.lock:
                    self.samples.append((began, time.monotonic() - began, status, iteration))


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100)[q - 1] if len(values) > 1 else (values[0] if values else 0.0)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--every", type=float, default=10.0)
    parser.add_argument("--swap", choices=["beside", "unload-first"], default="beside")
    parser.add_argument("--port", type=int, default=18931)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-swap-"))
    store = work / "models"
    subprocess.run([sys.executable, "-m", "edge_runtime.cli", "publish", str(version_zip(work, 1)), "--name", "demo",
                    "--models", str(store)], check=True, capture_output=True)
    config = work / "edge-runtime.yaml"
    config.write_text(json.dumps({"models": {"path": str(store), "swap": args.swap},
                                  "cameras": [{"id": "cam", "source": "demo:", "loop": True}],
                                  "server": {"port": args.port, "max_connections": 256}}))
    env = {**os.environ, "EDGE_RUNTIME_TOKEN": TOKEN}
    log = (work / "serve.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config)],
                            env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{args.port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        clients = Clients(url, args.clients)
        for t in clients.threads:
            t.start()
        start = time.monotonic()
        quiet_until = start + args.seconds / 3
        time.sleep(max(0.0, quiet_until - time.monotonic()))
        rss_before = rss_kb(proc.pid, "VmRSS")
        swaps: list[tuple[float, float, str]] = []  # upload end, PUT seconds, iteration
        n = 1
        while time.monotonic() < start + args.seconds:
            n += 1
            data = version_zip(work, n).read_bytes()
            began = time.monotonic()
            r = httpx.put(f"{url}/api/models/demo", content=data, headers=BEARER, timeout=120)
            if r.status_code != 201:
                print(f"PUT v{n}: {r.status_code} {r.text}", file=sys.stderr)
            swaps.append((began, time.monotonic() - began, f"00000000-0000-0000-0000-{n:012d}"))
            time.sleep(max(0.0, began + args.every - time.monotonic()))
        clients.stop.set()
        for t in clients.threads:
            t.join(60)
        peak = rss_kb(proc.pid, "VmHWM")
    finally:
        proc.terminate()
        proc.wait(15)
        log.close()
    samples = clients.samples
    before = [s[1] for s in samples if s[0] < quiet_until]
    during = [s[1] for s in samples if s[0] >= quiet_until]
    failed = sum(1 for s in samples if s[2] != 200)
    to_answer = []
    for began, _, iteration in swaps:  # loopback: the upload ends as the PUT begins, to within a millisecond
        first = min((s[0] + s[1] for s in samples if s[3] == iteration), default=None)
        if first is not None:
            to_answer.append(first - began)
    cpus = os.cpu_count()
    print(f"hot swap, {args.swap}: {args.clients} upload clients + 1 camera, a new version every {args.every:g} s "
          f"({len(swaps)} swaps) on {cpus} cores")
    print("| figure | value |\n|---|---|")
    print(f"| requests (failed) | {len(samples)} ({failed}) |")
    print(f"| p50 / p99 before swaps | {1000 * percentile(before, 50):.0f} / {1000 * percentile(before, 99):.0f} ms |")
    print(f"| p50 / p99 during swaps | {1000 * percentile(during, 50):.0f} / {1000 * percentile(during, 99):.0f} ms |")
    if to_answer:
        print(f"| upload end to the new version answering: median / worst | {statistics.median(to_answer):.2f} / "
              f"{max(to_answer):.2f} s |")
    print(f"| PUT (load, warm-up, verify, swap): median | {statistics.median([s[1] for s in swaps]):.2f} s |")
    print(f"| RSS before swaps / peak | {rss_before / 1024:.0f} / {peak / 1024:.0f} MB |")
    shutil.rmtree(work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
