"""Wire settings into running parts: predictor, cameras, sinks, pipeline, HTTP app, server.

    settings = load_settings(Path("edge-runtime.yaml"))
    serve(settings)          # blocks until SIGINT or SIGTERM
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from functools import partial
from pathlib import Path

from .camera import Backoff, Camera
from .config import DEMO, CameraConfig, Settings, check_access, resolve_token
from .metrics import Metrics
from .pipeline import Pipeline
from .postprocess import PostprocessOptions
from .predictor import Predictor
from .server import GracefulServer, Services, create_app, server_config
from .sinks import AnnotatedFrames, EventBroadcaster, JsonlLog, LatestResults, MultiSink, Sink
from .sources import describe_uri, open_source

log = logging.getLogger(__name__)
DEMO_MODEL = Path(__file__).parent / "demo"
GRACEFUL_SHUTDOWN_S = 2  # open streams get this long; then the pipeline stops (within 5 s in all)


def model_path(settings: Settings) -> Path:
    return DEMO_MODEL if settings.model.path == DEMO else Path(settings.model.path)


def postprocess_options(settings: Settings) -> PostprocessOptions:
    m = settings.model
    return PostprocessOptions(threshold=m.threshold, top_k=m.top_k, max_detections=m.max_detections)


def intra_op_threads(settings: Settings) -> int:
    """0 (auto) means all cores, except with cameras: then one core is left to capture,
    decoding and publishing, which run beside inference (docs/benchmarks.md)."""
    if settings.model.threads or not settings.cameras:
        return settings.model.threads
    return max(1, (os.cpu_count() or 1) - 1)


def load_predictor(settings: Settings) -> Predictor:
    m = settings.model
    return Predictor.load(model_path(settings), providers=m.providers or None,
                          intra_op_threads=intra_op_threads(settings), options=postprocess_options(settings),
                          spinning=m.spinning)


def make_camera(cfg: CameraConfig) -> Camera:
    opener = partial(open_source, cfg.source, loop=cfg.loop, realtime=cfg.realtime)
    backoff = Backoff(initial_s=cfg.backoff_initial_s, max_s=cfg.backoff_max_s)
    return Camera(cfg.id, opener, watchdog_s=cfg.watchdog_s, backoff=backoff, name=describe_uri(cfg.source))


def build_services(
    settings: Settings, predictor: Predictor | None = None, env: Mapping[str, str] | None = None
) -> Services:
    """Everything the app needs; the token comes from `env` (default: os.environ) or its file."""
    token = resolve_token(settings, env)
    check_access(settings, token)
    predictor = load_predictor(settings) if predictor is None else predictor.with_options(
        postprocess_options(settings))
    cameras = [make_camera(c) for c in settings.cameras]
    metrics = Metrics()
    latest, events, frames = LatestResults(), EventBroadcaster(), AnnotatedFrames()
    sinks: dict[str, Sink] = {"latest": latest, "events": events, "frames": frames}
    if settings.log.jsonl:
        sinks["jsonl"] = JsonlLog(settings.log.jsonl, settings.server.project, predictor.iteration)
    sink = MultiSink(sinks, on_error=lambda name: metrics.sink_errors.labels(name).inc())
    pipeline = None
    if cameras:
        max_fps = {c.id: c.max_fps for c in settings.cameras if c.max_fps}
        pipeline = Pipeline(predictor, cameras, sink, max_fps=max_fps, metrics=metrics)
    return Services(predictor=predictor, settings=settings, token=token, cameras=cameras, pipeline=pipeline,
                    latest=latest, events=events, frames=frames, metrics=metrics)


def serve(settings: Settings) -> None:
    svc = build_services(settings)
    app = create_app(svc)
    log.info("model %s (%s); cameras: %s", svc.predictor.bundle.source, svc.predictor.spec.variant.value,
             ", ".join(f"{c.id}={c.name}" for c in svc.cameras) or "none (uploads only)")
    GracefulServer(server_config(app, settings, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)).run()
