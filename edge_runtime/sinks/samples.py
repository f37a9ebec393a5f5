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

import cv2

from ..events import samplers as sampling
from ..events.store import EventStore
from ..types import FrameResult
from .context import SinkContext
from .worker import Worker


class SamplesSink:
    def __init__(self, samplers: list[sampling.Sampler], store: EventStore, project: str = "", iteration: str = "",
                 quality: int = 95, queue_size: int = 8) -> None:
        self.samplers, self.store = samplers, store
        self.project, self.iteration, self.quality = project, iteration, quality
        self.stored = self.refused = 0
        self._worker = Worker[tuple[FrameResult, list[str]]]("samples", self._store, queue_size)

    @property
    def dropped(self) -> int:
        """Picked frames lost because encoding fell behind."""
        return self._worker.dropped

    @property
    def failed(self) -> int:
        return self._worker.failed

    def __call__(self, result: FrameResult) -> None:
        names = [s.name for s in self.samplers if s.offer(result)]
        if names:
            self._worker.put((result, names))

    def _store(self, job: tuple[FrameResult, list[str]]) -> None:
        result, names = job
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
        self._worker.close(timeout)


def build(ctx: SinkContext) -> SamplesSink | None:
    cfg = ctx.settings.samples
    if not cfg.samplers or ctx.store is None:
        return None
    return SamplesSink([sampling.build(s) for s in cfg.samplers], ctx.store, ctx.project, ctx.iteration,
                       quality=cfg.jpeg_quality, queue_size=cfg.queue)
