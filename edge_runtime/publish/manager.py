"""Versions swapped in while the server runs: load beside, warm up, verify, switch, and
roll back by itself when a version fails or misbehaves.

    manager = ModelManager(store, registry, loader, settings)
    manager.publish(Update(Path("export.zip"), "shelf", source="http"))  # active when it returns
    manager.start()   # sees `edge-runtime publish` from the command line; watches new versions

Every update, whatever delivered it (publish/update.py), goes the same way:

1. staged into the store as the next version, not active (store.add);
2. its signature checked when `models.public_key` is set, and a signed version older than the
   active one (a replayed old release) refused unless a rollback asks for it;
3. loaded beside the active version with the server's own options (or, with
   `models.swap: unload-first`, after the active one is unloaded: requests wait meanwhile);
4. warmed up on the recent frames of the cameras that use it (the built-in sample photos
   when none has one) and verified: outputs finite, the same kind of model (a detector does not
   replace a classifier under one name), and, with a labelled folder (`eval_dir`, or
   `models.path/NAME/eval/`) or held-out labels of the name (labels made on the device, see
   events/labels.py), top-1 accuracy no worse than the active version's by more than
   `models.eval_margin`;
5. made active in the store (state.json, atomically), then in the slot that requests and
   camera frames take it from (model/slot.py); listeners (worker processes) are told.

A version that fails a step never becomes active: it is removed, the reason is logged in one
line, counted, shown in /api/models and recorded. For `models.probation_s` after a swap the
new version is watched; failed runs or non-finite outputs roll it back to the previous
version by themselves. A version the command line made active is taken through steps 3 to 5
when the server sees it, and rolled back in the store if it fails there.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from ..errors import EdgeRuntimeError, ModelStoreError
from ..events.model_changes import ModelChange
from ..model.imageio import read_image
from ..model.predictor import Predictor, non_finite
from ..model.slot import Active, ModelSlot
from ..paths import DEMO_SAMPLES
from ..service.rss import rss_bytes
from . import evaluate, signing
from .config import ModelsConfig
from .registry import Entry, Registry
from .store import ModelStore, check_name
from .update import Update

log = logging.getLogger(__name__)
POLL_S = 1.0  # how often the store is looked at for changes made from the command line
FREE_WAIT_S = 30.0  # unload-first: how long the old session may take to be released
WARM_UP_FRAMES = 3
EVAL_DIR = "eval"

Loader = Callable[[Path, str], Predictor]  # a version's folder and its name -> a loaded, warmed predictor
Frames = Callable[[str], Sequence[np.ndarray]]  # recent frames of the cameras that use a name
Listener = Callable[[str, Path, int], None]  # told of each swap: name, version folder, version


class Feed(Protocol):
    """A thread that brings updates from outside and hands each to `publish` (pull.py, iotedge.py)."""

    def start(self) -> object: ...

    def stop(self, timeout: float = 5.0) -> object: ...


@dataclass(frozen=True)
class Policy:
    """The `models:` settings the manager acts on."""

    swap: str = "beside"  # or "unload-first"
    probation_s: float = 300.0
    probation_failures: int = 3  # failed or non-finite runs in probation that roll a version back
    eval_margin: float = 0.02
    public_key: Path | None = None

    @classmethod
    def of(cls, models: ModelsConfig) -> Policy:
        return cls(swap=models.swap, probation_s=models.probation_s, eval_margin=models.eval_margin,
                   public_key=getattr(models, "public_key", None))


@dataclass(frozen=True)
class Was:
    """What a change needs to know of a version, without holding its session."""

    version: int | None
    iteration: str
    detection: bool

    @classmethod
    def of(cls, active: Active[Predictor] | None) -> Was | None:
        if active is None:
            return None
        p = active.predictor
        return cls(active.version, p.iteration, p.spec.variant.is_detection)


@dataclass
class Status:
    """What /api/models and /metrics show of a name beyond its active version."""

    state: str = "active"  # "active", "loading", "unloaded-for-swap", "probation"
    last_error: str = ""
    last_error_at: float | None = None
    refused: int = 0
    rolled_back: int = 0
    swaps: int = 0
    last_swap_s: float | None = None  # from the start of the load to the switch
    probation_until: float | None = None
    changes: list[ModelChange] = field(default_factory=list)


class ModelManager:
    def __init__(self, store: ModelStore, registry: Registry, loader: Loader, policy: Policy | None = None,
                 frames: Frames | None = None, record: Callable[[ModelChange], None] | None = None,
                 signature_check: Callable[[Path, Path | None, Path | None], bool] | None = None,
                 release_of: Callable[[Path], Any] | None = None,
                 held_out: Callable[[str], Sequence[tuple[str, np.ndarray]]] | None = None) -> None:
        """`signature_check(folder, signature, public_key)` and `release_of(folder)`: signing.py's
        (model-signing is an optional extra: without it a configured key refuses every update).
        `held_out(name)`: the name's held-out labelled frames (tag, image), which the accuracy
        gate measures too (events/export.py's held_out_frames)."""
        self.store, self.registry, self.loader = store, registry, loader
        self.policy = policy or Policy()
        self.frames = frames or (lambda name: ())
        self.record = record
        self.signature_check = signature_check or signing.require_signed
        self.release_of = release_of or signing.created_of
        self.held_out = held_out or (lambda name: ())
        self.listeners: list[Listener] = []
        self.feeds: list[Feed] = []  # what brings updates from outside: the puller, the module twin
        self.log_refusals = True
        self.status: dict[str, Status] = {}
        self._lock = threading.RLock()  # one change at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def for_name(cls, store: ModelStore, name: str, loader: Loader, policy: Policy | None = None) -> ModelManager:
        """A manager for one change to one name outside a server (`edge-runtime publish`): the
        same checks, against the name's active version as the store has it."""
        state = store.state(check_name(name))
        predictor = (loader(store.version_path(name, state.active), name)
                     if state is not None and state.active is not None else None)
        slot: ModelSlot[Predictor] = ModelSlot(name, predictor, state.active if state else None)
        manager = cls(store, Registry(Entry(name, state.project if state else None, slot)), loader, policy)
        manager.log_refusals = False
        return manager

    # ---- running ---------------------------------------------------------------------------

    def start(self) -> ModelManager:
        self._thread = threading.Thread(target=self._watch, name="models", daemon=True)
        self._thread.start()
        for feed in self.feeds:
            feed.start()
        return self

    def stop(self, timeout: float = 3.0) -> None:
        for feed in self.feeds:
            feed.stop(timeout)
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def _watch(self) -> None:
        while not self._stop.wait(POLL_S):
            try:
                self.tick()
            except Exception as exc:  # the watcher serves every name: it must not die
                log.error("model store: %s", exc if isinstance(exc, EdgeRuntimeError) else repr(exc))

    def tick(self) -> None:
        """One look: probation verdicts, then what the command line changed in the store."""
        self.check_probation()
        self.refresh()

    # ---- changes -----------------------------------------------------------------------------

    def publish(self, update: Update) -> Entry:
        """Stage, check, load, warm up, verify and swap in `update`; the active version is
        unchanged on any error (an EdgeRuntimeError with the one-line reason)."""
        name = check_name(update.name)
        with self._lock:
            try:
                version = self.store.add(update.path, name, update.project, verify=False)
            except EdgeRuntimeError as exc:
                self._refused(name, None, update.source, str(exc))
                raise
            folder = self.store.version_path(name, version)
            try:
                self._check_signature(update, folder)
                entry = self._swap_in(name, version, folder, update.project, update.eval_dir, "publish",
                                      update.source)
            except EdgeRuntimeError as exc:
                self._refused(name, version, update.source, str(exc))
                try:
                    self.store.discard(name, version)
                except (EdgeRuntimeError, OSError) as gone:
                    log.warning("%s v%d: %s", name, version, gone)
                raise
            return entry

    def rollback(self, name: str, reason: str = "rollback", source: str = "http", detail: str = "") -> Entry:
        """The version before the active one, loaded, checked and swapped in."""
        with self._lock:
            state = self.store.state(check_name(name))
            if state is None or state.previous is None:
                raise ModelStoreError(f"{name} has no earlier version to go back to" if state else
                                      f"no model published as {name!r}")
            previous = state.previous
            folder = self.store.version_path(name, previous)
            if not folder.is_dir():
                raise ModelStoreError(f"{name} v{previous} is no longer on the disk")
            current = state.active
            return self._swap_in(name, previous, folder, None, None, reason, source, detail=detail,
                                 activate=lambda: self.store.rollback(name, reason, verify=False, expect=current))

    def unpublish(self, name: str, source: str = "http", in_use: Sequence[str] = ()) -> None:
        """Stop serving `name` and remove it from the store. The default model, and a model a
        camera runs, are refused: unpublishing must not stop a camera."""
        with self._lock:
            entry = self.registry.entry(check_name(name))
            if name in in_use:
                raise ModelStoreError(f"{name} is the model of a camera; change the camera's model first")
            if entry is not None:
                self.registry.remove(name)
            self.store.unpublish(name)
            active = entry.slot.active if entry else None
            self._record(name, entry.project if entry else None, Was.of(active), None, "unpublish", source, "")
            self.status.pop(name, None)

    def discarded(self, name: str, detail: str, source: str = "retrain") -> None:
        """A candidate version was thrown away before it was published (publish/retrain.py):
        recorded as a "discard" change; the active version stays (old and new are both it)."""
        with self._lock:
            entry = self.registry.entry(check_name(name))
            was = Was.of(entry.slot.active) if entry else None
            self._record(name, entry.project if entry else None, was, was, "discard", source, detail)

    def refresh(self) -> None:
        """Take in what changed in the store without this server: a publish or rollback from
        the command line (loaded, checked and swapped; rolled back in the store if it fails
        here), a name published or unpublished."""
        with self._lock:
            names = set(self.store.names())
            for name in sorted(names):
                try:
                    state = self.store.state(name)
                except EdgeRuntimeError as exc:
                    self._note_error(name, str(exc))
                    continue
                if state is None or state.active is None:
                    continue
                entry = self.registry.entry(name)
                active = entry.slot.active if entry else None
                if entry is not None and entry.project != state.project:
                    entry.project = state.project
                if active is not None and active.version == state.active:
                    continue
                if active is not None and active.version is None:
                    continue  # served from the command line's own path: the store does not change it
                if self._known_bad(name, state.active):
                    continue
                was = Was.of(active)
                del active  # unload-first frees it: nothing here may hold it
                folder = self.store.version_path(name, state.active)
                reason = state.history[-1].reason or "publish"
                try:
                    self._swap_in(name, state.active, folder, state.project, None, reason, "cli", activate=None)
                except EdgeRuntimeError as exc:
                    self._refused(name, state.active, "cli", str(exc))
                    if state.previous is not None and was is not None:
                        self.store.rollback(name, "auto-rollback", verify=False, expect=state.active)
                        self._record(name, state.project, None, was, "auto-rollback", "cli", str(exc),
                                     new_version=was.version)
            for name in [n for n, e in self.registry.models.items()
                         if n not in names and e.slot.active is not None and e.slot.active.version is not None]:
                if name != self.registry.default.name:  # unpublished from the command line
                    entry = self.registry.entry(name)
                    self.registry.remove(name)
                    self._record(name, entry.project if entry else None, Was.of(entry.slot.active) if entry else None,
                                 None, "unpublish", "cli", "")

    def check_probation(self, now: float | None = None) -> None:
        """Roll back a version that failed runs or gave non-finite outputs in its first
        minutes; end the probation of one that did not."""
        now = time.time() if now is None else now
        for name in list(self.status):
            with self._lock:  # a PUT or rollback meanwhile changes what is judged
                self._judge(name, now)

    def _judge(self, name: str, now: float) -> None:
        status = self.status.get(name)
        if status is not None and status.probation_until is not None:
            entry = self.registry.entry(name)
            active = entry.slot.active if entry else None
            if active is None:
                return
            health = active.predictor.health
            bad = health.errors + health.non_finite
            if bad >= self.policy.probation_failures:
                detail = (f"v{active.version} misbehaved in its first minutes: {health.errors} failed runs, "
                          f"{health.non_finite} with outputs that are not finite, of {health.runs}")
                health.watching, status.probation_until = False, None
                del active, health  # unload-first frees it: nothing here may hold it
                log.error("%s: %s; rolling back", name, detail)
                try:
                    self.rollback(name, "auto-rollback", "probation", detail=detail)
                except EdgeRuntimeError as exc:
                    self._note_error(name, f"{detail}; rollback failed: {exc}")
                    return
                status.rolled_back += 1
                self._note_error(name, detail)
            elif now >= status.probation_until:
                health.watching, status.probation_until, status.state = False, None, "active"

    # ---- internals ---------------------------------------------------------------------------

    def _check_signature(self, update: Update, folder: Path) -> None:
        key = self.policy.public_key
        if key is None:
            return
        # the signature given, else the export's own (beside a zip, model.sig in a folder and so in its copy)
        signature = update.signature or signing.signature_for(update.path) or signing.signature_for(folder)
        self.signature_check(folder, signature, key)  # the copy that will be served; SignatureError says why
        if update.source == "rollback":
            return
        entry = self.registry.entry(update.name)
        active = entry.slot.active if entry else None
        if active is None or active.version is None:
            return
        new, old = self.release_of(folder), self.release_of(Path(active.predictor.bundle.root))
        if new is not None and old is not None and new < old:
            raise ModelStoreError(f"refused: this signed export was made {new:%Y-%m-%d %H:%M} UTC, before the active "
                                  f"v{active.version} ({old:%Y-%m-%d %H:%M} UTC); roll back to go to an older one")

    def _swap_in(self, name: str, version: int, folder: Path, project: str | None, eval_dir: Path | None,
                 reason: str, source: str, detail: str = "",
                 activate: Callable[[], object] | bool | None = True) -> Entry:
        """Steps 3 to 5. `activate`: True to make `version` active in the store after the
        checks, a callable that does it, None when the store already names it."""
        entry = self.registry.entry(name)
        active = entry.slot.active if entry else None
        was = Was.of(active)
        status = self.status.setdefault(name, Status())
        started = time.monotonic()
        unload_first = self.policy.swap == "unload-first" and entry is not None and active is not None
        gate = eval_dir or self.store.root / name / EVAL_DIR
        gate_dir = gate if gate.is_dir() else None
        if eval_dir is not None and gate_dir is None:
            raise ModelStoreError(f"{eval_dir}: the labelled folder does not exist")
        extra = list(self.held_out(name))  # the name's held-out labels: classifiers' only
        old_accuracy = None
        if active is not None and (gate_dir is not None or extra) and not was.detection:  # type: ignore[union-attr]
            old_accuracy = evaluate.accuracy(active.predictor, gate_dir, more=extra)  # before unload-first frees it
        del active  # unload-first frees it: nothing here may hold it
        if unload_first:
            assert entry is not None
            self._unload(entry, f"v{version}")
        status.state = "loading"
        try:
            before = rss_bytes()
            predictor = self.loader(folder, name)
            after = rss_bytes()
            memory = after - before if before is not None and after is not None else None
            self._verify(name, predictor, was, gate_dir, old_accuracy, eval_dir is not None, extra)
            if activate is True:
                self.store.activate(name, version, reason, project)
            elif callable(activate):
                activate()
        except Exception as exc:  # a failed store write too: the version that was active comes back
            status.state = "active"
            if unload_first and entry is not None and was is not None:
                self._reload(entry, was.version)
            raise exc if isinstance(exc, EdgeRuntimeError) else ModelStoreError(f"{name} v{version}: {exc}") from exc
        predictor.health.watching = True
        if entry is None:
            entry = Entry(name, project, ModelSlot(name, predictor, version, memory))
            self.registry.add(entry)
        else:
            freed = f"{name} v{was.version}" if was else name
            entry.slot.swap(predictor, version, memory, on_freed=lambda: log.info("%s freed", freed))
            if project is not None:
                entry.project = project
        status.state, status.swaps = "probation", status.swaps + 1
        status.last_swap_s = time.monotonic() - started
        status.probation_until = time.time() + self.policy.probation_s
        log.info("%s v%s is active (%s, from %s; loaded and verified in %.1f s%s)", name, version, reason, source,
                 status.last_swap_s, f", {memory / 2**20:.0f} MB" if memory else "")
        self._record(name, entry.project, was, Was.of(entry.slot.active), reason, source, detail)
        for listener in self.listeners:
            try:
                listener(name, folder, version)
            except Exception as exc:
                log.error("%s v%d: telling a listener failed: %s", name, version, exc)
        return entry

    def _verify(self, name: str, new: Predictor, was: Was | None, gate_dir: Path | None,
                old_accuracy: float | None, asked: bool, extra: Sequence[tuple[str, np.ndarray]] = ()) -> None:
        detection = new.spec.variant.is_detection
        if was is not None and was.detection != detection:
            kinds = ("an object detector", "a classifier")
            raise ModelStoreError(f"{name}: {kinds[not detection]} cannot replace {kinds[not was.detection]} under "
                                  "one name; publish it under another name")
        for frame in self._warm_up_frames(name):
            prepared = new.prepare(frame)
            outputs = new.infer(prepared.tensor)
            if (bad := non_finite(outputs)) is not None:
                raise ModelStoreError(f"{name}: output {bad} is not finite on a warm-up frame")
            new.finish(outputs, prepared)
        if gate_dir is None and not extra:
            return
        if detection:
            if asked:
                raise ModelStoreError(f"{name}: an accuracy gate (--eval) is for classifiers; this is a detector")
            return
        new_accuracy = evaluate.accuracy(new, gate_dir, more=extra)
        if old_accuracy is None:
            return
        where = " and ".join([str(gate_dir)] * (gate_dir is not None) + [f"{len(extra)} held-out labels"] * bool(extra))
        if new_accuracy < old_accuracy - self.policy.eval_margin:
            raise ModelStoreError(f"{name}: top-1 accuracy on {where} is {new_accuracy:.1%}, below the active "
                                  f"version's {old_accuracy:.1%} by more than {self.policy.eval_margin:.1%}")
        log.info("%s: top-1 accuracy on %s %.1f%% (active version %.1f%%)", name, where, 100 * new_accuracy,
                 100 * old_accuracy)

    def _warm_up_frames(self, name: str) -> list[np.ndarray]:
        frames = list(self.frames(name))[:WARM_UP_FRAMES]
        if frames:
            return frames
        return [read_image(p) for p in sorted(DEMO_SAMPLES.glob("*.jpg"))[:WARM_UP_FRAMES]]

    def _unload(self, entry: Entry, loading: str) -> None:
        """unload-first: empty the slot, and wait for running requests to let the old go."""
        status = self.status.setdefault(entry.name, Status())
        status.state = "unloaded-for-swap"
        freed = threading.Event()
        active = entry.slot.active
        gone = f"{entry.name} v{active.version if active else '?'}"
        del active

        def on_freed() -> None:
            log.info("%s freed", gone)
            freed.set()

        old = entry.slot.unload(loading, on_freed=on_freed)
        log.warning("%s: unloaded before loading %s (models.swap: unload-first); requests wait for the load",
                    entry.name, loading)
        del old
        deadline = time.monotonic() + FREE_WAIT_S
        while not freed.is_set() and time.monotonic() < deadline:
            gc.collect()
            freed.wait(0.05)

    def _reload(self, entry: Entry, version: int | None) -> None:
        """unload-first, after a failed load: the version that was active, back in its slot."""
        path = self.store.version_path(entry.name, version) if version else None
        if path is None:
            return
        try:
            entry.slot.swap(self.loader(path, entry.name), version)
        except EdgeRuntimeError as exc:
            self._note_error(entry.name, f"v{version} could not be loaded again: {exc}")

    def _known_bad(self, name: str, version: int) -> bool:
        status = self.status.get(name)
        return bool(status and status.changes and status.changes[-1].reason == "refused"
                    and status.changes[-1].new_version == version)

    def _refused(self, name: str, version: int | None, source: str, reason: str) -> None:
        if self.log_refusals:  # a command prints the reason itself
            log.error("%s%s refused (%s): %s", name, f" v{version}" if version else "", source, reason)
        status = self.status.setdefault(name, Status())
        status.refused += 1
        self._note_error(name, reason)
        entry = self.registry.entry(name)
        self._record(name, entry.project if entry else None, Was.of(entry.slot.active) if entry else None, None,
                     "refused", source, reason, new_version=version)

    def _note_error(self, name: str, reason: str) -> None:
        status = self.status.setdefault(name, Status())
        status.last_error, status.last_error_at = reason, time.time()

    def _record(self, name: str, project: str | None, old: Was | None, new: Was | None, reason: str, source: str,
                detail: str, new_version: int | None = None) -> None:
        change = ModelChange(name, project, old.version if old else None, new.version if new else new_version,
                        old.iteration if old else "", new.iteration if new else "", reason, detail, source,
                        time.time())
        status = self.status.setdefault(name, Status())
        status.changes = [*status.changes[-19:], change]
        if self.record is not None:
            try:
                self.record(change)
            except EdgeRuntimeError as exc:  # a full event store does not stop a swap
                log.error("%s: the change could not be recorded: %s", name, exc)
