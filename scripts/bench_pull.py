"""Pull a synthetic Custom Vision project from the loopback double; print images/s and peak memory.

    python scripts/bench_pull.py [--images 100000] [--kind detection] [--at 10000,50000]
                                 [--calls-per-second 10] [--tracemalloc] [--json FILE]

The double (tests/cv_double.py) runs in a process of its own and makes each record and
tiny JPEG on the fly, so the memory measured is the pull's alone. Listing calls go through
the tier's quota (10 a second: ~400 calls for 100,000 images); downloads come from the
double's blob route, which, like the service's blob storage, is not counted against it.
A row is printed as the pull passes each size in --at, and one when it is done (the layout
file and project.json written): flat memory means the peak does not grow from row to row.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path
from typing import Any

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from edge_runtime.model.bench import machine  # noqa: E402
from exporter.credentials import Credentials  # noqa: E402
from exporter.pull import Pull, RateLimiter  # noqa: E402
from exporter.sdk_client import SdkClient  # noqa: E402
from tests.cv_double import BASE, DOMAINS, KEY  # noqa: E402
from tests.server_util import free_port  # noqa: E402

KIND_DOMAIN = {"classification": (DOMAINS[1]["id"], "Multiclass"), "multilabel": (DOMAINS[1]["id"], "Multilabel"),
               "detection": (DOMAINS[3]["id"], None)}


def serve_double(port: int, images: int, kind: str) -> None:
    """The double with one synthetic project named "bench", until the process is ended."""
    import uvicorn

    from tests.cv_double import Double, create_double_app

    double = Double(Path("unused.zip"), base_url=f"http://127.0.0.1:{port}", record_downloads=False)
    domain, classification = KIND_DOMAIN[kind]
    pid, _ = double.add_project("bench", domain, classification, [("cup", "Regular"), ("can", "Regular"),
                                                                  ("Negative", "Negative")])
    double.add_synthetic(pid, images, detection=kind == "detection", multilabel=kind == "multilabel")
    uvicorn.run(create_double_app(double), host="127.0.0.1", port=port, log_level="warning", access_log=False)


def rss_mb() -> tuple[float, float]:
    """(now, peak) resident memory of this process in MB."""
    status = Path("/proc/self/status").read_text()
    fields = {line.split(":")[0]: line.split()[1] for line in status.splitlines() if line.startswith("Vm")}
    return int(fields["VmRSS"]) / 1024, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=100_000)
    parser.add_argument("--kind", choices=sorted(KIND_DOMAIN), default="detection")
    parser.add_argument("--at", default="10000,50000", help="sizes at which a row is printed, comma-separated")
    parser.add_argument("--calls-per-second", type=float, default=10.0, help="the tier's quota on listing calls")
    parser.add_argument("--tracemalloc", action="store_true", help="also the Python heap's peak (slower)")
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--out", type=Path, help="pull into this folder (default: a temporary one)")
    args = parser.parse_args()
    marks = sorted(int(n) for n in args.at.split(",") if n and int(n) < args.images)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    double = multiprocessing.get_context("spawn").Process(target=serve_double, args=(port, args.images, args.kind),
                                                          daemon=True)
    double.start()
    deadline = time.monotonic() + 60
    while True:
        try:
            if requests.get(url + BASE + "/domains", headers={"Training-key": KEY}, timeout=2).ok:
                break
        except requests.RequestException:
            pass
        if time.monotonic() > deadline or not double.is_alive():
            raise SystemExit("the double did not start")
        time.sleep(0.1)

    rows: list[dict[str, Any]] = []
    start = time.perf_counter()

    def row(images: int, stage: str) -> None:
        seconds = time.perf_counter() - start
        now, peak = rss_mb()
        heap = tracemalloc.get_traced_memory()[1] / 2**20 if tracemalloc.is_tracing() else None
        rows.append({"images": images, "stage": stage, "seconds": round(seconds, 1),
                     "imagesPerSecond": round(images / seconds, 1), "rssMB": round(now, 1),
                     "peakRssMB": round(peak, 1), "heapPeakMB": None if heap is None else round(heap, 2)})

    def progress(stage: str, done: int, total: int) -> None:
        while marks and done >= marks[0]:
            row(done, "listing + downloads")
            marks.pop(0)

    if args.tracemalloc:
        tracemalloc.start()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            out = args.out or Path(tmp) / "bench"
            client = SdkClient.connect(Credentials(url, KEY), limiter=RateLimiter(args.calls_per_second))
            summary = Pull(client, out, progress).run("bench")
            row(sum(summary.written.values()), "done (layout files written)")
    finally:
        double.terminate()
        double.join(10)

    print(f"edge-export pull of a synthetic {args.kind} project ({args.images} images) from the loopback double, "
          f"{args.calls_per_second:g} listing calls/s")
    print(f"machine: {machine()}")
    print(summary.line())
    print()
    heap = args.tracemalloc
    print(f"{'images':>8}  {'seconds':>8}  {'images/s':>8}  {'RSS MB':>7}  {'peak RSS MB':>11}"
          + ("  heap peak MB" if heap else "") + "  stage")
    for r in rows:
        print(f"{r['images']:>8}  {r['seconds']:>8.1f}  {r['imagesPerSecond']:>8.1f}  {r['rssMB']:>7.1f}  "
              f"{r['peakRssMB']:>11.1f}" + (f"  {r['heapPeakMB']:>12.2f}" if heap else "") + f"  {r['stage']}")
    if args.json:
        args.json.write_text(json.dumps({"summary": summary.line(), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
