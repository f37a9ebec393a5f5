"""Camera worker processes, supervised: started with `spawn`, restarted with backoff when
they die, and their results published to the server's sinks as if they were local.

    pool = WorkerPool(settings, plan, sink=sinks.all, models=camera_models(camera_slots(settings, registry)))
    pool.start()
    pool.cameras        # one RemoteCamera per camera: state, counters, model, worker pid and RSS
    pool.swap("shelf", Path("models/shelf/v4"), 4)   # the model manager's listener
    pool.stop(2.0)      # every worker ends within the timeout (SIGKILL at the end)

One supervisor thread waits on every worker's result pipe and process sentinel. A result
becomes a FrameResult again (its image copied out of shared memory) and goes to the sink
on that one thread, as the in-process pipeline's publisher thread does; frame numbers
keep growing across a worker's restarts. A worker that exits, crashes or is killed has
its shared memory unlinked, its cameras shown as `restarting`, and is started again
after a backoff (reset once it has run for STABLE_S); one silent for `hang_s` (stuck in
a driver with the interpreter held, or stopped) is killed first. The other workers and
the server carry on throughout.

A swap goes to every worker that runs the name, as a control message (control.py); each
worker swaps its own session and reports the version it runs (or why it stayed on the old
one). Results are decoded with the codec the worker announced for the version that made
them. A worker started again later starts on the version active then.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

import numpy as np

from ..capture.camera import CameraState, CameraStats
from ..capture.sources import describe_uri
from ..capture.view import WorkerState, model_fields
from ..config import Settings
from ..metrics import Metrics
from ..model.bundle import Bundle
from ..model.predictor import Predictor
from ..model.slot import ModelSlot
from ..service.backoff import Backoff
from ..sinks import Sink
from .codec import (
    MODEL,
    RESULT,
    STATUS,
    CameraReport,
    ModelReport,
    ResultCodec,
    decode_model,
    decode_status,
    result_key,
)
from .control import ModelRef, encode_swap
from .memory import rss_bytes
from .plan import WorkerPlan
from .process import WorkerSpec, run_worker
from .shm import ROOT, FrameReader, prefix_for, remove_segments, remove_stale

log = logging.getLogger(__name__)
WAIT_S = 0.25
HANG_S = 30.0  # no message (status comes every 0.5 s) for this long: the worker is killed
STARTUP_S = 120.0  # the same, before its first message (imports on a slow SD card)
STABLE_S = 30.0  # a worker that ran this long starts its next restart from the first backoff
RESTART_BACKOFF = Backoff(initial_s=0.5, max_s=30.0)
BATCH = 64  # messages read from one worker before looking at the others
CODECS_KEPT = 8  # versions per worker whose results may still come


class RemoteCamera:
    """A camera that runs in a worker, as the server sees it: the worker's latest report."""

    def __init__(self, camera_id: str, name: str, worker: WorkerHandle, model: str = "") -> None:
        self.id, self.name = camera_id, name
        self.model = model  # the published name it runs
        self.stats = CameraStats()
        self.fps = 0.0
        self.skipped = 0  # frames its scene gate kept from the model, as the worker last reported
        self.worker = worker
        self._state = CameraState.STARTING

    @property
    def state(self) -> CameraState | WorkerState:
        return WorkerState.RESTARTING if self.worker.restarting else self._state

    def reset(self) -> None:
        """A new worker process takes the camera: nothing is known until it reports."""
        self._state, self.fps = CameraState.STARTING, 0.0

    def update(self, report: CameraReport) -> None:
        self._state = CameraState(report["state"])
        self.stats = CameraStats(**report["stats"])
        self.fps = float(report["fps"])
        self.skipped = int(report["skipped"])
        self.model = str(report.get("model") or self.model)

    def status(self) -> dict[str, object]:
        age = time.monotonic() - self.stats.last_frame_mono if self.stats.last_frame_mono else None
        w = self.worker
        rss = rss_bytes(w.process.pid) if w.process is not None and w.process.pid else None
        model = w.models.get(self.model) or ModelReport(version=None, iteration="", error="")
        return {
            "id": self.id, "source": self.name, "state": self.state.value, "frames": self.stats.frames,
            "dropped": self.stats.dropped, "reconnects": self.stats.reconnects,
            "last_frame_age_s": round(age, 3) if age is not None else None, "last_error": self.stats.last_error,
            "worker": {"index": w.index, "pid": w.process.pid if w.process else None, "restarts": w.restarts,
                       "rss_mb": round(rss / 2**20, 1) if rss is not None else None},
            **model_fields(self.model, model["version"], model["iteration"], model["error"]),
        }


@dataclass(eq=False)
class WorkerHandle:
    index: int
    cameras: tuple[str, ...]
    incarnation: int = 0
    process: BaseProcess | None = None
    results: Connection | None = None
    control: Connection | None = None
    restarting: bool = False  # from its death until the new process's cameras report
    restart_at: float = 0.0
    failures: int = 0
    restarts: int = 0
    started: float = 0.0
    heard: float = 0.0  # monotonic time of the last message; 0: none yet
    prefix: str = ""
    offsets: dict[str, int] = field(default_factory=dict)  # camera -> seq offset of this incarnation
    codecs: dict[int, ResultCodec] = field(default_factory=dict)  # key -> the codec this incarnation announced
    models: dict[str, ModelReport] = field(default_factory=dict)  # name -> the version it runs, as last reported


class WorkerPool:
    def __init__(self, settings: Settings, plan: WorkerPlan, sink: Sink, models: Mapping[str, ModelRef],
                 metrics: Metrics | None = None, hang_s: float = HANG_S, log_level: int = logging.INFO) -> None:
        """`models`: each camera's published name at its active version (camera_models)."""
        self.settings, self.plan, self.sink = settings, plan, sink
        self.models = dict(models)  # camera id -> the version its worker loads when it (re)starts
        self._before: dict[str, ModelRef] = {}  # name -> the version before, should the active fail to load
        self.metrics = metrics
        self.hang_s = hang_s
        self.log_level = log_level
        self.errors = 0
        self.frames = FrameReader()
        self._ctx = multiprocessing.get_context("spawn")
        self._workers = [WorkerHandle(i, group) for i, group in enumerate(plan.groups)]
        names = {c.id: describe_uri(c.source) for c in settings.cameras}
        self.cameras = [RemoteCamera(cid, names.get(cid, cid), w, self.models[cid].name)
                        for w in self._workers for cid in w.cameras]
        self._by_id = {c.id: c for c in self.cameras}
        self._last_seq: dict[str, int] = {}
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # -- the runner interface ----------------------------------------------------------
    def start(self) -> None:
        remove_stale()
        with self._lock:
            for w in self._workers:
                self._spawn(w)
        self._thread = threading.Thread(target=self._supervise, name="workers", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        """Asks every worker to stop (closing its control pipe), and kills what is left shortly
        before the deadline."""
        deadline = time.monotonic() + timeout
        with self._lock:
            self._stopping.set()
            for w in self._workers:
                if w.control is not None:
                    w.control.close()  # the worker sees EOF and stops
                    w.control = None
        # Only the supervisor thread reaps workers (two threads waiting for one child race);
        # it returns once every worker has exited.
        thread = self._thread
        if thread is not None:
            thread.join(max(0.0, deadline - 0.5 - time.monotonic()))
        for w in self._workers:
            p = w.process
            if p is not None and not wait([p.sentinel], 0):  # the sentinel is readable once it has exited
                log.warning("worker pid %s did not stop in time; killing it", p.pid)
                p.kill()
        if thread is not None:
            thread.join(max(0.1, deadline - time.monotonic()))
        else:
            for w in self._workers:
                if w.process is not None:
                    w.process.join(max(0.1, deadline - time.monotonic()))
        self.frames.close()
        remove_segments(lambda name: name.startswith(f"{ROOT}{os.getpid()}_"))

    @property
    def healthy(self) -> bool:
        return self._thread is None or self._thread.is_alive() or self._stopping.is_set()

    def fps(self, camera_id: str) -> float:
        cam = self._by_id.get(camera_id)
        return cam.fps if cam is not None and not cam.worker.restarting else 0.0

    def skipped(self, camera_id: str) -> int:
        cam = self._by_id.get(camera_id)
        return cam.skipped if cam is not None else 0

    def processes(self) -> dict[str, int | None]:
        """Process name -> pid, for the memory metrics."""
        out: dict[str, int | None] = {"server": os.getpid()}
        for w in self._workers:
            out[f"worker-{w.index}"] = w.process.pid if w.process is not None and w.results is not None else None
        return out

    # -- hot swap ----------------------------------------------------------------------------
    def swap(self, name: str, folder: Path, version: int) -> None:
        """The model manager's listener: `name` is now `version`. Every worker that runs it is
        told, and any worker started from now on loads it."""
        ref = ModelRef(name, str(folder), version)
        with self._lock:
            old = next((r for r in self.models.values() if r.name == name), None)
            if old is None or old == ref:
                return
            self._before[name] = old
            self.models.update({cid: ref for cid, r in self.models.items() if r.name == name})
            message = encode_swap(ref)
            for w in self._workers:
                if w.control is None or all(self.models[cid].name != name for cid in w.cameras):
                    continue
                try:
                    w.control.send_bytes(message)
                except OSError as exc:  # dying: it starts again on the new version
                    log.warning("worker %d: cannot tell it of %s v%d (%s)", w.index, name, version, exc)

    # -- starting and restarting ---------------------------------------------------------
    def _spawn(self, w: WorkerHandle) -> None:
        w.incarnation += 1
        w.prefix = prefix_for(os.getpid(), w.index, w.incarnation)
        models = {cid: self.models[cid] for cid in w.cameras}
        fallbacks = {r.name: self._before[r.name] for r in models.values() if r.name in self._before}
        spec = WorkerSpec(w.index, w.cameras, self.settings, self.plan.threads, w.prefix, os.getpid(), models,
                          self.log_level, runs=self.plan.runs, fallbacks=fallbacks)
        results_r, results_w = self._ctx.Pipe(duplex=False)
        control_r, control_w = self._ctx.Pipe(duplex=False)
        process = self._ctx.Process(target=run_worker, args=(spec, results_w, control_r), daemon=True,
                                    name=f"edge-runtime-worker-{w.index}")
        process.start()
        results_w.close()  # only the worker holds these ends now: its death closes them
        control_r.close()
        w.process, w.results, w.control = process, results_r, control_w
        w.started, w.heard = time.monotonic(), 0.0
        w.offsets = {cid: self._last_seq.get(cid, 0) for cid in w.cameras}
        w.codecs, w.models = {}, {}
        for cam in self.cameras:
            if cam.worker is w:
                cam.reset()

    def _died(self, w: WorkerHandle) -> None:
        assert w.process is not None
        w.process.join(1.0)
        code = w.process.exitcode
        how = f"signal {signal.Signals(-code).name}" if code is not None and code < 0 else f"exit code {code}"
        assert w.results is not None
        w.results.close()
        w.results = None
        with self._lock:
            if w.control is not None:
                w.control.close()
                w.control = None
        self.frames.release(w.prefix)
        if self._stopping.is_set():
            return
        now = time.monotonic()
        w.failures = 1 if now - w.started > STABLE_S else w.failures + 1
        delay = RESTART_BACKOFF.delay(w.failures)
        w.restarting, w.restart_at = True, now + delay
        w.restarts += 1
        log.error("worker %d (cameras %s, pid %s) ended with %s; restarting in %.1f s", w.index,
                  ", ".join(w.cameras), w.process.pid, how, delay)

    # -- the supervisor thread -----------------------------------------------------------
    def _supervise(self) -> None:
        while True:
            live = [w for w in self._workers if w.process is not None and w.results is not None]
            if self._stopping.is_set() and not any(w.process.is_alive() for w in live if w.process):
                for w in live:
                    self._drain(w, until_eof=True)
                return
            handles: dict[Any, tuple[WorkerHandle, bool]] = {}
            for w in live:
                assert w.results is not None and w.process is not None
                handles[w.results] = (w, False)
                handles[w.process.sentinel] = (w, True)
            if not handles:
                time.sleep(WAIT_S)
            for handle in wait(list(handles), WAIT_S) if handles else []:
                w, ended = handles[handle]
                if w.results is None:
                    continue
                if ended:
                    self._drain(w, until_eof=True)
                    self._died(w)
                else:
                    self._drain(w)
            self._check(time.monotonic())

    def _check(self, now: float) -> None:
        with self._lock:
            if self._stopping.is_set():
                return
            for w in self._workers:
                if w.results is None and now >= w.restart_at:
                    try:
                        self._spawn(w)
                    except OSError as exc:  # out of processes, memory or file descriptors: try again later
                        w.failures += 1
                        w.restart_at = now + RESTART_BACKOFF.delay(w.failures)
                        log.error("worker %d: cannot start a process (%s); next try in %.1f s", w.index, exc,
                                  w.restart_at - now)
                elif w.results is not None and w.process is not None and w.process.is_alive():
                    silent = now - (w.heard or w.started)
                    if silent > (self.hang_s if w.heard else STARTUP_S):
                        log.error("worker %d (pid %s) sent nothing for %.0f s; killing it", w.index, w.process.pid,
                                  silent)
                        w.process.kill()
                        w.heard = w.started = now  # one kill; its sentinel brings the restart

    def _drain(self, w: WorkerHandle, until_eof: bool = False) -> None:
        conn = w.results
        assert conn is not None
        for _ in range(1 << 30 if until_eof else BATCH):
            try:
                if not conn.poll(0):
                    return
                data = conn.recv_bytes()
            except (EOFError, OSError):
                return
            w.heard = time.monotonic()
            try:
                self._handle(w, data)
            except Exception:  # a malformed message must not end the supervisor
                self.errors += 1
                log.exception("worker %d: bad message", w.index)

    def _handle(self, w: WorkerHandle, data: bytes) -> None:
        kind = data[:1]
        if kind == STATUS:
            status = decode_status(data)
            reports = status["cameras"]
            w.restarting = w.restarting and not reports  # a new worker is back once its cameras report
            models = status.get("models")
            if isinstance(models, dict):
                w.models = models
            for cid, report in reports.items():
                cam = self._by_id.get(cid)
                if cam is not None:
                    cam.update(report)
                    if self.metrics:
                        self.metrics.fps.labels(cid).set(cam.fps)
            return
        if kind == MODEL:
            info, announced = decode_model(data)
            w.codecs[announced.key] = announced
            for key in list(w.codecs)[:-CODECS_KEPT]:
                del w.codecs[key]
            log.debug("worker %d: %s v%s has key %d", w.index, info["name"], info["version"], announced.key)
            return
        if kind != RESULT:
            raise ValueError(f"unknown message kind {kind!r}")
        key = result_key(data)
        codec = w.codecs.get(key)
        if codec is None:
            raise ValueError(f"a result of model key {key}, which the worker never announced")
        decoded = codec.decode(data)
        image = self.frames.read(decoded.camera_id, decoded.ref, decoded.seq)
        if image is None:  # gone before it was copied (nothing but a stalled server does this): keep the result
            image = np.zeros(decoded.ref.shape, np.dtype(decoded.ref.dtype))
        seq = decoded.seq + w.offsets.get(decoded.camera_id, 0)
        self._last_seq[decoded.camera_id] = seq
        result = decoded.result(image, seq=seq, published_mono=time.monotonic())
        self.sink(result)
        if self.metrics:
            cid = decoded.camera_id
            self.metrics.inference.labels(cid).observe(result.inference_ms / 1000)
            self.metrics.processed.labels(cid).inc()
            self.metrics.age.labels(cid).set(result.age_ms / 1000)


def shared_model(bundle: Bundle) -> Path:
    """What the workers open: the folder or .onnx the user named, or for a zip the folder the
    server extracted it to (read-only for them, one copy on disk and in the page cache)."""
    return bundle.source if bundle.source.is_dir() or bundle.source.suffix.lower() == ".onnx" else bundle.root


def camera_models(slots: Mapping[str, ModelSlot[Predictor]]) -> dict[str, ModelRef]:
    """Each camera's published name at its active version, as its worker opens it."""
    out = {}
    for cid, slot in slots.items():
        active = slot.active
        if active is None:
            raise ValueError(f"camera {cid}: model {slot.name} is not loaded")
        out[cid] = ModelRef(slot.name, str(shared_model(active.predictor.bundle)), active.version)
    return out
