"""Cameras -> model -> sinks, in three overlapping stages.

    grabber thread (per camera)      read + decode (+ preprocess: Camera's `prepare` hook)
    inference threads (per camera)   preprocess unless done, session.run, each on the
                                     newest frame not yet taken
    publisher thread (shared)        postprocess, then every sink

so capture, inference and publication of consecutive frames overlap, and a slow sink
never delays the model. All cameras share one onnxruntime session. With `runs` above 1,
a camera's frames are inferred several at once (on a CPU this keeps every core busy
where one run's threads would wait for each other) and are still published in the
order they were taken. A frame that comes without a prepared tensor is prepared on the
inference thread that takes it. Where preprocessing belongs depends on how many
inference threads a camera has (`inference_threads`): with one, on the grabber, so that
it overlaps inference; with several, on them, in parallel, since the grabber is the one
stage that cannot be split (assembly.py wires it so). The pipeline never changes the
cameras it is given.

    pipeline = Pipeline(predictor, [camera], sink, runs=2)
    pipeline.start()
    ...
    pipeline.stop()

`process` runs the three stages for one frame on the caller's thread, for tests and for
callers with frames of their own. A max-FPS limit makes a worker wait before it takes
the next (newest) frame. A camera with a SceneGate (gate.py) skips the model for frames
like the one it last ran on: their result is the previous one, marked `reused`.
"""

from __future__ import annotations

import dataclasses
import logging
import queue
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Protocol

import numpy as np

from .capture.camera import Camera
from .capture.gate import SceneGate
from .errors import EdgeRuntimeError
from .metrics import Metrics
from .model.predictor import Prepared
from .service.priority import lower_this_thread
from .sinks import Sink
from .types import Frame, FrameResult, Outputs, PredictionResult

log = logging.getLogger(__name__)
FRAME_WAIT_S = 0.25  # how often an idle thread looks at the stop flag
FPS_SMOOTHING = 0.1
PUBLISH_QUEUE = 8  # results waiting for postprocessing; inference blocks beyond this
# Inference threads run this much nicer than the grabbers: with more runnable threads than
# cores the scheduler shares the cores evenly, so a grabber beside two inference threads on
# two cores got two thirds of one and bounded a cheap model; nicer inference threads leave
# reading and decoding, the one stage that cannot be split, a core when it needs one, and
# still take every cycle it does not use.
INFERENCE_NICENESS = 3

Inferred = tuple[Frame, Prepared | None, Outputs, float, "Stages"]  # no Prepared: reuse the previous result


class Stages(Protocol):
    """The three stages of a prediction; `Predictor` is the real one, `testing.FakePredictor`
    a fake that needs no model."""

    def prepare(self, frame: np.ndarray) -> Prepared: ...

    def infer(self, tensor: np.ndarray) -> Outputs: ...

    def finish(self, outputs: Outputs, prepared: Prepared) -> PredictionResult: ...


class Swappable(Protocol):
    """A camera's model that a new version can replace while it runs (model/slot.py)."""

    def get(self) -> Stages: ...


class Active:
    """Stages of whatever version `model` holds at each call, holding none itself (so a
    swapped-out version is freed). A frame's stages are taken once, in `Pipeline.infer`."""

    def __init__(self, model: Swappable) -> None:
        self.model = model

    def prepare(self, frame: np.ndarray) -> Prepared:
        return self.model.get().prepare(frame)

    def infer(self, tensor: np.ndarray) -> Outputs:
        return self.model.get().infer(tensor)

    def finish(self, outputs: Outputs, prepared: Prepared) -> PredictionResult:
        return self.model.get().finish(outputs, prepared)


class Turns:
    """One camera's frames, taken by one inference thread at a time and handed on in the
    order they were taken, whichever thread finishes first. A thread that finishes out of
    turn leaves its result and goes on to the next frame; the thread that completes the
    oldest frame still out hands on every result that is then in order.

        with turns.taking():                # one thread waits for the next frame at a time
            frame = ...; ticket = turns.ticket()
        item = ...                          # inference, several threads at once
        turns.done(ticket, item, hand_on)   # item None: nothing to hand on for this frame
    """

    def __init__(self, ahead: int) -> None:
        """`ahead`: at most this many frames taken and not yet handed on, so that a run
        that stalls holds back the others (and their results' memory) soon."""
        self.seq = 0  # the newest frame taken
        self.last_taken = 0.0  # monotonic time it was taken, for max_fps
        self._ahead = max(1, ahead)
        self._take = threading.Lock()
        self._lock = threading.Condition()
        self._issued = 0
        self._next = 0  # the oldest ticket not yet handed on
        self._early: dict[int, Inferred | None] = {}  # finished out of turn

    def taking(self) -> threading.Lock:
        return self._take

    def room(self, stop: threading.Event) -> bool:
        """Waits (while `taking` is held) until another frame may be taken; False if stopped."""
        with self._lock:
            while self._issued - self._next >= self._ahead and not stop.is_set():
                self._lock.wait(FRAME_WAIT_S)
        return not stop.is_set()

    def ticket(self) -> int:
        """Call while `taking` is held."""
        self._issued += 1
        return self._issued - 1

    def done(self, ticket: int, item: Inferred | None, hand_on: Callable[[Inferred], None]) -> None:
        with self._lock:  # held while handing on, so that results leave in ticket order
            self._early[ticket] = item
            while self._next in self._early:
                ready = self._early.pop(self._next)
                self._next += 1
                if ready is not None:
                    hand_on(ready)
            self._lock.notify_all()


class Pipeline:
    def __init__(
        self,
        predictor: Stages,
        cameras: Sequence[Camera],
        sink: Sink,
        max_fps: Mapping[str, float] | None = None,
        metrics: Metrics | None = None,
        gates: Mapping[str, SceneGate] | None = None,
        runs: int = 1,
        models: Mapping[str, Swappable] | None = None,
    ) -> None:
        """`runs`: frames inferred at once, shared by the cameras (each gets its share of
        inference threads, at least one); the session must allow as many concurrent runs
        (Predictor.load(runs=...)). `models`: a camera's own model, by camera id, taken
        afresh for every frame so that a swapped-in version runs from the next frame on;
        the others run on `predictor`."""
        self.predictor = predictor
        self.models = dict(models or {})
        self.runs = max(1, runs)
        self.cameras = list(cameras)
        self.sink = sink
        self.max_fps = dict(max_fps or {})
        self.gates = dict(gates or {})
        self.metrics = metrics
        self.errors = 0
        self._fps: dict[str, float] = {}
        self._last: dict[str, float] = {}
        self._previous: dict[str, PredictionResult] = {}  # each camera's last inferred result
        self._stop = threading.Event()
        self._queue: queue.Queue[Inferred] = queue.Queue(PUBLISH_QUEUE)
        self._workers: list[tuple[Camera, threading.Thread]] = []
        self._publisher: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._publisher = threading.Thread(target=self._publish_loop, name="publish", daemon=True)
        self._publisher.start()
        for camera in self.cameras:
            camera.start()
            threads = inference_threads(self.runs, len(self.cameras))
            turns = Turns(ahead=2 * threads)
            for i in range(threads):
                thread = threading.Thread(target=self._work, args=(camera, turns), name=f"infer-{camera.id}-{i}",
                                          daemon=True)
                thread.start()
                self._workers.append((camera, thread))

    def stop(self, timeout: float = 3.0) -> None:
        """Stops cameras, workers and publisher; returns within about `timeout` seconds."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for camera in self.cameras:
            camera.stop(timeout=max(0.1, (deadline - time.monotonic()) / 2))
        for thread in [*(t for _, t in self._workers), *([self._publisher] if self._publisher else [])]:
            thread.join(max(0.0, deadline - time.monotonic()))

    @property
    def running(self) -> bool:
        return any(t.is_alive() for _, t in self._workers)

    @property
    def healthy(self) -> bool:
        """Every worker alive unless its camera finished (a file without --loop), and the
        publisher. Whether a run is stuck in the session is its owner's to ask (model.stuck)."""
        workers_ok = all(t.is_alive() or c.finished for c, t in self._workers)
        return workers_ok and (self._publisher is None or self._publisher.is_alive())

    def fps(self, camera_id: str) -> float:
        return self._fps.get(camera_id, 0.0)

    def skipped(self, camera_id: str) -> int:
        """Frames the camera's scene gate kept from the model."""
        gate = self.gates.get(camera_id)
        return gate.skipped if gate else 0

    def _gated(self, frame: Frame, gate: SceneGate | None) -> Frame | None:
        """The frame ready for inference, or None when its scene did not change."""
        if gate is None:
            return frame
        run, prepared = gate.accept(frame.prepared)
        # Not run: the publisher reuses the result of the frame inferred before it, which it
        # publishes first (one queue, in order).
        return dataclasses.replace(frame, prepared=prepared) if run else None

    # -- the three stages for one frame ----------------------------------------------
    def stages(self, camera_id: str) -> Stages:
        model = self.models.get(camera_id)
        return model.get() if model is not None else self.predictor

    def infer(self, frame: Frame) -> Inferred:
        """Inference on the camera's model as it is now; the frame is prepared again when
        its grabber prepared it for a version with another input."""
        stages = self.stages(frame.camera_id)
        prepared = frame.prepared
        if not isinstance(prepared, Prepared) or not _prepared_for(prepared, stages):
            prepared = stages.prepare(frame.image)
        start = time.perf_counter()
        outputs = stages.infer(prepared.tensor)
        return frame, prepared, outputs, time.perf_counter() - start, stages

    def publish(self, item: Inferred) -> FrameResult:
        frame, prepared, outputs, run_s, stages = item
        if prepared is None:  # a gated frame: the scene did not change
            previous = self._previous.get(frame.camera_id)
            if previous is None:  # the frame it was compared with failed in the model
                raise EdgeRuntimeError("no earlier result to reuse for an unchanged frame")
            result = FrameResult(frame, previous, 0.0, time.monotonic(), reused=True)
        else:
            start = time.perf_counter()
            prediction = stages.finish(outputs, prepared)
            busy_s = prepared.elapsed_s + run_s + time.perf_counter() - start
            result = FrameResult(frame, prediction, busy_s * 1000, time.monotonic())
            self._previous[frame.camera_id] = prediction
        self.sink(result)
        self._count(frame.camera_id, result)
        return result

    def process(self, frame: Frame) -> FrameResult:
        """Run the model on one frame and publish the result, on the caller's thread."""
        return self.publish(self.infer(frame))

    # -- threads -----------------------------------------------------------------------
    def _work(self, camera: Camera, turns: Turns) -> None:
        lower_this_thread(INFERENCE_NICENESS)
        limit = self.max_fps.get(camera.id)
        gate = self.gates.get(camera.id)
        while not self._stop.is_set():
            with turns.taking():  # take frames in order, and gate them in that order
                frame = self._take(camera, turns, limit) if turns.room(self._stop) else None
                if frame is None:
                    if camera.finished:
                        break
                    continue
                ticket = turns.ticket()
                try:
                    ready: Frame | Exception | None = self._gated(frame, gate)
                except Exception as exc:
                    ready = exc
            item: Inferred | None = None
            try:
                item = self._attempt(frame, ready)
            finally:  # however this frame ended, or the camera's later results wait forever
                turns.done(ticket, item, self._enqueue)

    def _enqueue(self, item: Inferred) -> None:
        while not self._stop.is_set():
            try:
                self._queue.put(item, timeout=FRAME_WAIT_S)
                return
            except queue.Full:
                continue

    def _attempt(self, frame: Frame, ready: Frame | Exception | None) -> Inferred | None:
        """Inference for a frame the gate let through, the reuse marker for one it held back;
        None when either failed (e.g. an odd frame: counted, and the worker never dies)."""
        try:
            if isinstance(ready, Exception):
                raise ready
            return self.infer(ready) if ready is not None else (frame, None, {}, 0.0, self.predictor)
        except Exception as exc:
            self._error(frame, exc)
            return None

    def _take(self, camera: Camera, turns: Turns, limit: float | None) -> Frame | None:
        if limit:
            wait = turns.last_taken + 1.0 / limit - time.monotonic()
            if wait > 0 and self._stop.wait(wait):
                return None
        frame = camera.next_frame(turns.seq, FRAME_WAIT_S)
        if frame is not None:
            turns.seq, turns.last_taken = frame.seq, time.monotonic()
        return frame

    def _publish_loop(self) -> None:
        while not (self._stop.is_set() and self._queue.empty()):
            try:
                item = self._queue.get(timeout=FRAME_WAIT_S)
            except queue.Empty:
                continue
            try:
                self.publish(item)
            except Exception as exc:  # the publisher serves every camera: it must not die either
                self._error(item[0], exc)

    def _error(self, frame: Frame, exc: Exception) -> None:
        self.errors += 1
        detail = str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"
        log.error("camera %s frame %d: %s", frame.camera_id, frame.seq, detail,
                  exc_info=not isinstance(exc, EdgeRuntimeError) and log.isEnabledFor(logging.DEBUG))

    def _count(self, camera_id: str, result: FrameResult) -> None:
        now = time.monotonic()
        last = self._last.get(camera_id)
        self._last[camera_id] = now
        if last is not None:
            rate = 1.0 / max(now - last, 1e-6)
            previous = self._fps.get(camera_id)
            self._fps[camera_id] = rate if previous is None else previous + FPS_SMOOTHING * (rate - previous)
        if self.metrics is None:
            return
        if result.reused:
            self.metrics.skipped.labels(camera_id).inc()
        else:
            self.metrics.inference.labels(camera_id).observe(result.inference_ms / 1000)
            self.metrics.processed.labels(camera_id).inc()
        self.metrics.age.labels(camera_id).set(result.age_ms / 1000)
        self.metrics.fps.labels(camera_id).set(self._fps.get(camera_id, 0.0))


def inference_threads(runs: int, cameras: int) -> int:
    """Inference threads each camera gets: its share of the session's runs, at least one."""
    return max(1, -(-max(1, runs) // max(1, cameras)))


def _prepared_for(prepared: Prepared, stages: Stages) -> bool:
    """Whether a frame prepared on the grabber thread fits the model that will run on it."""
    if prepared.input is None:
        return True
    wanted = getattr(getattr(stages, "spec", None), "input", None)
    return prepared.input is wanted or prepared.input == wanted  # the same object but across a swap
