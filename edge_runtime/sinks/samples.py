"""Frames the samplers pick, stored at full resolution with their prediction for labelling.

    sink = SamplesSink([samplers.build(cfg) for cfg in settings.samples.samplers], store)
    sink(result)     # publisher thread: the decisions only
    sink.close()     # waits for the frames already picked to be stored

Encoding a full-resolution JPEG takes milliseconds, so it happens on a thread of the sink's
own behind a bounded queue: when that falls behind, picked frames are dropped and counted
rather than slowing the camera loop. The store refuses samples past its disk budget
(counted as `refused`); `edge-runtime events export --samples` writes them out.
"""

from __future__ import annotations

import logging
import queue
import threading
import time

import cv2

from ..events import samplers as sampling
from ..events.store import EventStore
from ..types import FrameResult
from .context import SinkContext

log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0


class SamplesSink:
    def __init__(self, samplers: list[sampling.Sampler], store: EventStore, project: str = "", iteration: str = "",
                 quality: int = 95, queue_size: int = 8) -> None:
        self.samplers, self.store = samplers, store
        self.project, self.iteration, self.quality = project, iteration, quality
        self.stored = self.refused = self.dropped = self.failed = 0
        self._queue: queue.Queue[tuple[FrameResult, list[str]] | None] = queue.Queue(queue_size)
        self._logged = -LOG_EVERY_S
        self._thread = threading.Thread(target=self._work, name="samples", daemon=True)
        self._thread.start()

    def __call__(self, result: FrameResult) -> None:
        names = [s.name for s in self.samplers if s.offer(result)]
        if not names:
            return
        try:
            self._queue.put_nowait((result, names))
        except queue.Full:
            self.dropped += len(names)

    def _work(self) -> None:
        while (job := self._queue.get()) is not None:
            result, names = job
            try:
                self._store(result, names)
            except Exception as exc:  # a failing disk must not end the thread: later frames may fit
                self.failed += len(names)
                now = time.monotonic()
                if now - self._logged >= LOG_EVERY_S:
                    self._logged = now
                    log.error("samples: storing a frame failed (%d so far): %s", self.failed, exc)

    def _store(self, result: FrameResult, names: list[str]) -> None:
        ok, data = cv2.imencode(".jpg", result.frame.image, [cv2.IMWRITE_JPEG_QUALITY, self.quality])
        if not ok:
            raise ValueError("JPEG encoding failed")
        jpeg = data.tobytes()
        prediction = result.to_json(self.project, self.iteration)
        for name in names:
            if self.store.add_sample(name, result.camera_id, result.frame.captured_at, jpeg, prediction):
                self.stored += 1
            else:
                self.refused += 1

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("samples: the queue did not drain in %.0f s; %d frames lost", timeout, self._queue.qsize())
            return
        self._thread.join(timeout)


def build(ctx: SinkContext) -> SamplesSink | None:
    cfg = ctx.settings.samples
    if not cfg.samplers or ctx.store is None:
        return None
    return SamplesSink([sampling.build(s) for s in cfg.samplers], ctx.store, ctx.project, ctx.iteration,
                       quality=cfg.jpeg_quality, queue_size=cfg.queue)
