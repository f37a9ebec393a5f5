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

from collections import Counter
from collections.abc import Iterable

import cv2
from prometheus_client.core import CounterMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry

from ..events import samplers as sampling
from ..events.store import EventStore
from ..types import FrameResult
from .base import MultiSink
from .context import SinkContext
from .queued import QueuedThread


class SamplesSink:
    def __init__(self, samplers: list[sampling.Sampler], store: EventStore, project: str = "", iteration: str = "",
                 quality: int = 95, queue_size: int = 8) -> None:
        self.samplers, self.store = samplers, store
        self.project, self.iteration, self.quality = project, iteration, quality
        self.stored_by: Counter[str] = Counter()  # sampler -> samples the store took
        self.refused_by: Counter[str] = Counter()  # sampler -> samples the disk budget refused
        self._worker = QueuedThread[tuple[FrameResult, list[str]]]("samples", self._store, queue_size)

    @property
    def stored(self) -> int:
        return sum(self.stored_by.values())

    @property
    def refused(self) -> int:
        return sum(self.refused_by.values())

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
                self.stored_by[name] += 1
            else:
                self.refused_by[name] += 1

    def close(self, timeout: float = 10.0) -> None:
        """Store what is queued, then end the thread."""
        self._worker.close(timeout)


class SamplesCollector(Collector):
    """The samplers' counters for /metrics, read at scrape time:

        metrics.registry.register(SamplesCollector(sink))
    """

    def __init__(self, sink: SamplesSink) -> None:
        self.sink = sink

    def collect(self) -> Iterable[Metric]:
        per = [("edge_samples_wanted", "Frames a sampler picked, before its rate limits"),
               ("edge_samples_limited", "Picked frames its rate limits refused"),
               ("edge_samples_stored", "Samples stored for labelling"),
               ("edge_samples_refused", "Samples the store's disk budget refused")]
        families = [CounterMetricFamily(name, help_, labels=["sampler"]) for name, help_ in per]
        for s in self.sink.samplers:
            values = (s.wanted, s.limited, self.sink.stored_by[s.name], self.sink.refused_by[s.name])
            for family, value in zip(families, values, strict=True):
                family.add_metric([s.name], value)
        yield from families
        yield CounterMetricFamily("edge_samples_dropped", "Picked frames dropped: encoding fell behind",
                                  value=self.sink.dropped)
        yield CounterMetricFamily("edge_samples_failed", "Picked frames that failed to encode or store",
                                  value=self.sink.failed)


def watch(registry: CollectorRegistry, sinks: MultiSink | None) -> None:
    """Show the samplers' counters in /metrics, when the samples sink is among `sinks`."""
    sink = sinks.sinks.get("samples") if sinks is not None else None
    if isinstance(sink, SamplesSink):
        registry.register(SamplesCollector(sink))


def build(ctx: SinkContext) -> SamplesSink | None:
    cfg = ctx.settings.samples
    if not cfg.samplers or ctx.store is None:
        return None
    return SamplesSink([sampling.build(s) for s in cfg.samplers], ctx.store, ctx.project, ctx.iteration,
                       quality=cfg.jpeg_quality, queue_size=cfg.queue)
