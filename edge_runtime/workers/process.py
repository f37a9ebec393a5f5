"""A camera worker process: its own session, the usual Camera + Pipeline for its cameras,
and a sink that hands each result to the server as bytes, the frame through shared memory.

    ctx.Process(target=run_worker, args=(spec, results_end, control_end)).start()

The server reads `results_end`'s peer: result messages and a status report twice a
second (codec.py). The worker stops when `control_end` is closed or at EOF (the server
stopped it, or died: its end of the pipe closes with it), when its parent process is no
longer the server (orphaned), or on SIGTERM; stopping unlinks its shared memory and ends
within STOP_S, or the process exits hard. SIGINT is ignored: a terminal's Ctrl-C reaches
every process of the group, and the server stops its workers itself.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from typing import TYPE_CHECKING

from ..assembly import load_predictor, local_pipeline
from ..config import Settings
from ..errors import EdgeRuntimeError
from ..model import limits
from ..types import FrameResult
from .codec import CameraReport, ResultCodec, WorkerStatus, encode_status
from .shm import FrameRing

if TYPE_CHECKING:
    from ..pipeline import Pipeline

log = logging.getLogger(__name__)
STATUS_S = 0.5
STOP_S = 3.0  # cleanup longer than this ends in os._exit
EXIT_ERROR = 2
EXIT_UNHEALTHY = 3
EXIT_HARD = 4


@dataclass(frozen=True)
class WorkerSpec:
    index: int
    cameras: tuple[str, ...]
    settings: Settings
    threads: int  # intra-op threads of each run
    shm_prefix: str
    server_pid: int
    model: str  # the path every worker opens: for a zip, the server's extracted folder
    log_level: int = logging.INFO
    runs: int = 1  # frames inferred at once


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


def _watch_control(control: Connection, stop: threading.Event) -> None:
    try:
        while not stop.is_set():
            if control.poll(STATUS_S) and control.recv_bytes() == b"stop":
                break
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
    threading.Thread(target=_watch_control, args=(control, stop), name="control", daemon=True).start()
    worker = CameraWorker(spec, channel, stop)
    threading.Thread(target=worker.report, name="status", daemon=True).start()
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
        self.codec = ResultCodec()

    def run(self) -> int:
        import cv2

        # OpenCV's own pool would otherwise take every core
        cv2.setNumThreads(max(1, self.spec.threads + self.spec.runs - 1))
        settings = self.spec.settings
        limits.install(settings.limits)
        predictor = load_predictor(settings, runs=self.spec.runs, threads=self.spec.threads, path=self.spec.model)
        self.codec = ResultCodec(predictor.spec.labels, predictor.spec.tag_ids)
        self.pipeline = local_pipeline(settings, predictor, self.publish, camera_ids=self.spec.cameras)
        if self.pipeline is None or self.stop.is_set():
            return 0
        self.pipeline.start()
        log.info("cameras %s, pid %d, %d frames at once, %d onnxruntime threads each", ", ".join(self.spec.cameras),
                 os.getpid(), predictor.model.runs, self.spec.threads)
        while not self.stop.wait(STATUS_S):
            if not self.pipeline.healthy or predictor.model.stuck:
                log.error("pipeline unhealthy (a thread stopped, or a run is stuck in the model); "
                          "exiting so that the server restarts this worker")
                return EXIT_UNHEALTHY
        return 0

    def publish(self, result: FrameResult) -> None:
        ref = self.ring.put(result.camera_id, result.frame.seq, result.frame.image)
        self.channel.send(self.codec.encode(result, ref))

    def report(self) -> None:
        while not self.stop.is_set():
            if os.getppid() != self.spec.server_pid:
                log.warning("the server (pid %d) is gone; stopping", self.spec.server_pid)
                self.stop.set()
                return
            self.channel.send(encode_status(self.status()))
            self.stop.wait(STATUS_S)

    def status(self) -> WorkerStatus:
        """Each camera's state, counters and rate; no cameras until the model is loaded."""
        pipeline = self.pipeline
        if pipeline is None:
            return {"pid": os.getpid(), "cameras": {}, "errors": 0, "overwritten": self.ring.overwritten}
        cams = {camera.id: CameraReport(state=camera.state.value, stats=asdict(camera.stats),
                                        fps=round(pipeline.fps(camera.id), 3), skipped=pipeline.skipped(camera.id))
                for camera in pipeline.cameras}
        return {"pid": os.getpid(), "cameras": cams, "errors": pipeline.errors, "overwritten": self.ring.overwritten}

    def close(self) -> None:
        if self.pipeline is not None:
            self.pipeline.stop(STOP_S / 2)
        try:
            self.ring.close()
        except BufferError:  # a publisher thread that did not stop still writes: the server unlinks them
            log.warning("shared memory still in use at exit")
