"""Wire settings into running parts: predictor, cameras, sinks, pipeline, HTTP app, server.

    settings = load_settings(Path("edge-runtime.yaml"))
    serve(settings)          # blocks until SIGINT or SIGTERM
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import numpy as np

from . import forwarders
from .assembly import camera_views, load_predictor, load_version, local_pipeline, model_options, share_opencv_threads
from .capture.sources import SourceError, check_source
from .capture.view import CameraRunner, CameraView
from .config import DEMO, Settings, check_access, is_loopback, resolve_token
from .errors import ConfigError, EdgeRuntimeError
from .events.export import held_out_frames
from .events.model_changes import ModelChange
from .events.retention import Janitor
from .events.setup import open_store
from .events.store import EventStore
from .metrics import Metrics, ModelsCollector
from .model import limits
from .model.imageio import read_image
from .model.predictor import Predictor
from .model.slot import ModelSlot
from .publish.config import NAME, store_bytes
from .publish.incoming import IncomingWatcher
from .publish.manager import Loader, ModelManager, Policy
from .publish.registry import Entry, Registry
from .publish.retrain import Retrainer, labelled_frames
from .publish.store import ModelStore
from .publish.versions import version_of
from .server import GracefulServer, Services, create_app, server_config
from .server.auth import Auth
from .service.rss import rss_bytes
from .sinks import build_sinks
from .sinks.latest import LatestResults
from .workers.memory import MemoryCollector
from .workers.plan import Split, WorkerPlan, plan_workers

log = logging.getLogger(__name__)
GRACEFUL_SHUTDOWN_S = 2  # open streams get this long; then the pipeline stops (within 5 s in all)


def cores_plan(settings: Settings) -> WorkerPlan:
    """Worker processes, and how each session's cores are split into runs and threads."""
    m = settings.model
    return plan_workers(settings.workers, [c.id for c in settings.cameras], os.cpu_count() or 1,
                        threads=m.threads, runs=m.runs)


def check_sources(settings: Settings) -> None:
    """A mistake that retrying cannot fix (a video file that does not exist) stops start-up;
    a camera that is merely absent or offline is retried while the server runs."""
    for cfg in settings.cameras:
        try:
            check_source(cfg.source)
        except SourceError as exc:
            raise ConfigError(f"camera {cfg.id}: {exc}") from None


def log_choices(settings: Settings, token: str | None, predictor: Predictor) -> None:
    """Say what the settings chose that a user might not expect, once everything loaded."""
    if settings.server.insecure and token is None and not is_loopback(settings.server.host):
        log.warning("serving %s without a token (--insecure): anyone who can reach it can see the cameras "
                    "and use the model", settings.server.host)
    top_k, tags = settings.model.top_k, len(predictor.spec.labels or ())
    if top_k is not None and settings.model.path == DEMO and [c.source for c in settings.cameras] == ["demo:"]:
        log.info("demo: the built-in model on a clip of its sample photos; each result lists the %d most likely "
                 "of its %d tags (--top-k changes it)", top_k, tags)
    elif top_k is not None and top_k < tags:
        log.info("results list at most %d of the model's %d tags (model.top_k, --top-k)", top_k, tags)


def store_wanted(settings: Settings) -> bool:
    """Whether anything records into or reads from the store: rules, forwarders, samplers, or
    published models (each change of their active version is recorded, rules or not)."""
    m = settings.models
    publishing = bool(ModelStore(m.path).names() or m.incoming or m.sources or m.iot_edge)
    return bool(settings.events.rules or settings.forwarders or settings.samples.samplers or publishing)


def forwarding(settings: Settings) -> forwarders.Plan:
    return forwarders.Plan(settings.forwarders, device=settings.events.device)


def janitor(settings: Settings, store: EventStore) -> Janitor:
    """The store's one janitor: its budget and ages, and outbox rows kept until every
    configured forwarder passed them or they outlived the longest TTL (a forwarder no
    longer configured holds none, whatever its old cursor)."""
    consumers, max_ttl_s = forwarding(settings).retention()
    return Janitor(store, consumers=consumers, max_ttl_s=max_ttl_s)


def model_name(settings: Settings) -> str:
    """The name a model given on the command line (or in model.path) is served under: its
    folder's, or the name above a vN version folder; "demo" for the built-in one."""
    if settings.model.path == DEMO:
        return "demo"
    path = Path(settings.model.path)
    stem = path.parent.name if version_of(path) else path.stem
    return stem if NAME.fullmatch(stem) else "default"


def model_store(settings: Settings) -> ModelStore:
    """The store, with what a killed publish or upload left tidied away when it can be
    written; only read on a read-only root filesystem."""
    m = settings.models
    if m.path.is_dir() and os.access(m.path, os.W_OK):
        return ModelStore.open(m.path, keep=m.keep, max_bytes=store_bytes(m))
    return ModelStore(m.path, keep=m.keep, max_bytes=store_bytes(m))


def loader(settings: Settings, split: Split) -> Loader:
    """How the server loads a published version: its session split, the name's options."""
    def load(path: Path, name: str) -> Predictor:
        return load_version(settings, path, name, runs=split.runs, threads=split.threads)
    return load


def load_published(settings: Settings, store: ModelStore, load: Loader) -> list[Entry]:
    """Every name published in the model store, at its active version, loaded as the
    server's own session is (the store is only read: a read-only root filesystem works)."""
    out = []
    for name in store.names():
        try:  # one damaged name does not keep the others, or the server, from starting
            state = store.state(name)
            if state is None or state.active is None:
                continue
            before = rss_bytes()
            predictor = load(store.version_path(name, state.active), name)
            after = rss_bytes()
        except EdgeRuntimeError as exc:
            log.error("published model %s is not served: %s", name, exc)
            continue
        memory = after - before if before is not None and after is not None else None
        out.append(Entry(name, state.project, ModelSlot(name, predictor, state.active, memory)))
        log.info("published model %s v%d%s", name, state.active,
                 f" for project {state.project}" if state.project else " (any project)")
    return out


def model_registry(settings: Settings, published: list[Entry], predictor: Predictor | None,
                   load_default: Callable[[], Predictor]) -> Registry:
    """The served names: the store's, and the model given to serve (or in model.path) as a
    published model of its own, not copied into the store. With no model given, the
    store's first name is the default rather than the demo."""
    if predictor is not None:
        predictor = predictor.with_options(model_options(settings, model_name(settings)))
    elif published and settings.model.path == DEMO:
        return Registry(published[0], published[1:])
    else:
        predictor = load_default()
    name = model_name(settings)
    clash = next((p for p in published if p.name == name), None)
    if clash is not None:
        served = clash.slot.get()
        if predictor.bundle.root.resolve() != served.bundle.root.resolve():
            raise ConfigError(f"the model given to serve and the store's published model {clash.name!r} share a "
                              "name: serve the published one (no MODEL), or rename one of them")
        return Registry(clash, [p for p in published if p is not clash])  # serve STORE/NAME/vN: the published one
    return Registry(Entry(name, None, ModelSlot(name, predictor)), published)


def check_camera_models(settings: Settings, registry: Registry) -> None:
    for cfg in settings.cameras:
        if cfg.model is not None and registry.entry(cfg.model) is None:
            raise ConfigError(f"camera {cfg.id}: model {cfg.model!r} is not published (published: "
                              f"{', '.join(sorted(registry.models))})")


def camera_slots(settings: Settings, registry: Registry) -> dict[str, ModelSlot[Predictor]]:
    """Each camera's slot: its own published name's, or the default model's."""
    slots = {}
    for cfg in settings.cameras:
        entry = registry.entry(cfg.model) if cfg.model else None
        slots[cfg.id] = (entry or registry.default).slot
    return slots


def model_manager(settings: Settings, store: ModelStore, registry: Registry, load: Loader,
                  latest: LatestResults, events: EventStore | None = None) -> ModelManager:
    """The manager of the served names, with what brings it updates (the watched folder, the
    pulled URLs, the module twin); each change of an active version recorded in `events`."""
    policy = Policy.of(settings.models)
    users: dict[str, list[str]] = {}
    for cfg in settings.cameras:
        users.setdefault(cfg.model or registry.default.name, []).append(cfg.id)

    def frames(name: str) -> list[np.ndarray]:
        return [r.frame.image for cid in users.get(name, ()) if (r := latest.get(cid)) is not None]

    device = settings.events.device

    def record(change: ModelChange) -> None:
        if events is not None:
            events.record_model_change(dataclasses.replace(change, device=device))

    def held_out(name: str) -> list[tuple[str, np.ndarray]]:
        """The name's held-out labelled frames, for the accuracy gate; none without a store."""
        if events is None:
            return []
        pairs = []
        for tag, path in held_out_frames(events, name, settings.models.retrain.held_out):
            with contextlib.suppress(EdgeRuntimeError):  # a frame that cannot be read counts for neither version
                pairs.append((tag, read_image(path)))
        return pairs

    manager = ModelManager(store, registry, load, policy, frames=frames, record=record, held_out=held_out)
    m = settings.models
    incoming = IncomingWatcher.from_config(m, manager.publish)
    if incoming is not None:
        manager.feeds.append(incoming)
    if m.sources or m.iot_edge:  # updates from outside, each through the manager's checks (needs requests)
        from .publish.download import Downloader
        from .publish.iotedge import ModuleTwin
        from .publish.pull import Puller

        downloader = Downloader.from_config(m, manager.publish)
        if m.sources:
            manager.feeds.append(Puller.from_config(m, downloader))
        twin = ModuleTwin.from_config(m, downloader)
        if twin is not None:
            manager.feeds.append(twin)
    return manager


def server_process() -> dict[str, int | None]:
    return {"server": os.getpid()}


def build_services(
    settings: Settings, predictor: Predictor | None = None, env: Mapping[str, str] | None = None
) -> Services:
    """Everything the app needs; the token comes from `env` (default: os.environ) or its file."""
    limits.install(settings.limits)
    token = resolve_token(settings, env)
    check_access(settings, token)
    check_sources(settings)
    forwarders.check(forwarding(settings))  # their files are read again when the app starts them
    plan = cores_plan(settings)  # with workers, the server's own session serves uploads alone
    load = loader(settings, plan.server)
    models = model_store(settings)
    registry = model_registry(settings, load_published(settings, models, load), predictor,
                              lambda: load_predictor(settings, runs=plan.server.runs, threads=plan.server.threads))
    check_camera_models(settings, registry)
    predictor = registry.default.slot.get()
    log_choices(settings, token, predictor)
    metrics = Metrics()
    store = open_store(settings.events.store) if store_wanted(settings) else None
    sweeper = janitor(settings, store) if store is not None else None
    try:
        sinks = build_sinks(settings,  # each result says which iteration made it
                            on_error=lambda name: metrics.sink_errors.labels(name).inc(), store=store, janitor=sweeper)
    except Exception:
        if store is not None:
            store.close()
        raise
    cameras: list[CameraView] = []
    runner: CameraRunner | None = None
    processes: Callable[[], dict[str, int | None]] = server_process
    manager = model_manager(settings, models, registry, load, sinks.latest, store)
    if plan.in_process:
        pipeline = local_pipeline(settings, predictor, sinks.all, metrics, models=camera_slots(settings, registry))
        if pipeline is not None:
            cameras, runner = camera_views(pipeline), pipeline
            share_opencv_threads(plan.server.threads)
    else:
        from .workers.supervisor import WorkerPool, camera_models

        pool = WorkerPool(settings, plan, sinks.all, camera_models(camera_slots(settings, registry)), metrics,
                          log_level=logging.getLogger().getEffectiveLevel())
        manager.listeners.append(pool.swap)  # each worker swaps its own session
        cameras, runner, processes = list(pool.cameras), pool, pool.processes
    if settings.cameras:  # as loaded: a GPU session takes one frame at a time whatever the plan
        loaded = dataclasses.replace(plan, server=Split(predictor.model.runs, plan.server.threads))
        log.info("%s", loaded.describe())
        on_cpu = predictor.model.providers[:1] == ["CPUExecutionProvider"]  # other providers take one run
        if on_cpu and (warning := loaded.oversubscribed()):
            log.warning("%s", warning)
    metrics.registry.register(MemoryCollector(processes))
    metrics.registry.register(ModelsCollector(registry, manager, {c.id: c.model or registry.default.name
                                                                   for c in settings.cameras}))
    return Services(predictor=predictor, settings=settings, auth=Auth(token, settings.server.session_ttl_s),
                    cameras=cameras, pipeline=runner, latest=sinks.latest, events=sinks.broadcaster,
                    frames=sinks.frames, metrics=metrics, sinks=sinks.all, store=store, janitor=sweeper,
                    forwarding=forwarding(settings), registry=registry,
                    manager=manager, retrain=retrainer(settings, models, manager, store))


def retrainer(settings: Settings, models: ModelStore, manager: ModelManager, events: EventStore | None) -> Retrainer:
    """Candidates trained from each name's labels in the event store (publish/retrain.py)."""
    r = settings.models.retrain
    return Retrainer.open(models, manager, labelled_frames(models, events, r.held_out), r)


def serve(settings: Settings) -> None:
    svc = build_services(settings)
    app = create_app(svc)
    log.info("model %s (%s); cameras: %s", svc.predictor.bundle.source, svc.predictor.spec.variant.value,
             ", ".join(f"{c.id}={c.name}" for c in svc.cameras) or "none (uploads only)")
    GracefulServer(server_config(app, settings, timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_S)).run()
