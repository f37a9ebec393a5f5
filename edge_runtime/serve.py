"""Wire settings into running parts: predictor, cameras, sinks, pipeline, HTTP app, server.

    settings = load_settings(Path("edge-runtime.yaml"))
    serve(settings)          # blocks until SIGINT or SIGTERM
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path

from .camera import Backoff, Camera
from .config import DEMO, CameraConfig, Settings, check_access, resolve_token
from .metrics import Metrics
from .pipeline import Pipeline
from .postprocess import PostprocessOptions
from .predictor import Predictor
from .server import GracefulServer, Services, create_app
from .sinks import Sink, build_sinks
from .sources import describe_uri, open_source
from .workers.memory import MemoryCollector
from .workers.plan import in_process_threads, plan_workers
from .workers.runner import CameraRunner, CameraView

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
    return in_process_threads(settings.model.threads, len(settings.cameras), os.cpu_count() or 1)


def load_predictor(settings: Settings, threads: int | None = None) -> Predictor:
    m = settings.model
    threads = intra_op_threads(settings) if threads is None else threads
    return Predictor.load(model_path(settings), providers=m.providers or None, intra_op_threads=threads,
                          options=postprocess_options(settings), spinning=m.spinning)


def make_camera(cfg: CameraConfig) -> Camera:
    opener = partial(open_source, cfg.source, loop=cfg.loop, realtime=cfg.realtime)
    backoff = Backoff(initial_s=cfg.backoff_initial_s, max_s=cfg.backoff_max_s)
    return Camera(cfg.id, opener, watchdog_s=cfg.watchdog_s, backoff=backoff, name=describe_uri(cfg.source))


def local_pipeline(settings: Settings, predictor: Predictor, sink: Sink, metrics: Metrics | None = None,
                   camera_ids: Collection[str] | None = None) -> Pipeline | None:
    """The cameras of this process (all, or those named) over one session: the server's
    when they run in-process, a worker's otherwise; None without cameras."""
    configs = [c for c in settings.cameras if camera_ids is None or c.id in camera_ids]
    if not configs:
        return None
    max_fps = {c.id: c.max_fps for c in configs if c.max_fps}
    return Pipeline(predictor, [make_camera(c) for c in configs], sink, max_fps=max_fps, metrics=metrics)


def server_process() -> dict[str, int | None]:
    return {"server": os.getpid()}


def build_services(
    settings: Settings, predictor: Predictor | None = None, env: Mapping[str, str] | None = None
) -> Services:
    """Everything the app needs; the token comes from `env` (default: os.environ) or its file."""
    token = resolve_token(settings, env)
    check_access(settings, token)
    plan = plan_workers(settings.workers, [c.id for c in settings.cameras], threads=settings.model.threads)
    # with workers, the server's own session serves uploads alone
    threads = None if plan.in_process else plan.upload_threads
    predictor = load_predictor(settings, threads) if predictor is None else predictor.with_options(
        postprocess_options(settings))
    metrics = Metrics()
    sinks = build_sinks(settings, predictor.iteration, on_error=lambda name: metrics.sink_errors.labels(name).inc())
    cameras: list[CameraView] = []
    runner: CameraRunner | None = None
    processes: Callable[[], dict[str, int | None]] = server_process
    if plan.in_process:
        pipeline = local_pipeline(settings, predictor, sinks.all, metrics)
        if pipeline is not None:
            cameras, runner = list(pipeline.cameras), pipeline
    else:
        from .workers.codec import ResultCodec
        from .workers.supervisor import WorkerPool, shared_model

        pool = WorkerPool(settings, plan, sinks.all, ResultCodec(predictor.spec.labels, predictor.spec.tag_ids),
                          shared_model(predictor.bundle), metrics, log_level=logging.getLogger().getEffectiveLevel())
        cameras, runner, processes = list(pool.cameras), pool, pool.processes
    if settings.cameras:
        log.info("%s", plan.describe())
    metrics.registry.register(MemoryCollector(processes))
    return Services(predictor=predictor, settings=settings, token=token, cameras=cameras, pipeline=runner,
                    latest=sinks.latest, events=sinks.broadcaster, frames=sinks.frames, metrics=metrics,
                    sinks=sinks.all)


def serve(settings: Settings) -> None:
    import uvicorn

    svc = build_services(settings)
    app = create_app(svc)
    host, port = settings.server.host, settings.server.port
    log.info("model %s (%s); cameras: %s", svc.predictor.bundle.source, svc.predictor.spec.variant.value,
             ", ".join(f"{c.id}={c.name}" for c in svc.cameras) or "none (uploads only)")
    config = uvicorn.Config(app, host=host, port=port, access_log=False, log_level=settings.log.level,
                            timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S, server_header=False)
    GracefulServer(config).run()
