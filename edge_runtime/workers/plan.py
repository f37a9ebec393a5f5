"""How many camera worker processes to run, which cameras each one takes, and how the
cores are split among each session's runs.

    plan = plan_workers("auto", ["door", "yard"], cores=8)
    plan.groups        # (("door",), ("yard",)): one process per camera
    plan.runs          # 2 frames inferred at once in each worker
    plan.threads       # over 3 intra-op threads (the session's pool, which both runs join)

`workers: 0` keeps every camera in the server process (one shared session, the pipeline
of pipeline.py). `auto` does that too with at most one camera or on one or two cores,
where a process of its own gains nothing and costs a copy of every frame
(docs/benchmarks.md); otherwise one worker per camera, up to one per core, cameras
dealt round-robin when there are more cameras than cores. A number asks for that many
workers (at most one per camera).

Each process's cameras get the cores of that process (all of them in-process, cores //
workers otherwise): up to two frames per camera are inferred at once (`runs`, at most
one per core), and the session's intra-op pool, which every running call joins, gets the
rest of the cores (`threads`). Two frames in flight keep every core busy where one run's
threads would wait for each other at every operator, and capture and decoding fill the
gaps: on 2 cores, two one-thread runs beat one run on one or on two threads
(docs/benchmarks.md). `model.runs` and `model.threads` override either half. Without
cameras (uploads only) the session keeps one run on all cores, the lowest latency for a
single request.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

Workers = int | Literal["auto"]
AUTO_MIN_CORES = 3  # below this, auto keeps cameras in the server process


FRAMES_IN_FLIGHT = 2  # per camera: runs at once, when not configured


@dataclass(frozen=True)
class Split:
    """How one session uses its cores: up to `runs` frames at once, over `threads` intra-op
    threads (0: onnxruntime decides, which is every core). onnxruntime's intra-op pool
    belongs to the session and every running call joins it, so `threads - 1 + runs`
    threads can be busy at once."""

    runs: int
    threads: int

    @property
    def busy(self) -> int:
        return self.threads - 1 + self.runs


def split_cores(cores: int, cameras: int, threads: int = 0, runs: int = 0) -> Split:
    """The runs and threads of one session serving `cameras` on `cores`, so that its busy
    threads fill the cores; nonzero `threads` or `runs` are the configured ones and are kept."""
    if not cameras:
        return Split(runs or 1, threads)
    if not runs:
        runs = max(1, min(FRAMES_IN_FLIGHT * cameras, cores - threads + 1 if threads else cores))
    return Split(runs, threads or max(1, cores - runs + 1))


@dataclass(frozen=True)
class WorkerPlan:
    groups: tuple[tuple[str, ...], ...]  # camera ids per worker process; empty: in-process
    worker: Split  # each worker's session
    server: Split  # the server's own session: uploads, and every camera when in-process
    cores: int

    @property
    def threads(self) -> int:
        return self.worker.threads

    @property
    def runs(self) -> int:
        return self.worker.runs

    @property
    def in_process(self) -> bool:
        return not self.groups

    @property
    def session_cores(self) -> int:
        """The cores each camera session has: all of them in-process, a share per worker."""
        return cores_each(self.cores, len(self.groups))

    def oversubscribed(self) -> str | None:
        """A warning when configured runs exceed the cores: each run holds its own activations
        in memory, and those beyond the cores only wait for one."""
        split = self.server if self.in_process else self.worker
        if split.runs <= self.session_cores:
            return None
        return (f"model.runs {split.runs} is more than the {self.session_cores} cores each camera session has: "
                "every run holds its own activations in memory, and runs beyond the cores add no speed")

    def describe(self) -> str:
        if self.in_process:
            split, where = self.server, "cameras in the server process"
        else:
            split, where = self.worker, f"{len(self.groups)} camera worker processes, each"
        threads = "all onnxruntime threads" if not split.threads else \
            f"{split.threads} onnxruntime thread{'s' if split.threads > 1 else ''}"
        frames = f"{split.runs} frame{'s' if split.runs > 1 else ''} at once"
        return f"{where}: {frames} over {threads} ({self.cores} cores)"


def cores_each(cores: int, workers: int) -> int:
    """The cores of one camera session: all of them in-process (no workers), else a share."""
    return cores if workers <= 0 else max(1, cores // workers)


def plan_workers(workers: Workers, cameras: Sequence[str], cores: int | None = None,
                 threads: int = 0, runs: int = 0) -> WorkerPlan:
    cores = max(1, cores or os.cpu_count() or 1)
    if workers == "auto":
        count = 0 if len(cameras) <= 1 or cores < AUTO_MIN_CORES else min(len(cameras), cores)
    else:
        count = min(workers, len(cameras))
    if count <= 0:
        split = split_cores(cores, len(cameras), threads, runs)
        return WorkerPlan((), split, split, cores)
    groups = tuple(tuple(cameras[i::count]) for i in range(count))
    budget = cores_each(cores, count)
    # workers with unequal groups get the larger group's split; the cores are shared alike
    worker = split_cores(budget, max(len(g) for g in groups), threads, runs)
    return WorkerPlan(groups, worker, Split(1, threads or budget), cores)
