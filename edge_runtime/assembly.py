"""Assembling a camera pipeline from settings: the one place that turns `model.*` and
`cameras[]` into a Predictor, Cameras and a Pipeline. `serve` (cameras in the server
process) and each worker process (its share of the cameras) both call it, so a model or
camera option cannot reach one and miss the other.

    predictor = load_predictor(settings, runs=2, threads=1)
    pipeline = local_pipeline(settings, predictor, sink, camera_ids=["door"])
    shelf = load_version(settings, Path("models/shelf/v3"), "shelf", runs=2, threads=1)  # a published version
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from .capture.camera import Camera
from .capture.gate import SceneGate
from .capture.sources import describe_uri, open_source
from .capture.view import CameraView, ModelledCamera
from .config import DEMO, CameraConfig, Settings
from .metrics import Metrics
from .model.postprocess import PostprocessOptions
from .model.predictor import Predictor
from .model.slot import ModelSlot
from .paths import DEMO_MODEL, graph_cache_dir
from .pipeline import Active, Pipeline, Stages, inference_threads
from .service.backoff import Backoff
from .sinks import Sink


def model_path(settings: Settings) -> Path:
    return DEMO_MODEL if settings.model.path == DEMO else Path(settings.model.path)


def load_predictor(settings: Settings, *, runs: int, threads: int, path: Path | str | None = None) -> Predictor:
    """The session for `model.*`: `runs` frames at once, `threads` onnxruntime threads each;
    `path` is the model a worker was handed (the server's shared copy), else model.path."""
    m = settings.model
    return Predictor.load(Path(path) if path else model_path(settings), providers=m.providers or None,
                          intra_op_threads=threads, options=m.postprocess_options(), spinning=m.spinning,
                          graph_cache=graph_cache_dir() if m.graph_cache else None, runs=runs)


def share_opencv_threads(threads: int) -> int:
    """Size OpenCV's own thread pool for a process whose cameras run here: as many threads
    as one run of the session has (`threads`; 0, every core, leaves OpenCV's default).
    Returns the size set. Serve and each worker call it before their cameras start.

    The pipeline runs decoding and preprocessing on threads of its own, which with the
    session's runs already fill the cores. OpenCV splitting each resize again over a pool
    only waits for cores those threads hold, and its threads spin while they wait: on 2
    cores, a 1280x720 resize over a pool of 2 cost 1.5 to 1.7 times the CPU of the same
    resize on the calling thread alone (docs/benchmarks.md, "The camera loop's own cost")."""
    if threads > 0:
        cv2.setNumThreads(threads)
    return int(cv2.getNumThreads())


def model_options(settings: Settings, name: str) -> PostprocessOptions:
    """model.* with the published name's own `models.options` over it."""
    base, own = settings.model, settings.models.options.get(name)
    if own is None:
        return base.postprocess_options()
    return PostprocessOptions(threshold=own.threshold if own.threshold is not None else base.threshold,
                              top_k=own.top_k if own.top_k is not None else base.top_k,
                              max_detections=own.max_detections or base.max_detections)


def load_version(settings: Settings, path: Path, name: str, *, runs: int, threads: int) -> Predictor:
    """A published name's version, as the server and every worker load it: the session's
    split, and the name's own options."""
    return load_predictor(settings, runs=runs, threads=threads, path=path).with_options(model_options(settings, name))


def make_camera(cfg: CameraConfig, prepare: Callable[[np.ndarray], Any] | None = None) -> Camera:
    """A camera for one config entry; `prepare` (the predictor's, or none) runs on its grabber thread."""
    opener = partial(open_source, cfg.source, loop=cfg.loop, realtime=cfg.realtime, read_timeout_s=cfg.watchdog_s)
    backoff = Backoff(initial_s=cfg.backoff_initial_s, max_s=cfg.backoff_max_s)
    return Camera(cfg.id, opener, watchdog_s=cfg.watchdog_s, backoff=backoff, name=describe_uri(cfg.source),
                  prepare=prepare)


def local_pipeline(settings: Settings, predictor: Predictor, sink: Sink, metrics: Metrics | None = None,
                   camera_ids: Collection[str] | None = None,
                   models: Mapping[str, ModelSlot[Predictor]] | None = None) -> Pipeline | None:
    """The cameras of this process (all, or those named): the server's when they run
    in-process, a worker's otherwise; None without cameras. `models`: each camera's slot (its
    published name's, swapped while it runs), else every camera runs on `predictor`.
    Each camera has as many inference threads as the session allows runs at once, and its
    scene gate, when it has one, runs on its grabber thread.

    A camera with one inference thread preprocesses on its grabber, overlapped with that
    thread's inference; a camera with several leaves it to them, where it runs in parallel:
    on the grabber it would lengthen the one stage that cannot be split, reading and
    decoding, which is what bounds a cheap model on a cheap source (docs/benchmarks.md,
    "The camera loop's own cost")."""
    configs = [c for c in settings.cameras if camera_ids is None or c.id in camera_ids]
    if not configs:
        return None
    slots = dict(models or {})
    gates = {c.id: SceneGate(c.gate.min_changed, c.gate.max_idle_s) for c in configs if c.gate.enabled}
    runs = predictor.model.runs
    on_grabber = inference_threads(runs, len(configs)) == 1
    cameras = []
    for c in configs:
        prepare: Callable[[np.ndarray], Any] | None = None
        if on_grabber:
            prepare = _prepare_of(slots[c.id]) if c.id in slots else predictor.prepare
        if c.id in gates:  # the scene check stays on the grabber: it spares the model's threads unchanged frames
            prepare = gates[c.id].hook(prepare or _later)
        cameras.append(make_camera(c, prepare))
    max_fps = {c.id: c.max_fps for c in configs if c.max_fps}
    default: Stages = Active(slots[configs[0].id]) if all(c.id in slots for c in configs) else predictor
    return Pipeline(default, cameras, sink, max_fps=max_fps, metrics=metrics, gates=gates, runs=runs, models=slots)


def camera_views(pipeline: Pipeline) -> list[CameraView]:
    """The pipeline's cameras as /cameras shows them: each with the model it runs."""
    return [ModelledCamera(c, slot) if isinstance(slot := pipeline.models.get(c.id), ModelSlot) else c
            for c in pipeline.cameras]


def _later(image: np.ndarray) -> None:
    """The gate's hook for a camera whose inference threads preprocess: nothing prepared
    here, so the thread that takes a changed frame prepares it."""
    return None


def _prepare_of(slot: ModelSlot[Predictor]) -> Callable[[np.ndarray], Any]:
    """The grabber's preprocessing for the version active as each frame arrives. While the
    slot is emptied for a load (unload-first) the grabber does not wait: the frame goes
    unprepared (ModelUnavailable is the camera's failed prepare), the newest frame replaces
    it, and the inference thread waits for the model instead."""
    return lambda image: slot.get(timeout=0).prepare(image)
