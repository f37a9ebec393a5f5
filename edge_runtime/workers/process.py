"""A camera worker process: its own session, the usual Camera + Pipeline for its cameras,
and a sink that hands each result to the server as bytes, the frame through shared memory.

    ctx.Process(target=run_worker, args=(spec, results_end, control_end)).start()

The worker loads each published name its cameras run once, into a slot (model/slot.py)
that its cameras take the model from for every frame. The server reads `results_end`'s
peer: an announcement of each version loaded, result messages and a status report twice a
second (codec.py). On `control_end` come swaps (control.py): the new version is loaded on a
thread of its own while the cameras keep running on the old one (or, with `models.swap:
unload-first`, after the old one is dropped: the cameras wait), warmed up once and swapped
in between two frames; a version that fails to load leaves the old one running, the reason
logged in one line and shown in the status. The worker stops when `control_end` is closed or at EOF (the server
stopped it, or died: its end of the pipe closes with it), when its parent process is no
longer the server (orphaned), or on SIGTERM; stopping unlinks its shared memory and ends
within STOP_S, or the process exits hard. SIGINT is ignored: a terminal's Ctrl-C reaches
every process of the group, and the server stops its workers itself.
"""

from __future__ import annotations

import gc
import itertools
import logging
import os
import queue
import signal
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..assembly import load_version, local_pipeline, share_opencv_threads
from ..config import Settings
from ..errors import EdgeRuntimeError
from ..model import limits
from ..model.predictor import Predictor
from ..model.slot import ModelSlot
from ..types import FrameResult, PredictionResult
from .codec import CameraReport, ModelReport, ResultCodec, WorkerStatus, encode_model, encode_status
from .control import ControlError, ModelRef, parse
from .shm import FrameRing

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger(__name__)
STATUS_S = 0.5
STOP_S = 3.0  # cleanup longer than this ends in os._exit
EXIT_ERROR = 2
EXIT_UNHEALTHY = 3
EXIT_HARD = 4
CODECS_KEPT = 3  # versions per name whose results may still be in flight
SWAPS_QUEUED = 8
WARM_UP_IMAGE = (224, 224, 3)


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    cameras: tuple[str, ...]
    settings: Settings
    threads: int  # intra-op threads of each run
    shm_prefix: str
    server_pid: int
    models: Mapping[str, ModelRef]  # camera id -> its published name at the version active now
    log_level: int = logging.INFO
    runs: int = 1  # frames inferred at once
    fallbacks: Mapping[str, ModelRef] = field(default_factory=dict)  # name -> the version before, if that fails


def detail_of(exc: BaseException) -> str:
    return str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"


class Channel:
    """Sends messages to the server from several threads; a broken pipe means stop."""

    def __init__(self, conn: Connection, stop: threading.Event) -> None:
        self.conn, self.stop = conn, stop
        self._lock = threading.Lock()

    def send(self, data: bytes) -> None:
        if self.stop.is_set():
            return
        try:
            with self._lock:
                self.conn.send_bytes(data)
        except (OSError, ValueError):  # the server is gone
            self.stop.set()


def _watch_control(control: Connection, stop: threading.Event, store: Path,
                   on_swap: Callable[[ModelRef], None]) -> None:
    try:
        while not stop.is_set():
            if not control.poll(STATUS_S):
                continue
            try:
                ref = parse(control.recv_bytes(), store)
            except ControlError as exc:  # never a reason to stop: the cameras keep running
                log.warning("control message ignored: %s", exc)
                continue
            if ref is None:
                break
            on_swap(ref)
    except (EOFError, OSError):
        pass
    stop.set()


def run_worker(spec: WorkerSpec, results: Connection, control: Connection) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    logging.basicConfig(level=spec.log_level, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s worker-{spec.index} %(name)s: %(message)s")
    channel = Channel(results, stop)
    worker = CameraWorker(spec, channel, stop)
    threading.Thread(target=_watch_control, args=(control, stop, spec.settings.models.path, worker.ask_swap),
                     name="control", daemon=True).start()
    threading.Thread(target=worker.report, name="status", daemon=True).start()
    threading.Thread(target=worker.swap_loop, name="swap", daemon=True).start()
    code = 0
    try:
        code = worker.run()
    except EdgeRuntimeError as exc:  # e.g. the model file changed under the server: one line, then a restart
        log.error("%s", exc)
        code = EXIT_ERROR
    finally:
        stop.set()
        _exit_by(time.monotonic() + STOP_S)
        worker.close()
        logging.shutdown()
        sys.stderr.flush()
    os._exit(code)  # tearing the interpreter down (sessions, OpenCV) would take seconds for nothing


def _exit_by(deadline: float) -> None:
    def hard_exit() -> None:
        time.sleep(max(0.0, deadline - time.monotonic()))
        os._exit(EXIT_HARD)

    threading.Thread(target=hard_exit, name="exit-deadline", daemon=True).start()


class CameraWorker:
    def __init__(self, spec: WorkerSpec, channel: Channel, stop: threading.Event) -> None:
        self.spec, self.channel, self.stop = spec, channel, stop
        self.ring = FrameRing(spec.shm_prefix, stop=stop)
        self.pipeline: Pipeline | None = None
        self.slots: dict[str, ModelSlot[Predictor]] = {}  # published name -> its slot
        self.active: dict[str, ModelRef] = {}  # name -> the version in its slot
        self.errors: dict[str, str] = {}  # name -> why the last swap failed
        self._codecs: dict[str, list[ResultCodec]] = {}  # name -> its loaded versions' codecs, newest last
        self._keys = itertools.count(1)
        self._swaps: queue.Queue[ModelRef] = queue.Queue(SWAPS_QUEUED)
        self._lock = threading.Lock()

    def run(self) -> int:
        share_opencv_threads(self.spec.threads)  # OpenCV's own pool would otherwise take every core
        settings = self.spec.settings
        limits.install(settings.limits)
        for cid in self.spec.cameras:
            ref = self.spec.models[cid]
            if ref.name not in self.slots:
                predictor, ref = self._load_first(ref)
                self.slots[ref.name], self.active[ref.name] = ModelSlot(ref.name, predictor, ref.version), ref
        models = {cid: self.slots[self.spec.models[cid].name] for cid in self.spec.cameras}
        first = next(iter(models.values())).get()
        runs = first.model.runs
        self.pipeline = local_pipeline(settings, first, self.publish, camera_ids=self.spec.cameras, models=models)
        del first  # only the slots hold a version: one unloaded before a swap (unload-first) is freed
        if self.pipeline is None or self.stop.is_set():
            return 0
        self.pipeline.start()
        log.info("cameras %s, pid %d, %d frames at once, %d onnxruntime threads each; models %s",
                 ", ".join(self.spec.cameras), os.getpid(), runs, self.spec.threads,
                 ", ".join(f"{r.name} v{r.version}" if r.version else r.name for r in self.active.values()))
        while not self.stop.wait(STATUS_S):
            stuck = any(a.predictor.model.stuck for s in self.slots.values() if (a := s.active) is not None)
            if not self.pipeline.healthy or stuck:
                log.error("pipeline unhealthy (a thread stopped, or a run is stuck in the model); "
                          "exiting so that the server restarts this worker")
                return EXIT_UNHEALTHY
        return 0

    # -- models ----------------------------------------------------------------------------
    def _load(self, ref: ModelRef) -> Predictor:
        """Loads a version and announces it to the server, before any result of it."""
        predictor = load_version(self.spec.settings, Path(ref.path), ref.name, runs=self.spec.runs,
                                 threads=self.spec.threads)
        codec = ResultCodec(predictor.spec.labels, predictor.spec.tag_ids, predictor.project, predictor.iteration,
                            key=next(self._keys))
        with self._lock:
            self.channel.send(encode_model(codec, ref.name, ref.version))
            kept = self._codecs.setdefault(ref.name, [])
            kept.append(codec)
            del kept[:-CODECS_KEPT]
        return predictor

    def _load_first(self, ref: ModelRef) -> tuple[Predictor, ModelRef]:
        """The version active now, or (it fails here, e.g. for want of memory) the one before."""
        fallback = self.spec.fallbacks.get(ref.name)
        try:
            return self._load(ref), ref
        except EdgeRuntimeError as exc:
            if fallback is None:
                raise
            self.errors[ref.name] = f"v{ref.version}: {detail_of(exc)}"
            log.error("%s v%s cannot be loaded (%s); starting on v%s", ref.name, ref.version, detail_of(exc),
                      fallback.version)
            return self._load(fallback), fallback

    def ask_swap(self, ref: ModelRef) -> None:
        """From the control thread: the swap is made on the swap thread, in order."""
        try:
            self._swaps.put_nowait(ref)
        except queue.Full:
            log.warning("%s v%s: too many swaps waiting; ignored", ref.name, ref.version)

    def swap_loop(self) -> None:
        while not self.stop.is_set():
            try:
                ref = self._swaps.get(timeout=STATUS_S)
            except queue.Empty:
                continue
            if self.pipeline is None:  # still loading its first models: those are loaded after this one
                while self.pipeline is None and not self.stop.wait(STATUS_S):
                    pass
            self.swap(ref)

    def swap(self, ref: ModelRef) -> bool:
        """Loads `ref` beside the active version (or in its place, unload-first), warms it up
        and swaps it in; False, with the old version still active, if anything failed."""
        slot, current = self.slots.get(ref.name), self.active.get(ref.name)
        if slot is None or current is None:
            log.warning("swap of %s ignored: no camera of this worker runs it", ref.name)
            return False
        if current == ref:
            return True
        began = time.monotonic()
        unload_first = self.spec.settings.models.swap == "unload-first"
        if unload_first:
            slot.unload(f"v{ref.version}")
            gc.collect()  # the old session goes once the frames running on it are done
        try:
            predictor = self._load(ref)
            predictor.predict(np.zeros(WARM_UP_IMAGE, np.uint8))  # the first run is slow: not on a camera frame
        except Exception as exc:
            self.errors[ref.name] = f"v{ref.version}: {detail_of(exc)}"
            log.error("%s v%s not swapped in, staying on v%s: %s", ref.name, ref.version, current.version,
                      detail_of(exc))
            if unload_first:
                self._reload(slot, current)
            return False
        slot.swap(predictor, ref.version)
        self.active[ref.name] = ref
        self.errors.pop(ref.name, None)
        log.info("%s v%s is active (was v%s; loaded in %.1f s)", ref.name, ref.version, current.version,
                 time.monotonic() - began)
        return True

    def _reload(self, slot: ModelSlot[Predictor], ref: ModelRef) -> None:
        """unload-first, after a failed load: the version that ran, back in its slot."""
        try:
            slot.swap(self._load(ref), ref.version)
        except EdgeRuntimeError as exc:  # the cameras wait; the pipeline's errors end the worker
            log.error("%s v%s cannot be loaded again: %s", ref.name, ref.version, exc)
            self.stop.set()

    def _codec(self, name: str, prediction: PredictionResult) -> ResultCodec:
        """The codec of the version that made `prediction` (its iteration), else the newest:
        either encodes any result without loss, the first most compactly."""
        with self._lock:
            kept = self._codecs[name]
            return next((c for c in reversed(kept) if c.iteration == prediction.iteration
                         and c.project == prediction.project), kept[-1])

    # -- results and status ----------------------------------------------------------------
    def publish(self, result: FrameResult) -> None:
        ref = self.ring.put(result.camera_id, result.frame.seq, result.frame.image)
        codec = self._codec(self.spec.models[result.camera_id].name, result.prediction)
        self.channel.send(codec.encode(result, ref))

    def report(self) -> None:
        while not self.stop.is_set():
            if os.getppid() != self.spec.server_pid:
                log.warning("the server (pid %d) is gone; stopping", self.spec.server_pid)
                self.stop.set()
                return
            self.channel.send(encode_status(self.status()))
            self.stop.wait(STATUS_S)

    def models(self) -> dict[str, ModelReport]:
        out = {}
        for name, slot in self.slots.items():
            active = slot.active
            out[name] = ModelReport(version=self.active[name].version if active else None,
                                    iteration=active.predictor.iteration if active else "",
                                    error=self.errors.get(name, ""))
        return out

    def status(self) -> WorkerStatus:
        """Each camera's state, counters and rate; no cameras until the model is loaded."""
        pipeline = self.pipeline
        if pipeline is None:
            return {"pid": os.getpid(), "cameras": {}, "errors": 0, "overwritten": self.ring.overwritten,
                    "models": {}}
        cams = {camera.id: CameraReport(state=camera.state.value, stats=asdict(camera.stats),
                                        fps=round(pipeline.fps(camera.id), 3), skipped=pipeline.skipped(camera.id),
                                        model=self.spec.models[camera.id].name)
                for camera in pipeline.cameras}
        return {"pid": os.getpid(), "cameras": cams, "errors": pipeline.errors, "overwritten": self.ring.overwritten,
                "models": self.models()}

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop(STOP_S / 2)
        try:
            self.ring.close()
        except BufferError:  # a publisher thread that did not stop still writes: the server unlinks them
            log.warning("shared memory still in use at exit")
