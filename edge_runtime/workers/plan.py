"""How many camera worker processes to run, which cameras each one takes, and how many
onnxruntime threads each session gets.

    plan = plan_workers("auto", ["door", "yard"], cores=8)
    plan.groups        # (("door",), ("yard",)): one process per camera
    plan.threads       # 4 intra-op threads per worker session
    plan.in_process    # False

`workers: 0` keeps every camera in the server process (one shared session, the pipeline
of pipeline.py). `auto` does that too with at most one camera or on one or two cores,
where a process of its own gains nothing and costs a copy of every frame
(docs/benchmarks.md); otherwise one worker per camera, up to one per core, cameras
dealt round-robin when there are more cameras than cores. A number asks for that many
workers (at most one per camera).

Threads are chosen so the sessions together fill the cores and no more: each worker's
session gets cores // workers (at least 1) intra-op threads, unless `model.threads` sets
them; a single worker leaves one core to capture, as the in-process pipeline does.
Capture and decoding run on threads of their own beside the session; with one worker
per core they share its core.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Workers = int | Literal["auto"]
AUTO_MIN_CORES = 3  # below this, auto keeps cameras in the server process


@dataclass(frozen=True)
class WorkerPlan:
    groups: tuple[tuple[str, ...], ...]  # camera ids per worker process; empty: in-process
    threads: int  # intra-op threads of each worker's session (0: onnxruntime decides)
    upload_threads: int  # intra-op threads of the server's own session (uploads; every camera when in-process)
    cores: int

    @property
    def in_process(self) -> bool:
        return not self.groups

    def describe(self) -> str:
        if self.in_process:
            return f"cameras in the server process ({self.cores} cores)"
        return (f"{len(self.groups)} camera worker processes, {self.threads} onnxruntime threads each "
                f"({self.cores} cores)")


def in_process_threads(configured: int, cameras: int, cores: int) -> int:
    """Today's rule for one process: all cores, but one is left to capture when cameras run."""
    if configured or not cameras:
        return configured
    return max(1, cores - 1)


def plan_workers(workers: Workers, cameras: Sequence[str], cores: int | None = None,
                 threads: int = 0) -> WorkerPlan:
    cores = max(1, cores or os.cpu_count() or 1)
    if workers == "auto":
        count = 0 if len(cameras) <= 1 or cores < AUTO_MIN_CORES else min(len(cameras), cores)
    else:
        count = min(workers, len(cameras))
    if count <= 0:
        return WorkerPlan((), 0, in_process_threads(threads, len(cameras), cores), cores)
    groups = tuple(tuple(cameras[i::count]) for i in range(count))
    # one worker is one process with cameras: it leaves a core to capture, as in-process does
    per_worker = threads or (in_process_threads(0, 1, cores) if count == 1 else max(1, cores // count))
    return WorkerPlan(groups, per_worker, threads or per_worker, cores)
