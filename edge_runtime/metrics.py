"""Prometheus metrics, in a registry of their own (one per app, so tests can build many)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from .capture.view import STATES, CameraView
from .publish.manager import ModelManager
from .publish.registry import Registry

LATENCY_BUCKETS = (0.002, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 1.0, 2.5)


class _CameraCollector(Collector):
    """Reads the cameras' own counters at scrape time, so nothing is counted twice."""

    def __init__(self, cameras: Callable[[], Sequence[CameraView]]) -> None:
        self.cameras = cameras

    def collect(self) -> Iterable[Metric]:
        dropped = CounterMetricFamily("edge_frames_dropped", "Frames replaced before inference took them",
                                      labels=["camera"])
        captured = CounterMetricFamily("edge_frames_captured", "Frames read from the source", labels=["camera"])
        reconnects = CounterMetricFamily("edge_camera_reconnects", "Times the source was reopened",
                                         labels=["camera"])
        state = GaugeMetricFamily("edge_camera_state", "1 for the camera's current state", labels=["camera", "state"])
        for cam in self.cameras():
            dropped.add_metric([cam.id], cam.stats.dropped)
            captured.add_metric([cam.id], cam.stats.frames)
            reconnects.add_metric([cam.id], cam.stats.reconnects)
            current = cam.state.value
            for s in STATES:
                state.add_metric([cam.id, s], 1.0 if s == current else 0.0)
        yield from (dropped, captured, reconnects, state)


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.inference = Histogram("edge_inference_seconds", "Preprocess + inference + postprocess time",
                                   ["camera"], buckets=LATENCY_BUCKETS, registry=self.registry)
        self.processed = Counter("edge_frames_processed", "Frames the model ran on", ["camera"],
                                 registry=self.registry)
        self.skipped = Counter("edge_frames_skipped", "Frames the scene gate kept from the model (result reused)",
                               ["camera"], registry=self.registry)
        self.fps = Gauge("edge_camera_fps", "Frames processed per second (smoothed)", ["camera"],
                         registry=self.registry)
        self.age = Gauge("edge_result_age_seconds", "Capture-to-publication time of the newest result",
                         ["camera"], registry=self.registry)
        self.sink_errors = Counter("edge_sink_errors", "Sink failures", ["sink"], registry=self.registry)
        self.requests = Counter("edge_http_requests", "HTTP requests by route and status",
                                ["method", "route", "status"], registry=self.registry)

    def watch(self, cameras: Callable[[], Sequence[CameraView]]) -> None:
        self.registry.register(_CameraCollector(cameras))

    def render(self) -> bytes:
        return generate_latest(self.registry)


class ModelsCollector(Collector):
    """Each served name at scrape time: its active version and iteration, the memory its load
    added, and how many versions were swapped in, refused and rolled back by themselves."""

    def __init__(self, registry: Registry, manager: ModelManager | None,
                 cameras: Mapping[str, str] | None = None) -> None:
        """`cameras`: each camera's published name, so its results' model can be joined."""
        self.registry, self.manager, self.cameras = registry, manager, dict(cameras or {})

    def collect(self) -> Iterable[Metric]:
        info = GaugeMetricFamily("edge_model_info", "1 for each served name at its active version",
                                 labels=["model", "version", "iteration"])
        memory = GaugeMetricFamily("edge_model_memory_bytes", "Resident memory the active version's load added",
                                   labels=["model"])
        swaps = CounterMetricFamily("edge_model_swaps", "Versions made active while the server ran", labels=["model"])
        refused = CounterMetricFamily("edge_model_refused", "Versions that failed to load, warm up or verify",
                                      labels=["model"])
        rolled = CounterMetricFamily("edge_model_rollbacks", "Versions rolled back by themselves in probation",
                                     labels=["model"])
        camera = GaugeMetricFamily("edge_camera_model", "1 for the model and version each camera runs now",
                                   labels=["camera", "model", "version", "iteration"])
        for camera_id, name in self.cameras.items():
            entry = self.registry.entry(name)
            running = entry.slot.active if entry else None
            if running is not None:
                camera.add_metric([camera_id, name, str(running.version or ""), running.predictor.iteration], 1.0)
        yield camera
        statuses = self.manager.status if self.manager is not None else {}
        for name, entry in self.registry.models.items():
            active = entry.slot.active
            if active is not None:
                info.add_metric([name, str(active.version or ""), active.predictor.iteration], 1.0)
                if active.memory_bytes is not None:
                    memory.add_metric([name], float(active.memory_bytes))
            status = statuses.get(name)
            swaps.add_metric([name], status.swaps if status else 0)
            refused.add_metric([name], status.refused if status else 0)
            rolled.add_metric([name], status.rolled_back if status else 0)
        yield from (info, memory, swaps, refused, rolled)
