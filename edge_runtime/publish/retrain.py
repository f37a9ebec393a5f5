"""Candidates trained on the device from a model's labelled frames: train, compare, then
promote through the publish path or discard.

    retrainer = Retrainer.open(store, manager, labelled_frames(store, events, models.retrain.held_out),
                               models.retrain)
    job = retrainer.start("shelf")           # in a thread; TrainingBusy while another one runs
    retrainer.job("shelf", job.id).to_json()  # state, progress, error, the comparison
    retrainer.promote("shelf", job.id)       # manager.publish: warm-up, verification, rollback
    retrainer.discard("shelf", job.id)       # recorded as a "discard" model change

A candidate is trained by `edge-export train DATASET/train --backend local` and compared
with the active version by `edge-export compare ACTIVE CANDIDATE DATASET/held_out`, each a
child process at low priority within models.retrain's limits (child.py): the trainer's
dependencies and memory never enter the server, and the cameras keep running.

States: training -> comparing -> ready -> promoted | discarded; any step can end in failed
(with the one-line reason). One training at a time per device (a lock file the kernel
releases when its holder dies). On disk, under the model store, where no published name
can be:

    STORE/.candidates/.lock                    held while a training runs
    STORE/.candidates/NAME/ID/job.json         the job's record (written atomically)
    STORE/.candidates/NAME/ID/dataset/         the snapshot trained on: train/ and held_out/
    STORE/.candidates/NAME/ID/bundles/NAME/v1  what edge-export train wrote
    STORE/.candidates/NAME/ID/compare.json     edge-export compare's figures
    STORE/.candidates/NAME/ID/train.log        each child's output, capped (compare.log beside it)

Nothing here writes to the model's dataset or its published versions: a kill -9 or a full
disk during training leaves the active version serving and the dataset whole, and the next
start marks the interrupted job failed and removes its files.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import secrets
import shutil
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import IO, Any

from ..errors import EdgeRuntimeError, ExportError, ModelStoreError, TrainingError
from ..events.export import export_dataset
from ..events.store import EventStore
from .child import Child, Limits
from .config import RetrainConfig
from .manager import ModelManager
from .registry import Entry
from .store import ModelStore, _tree_bytes, check_name
from .update import Update

log = logging.getLogger(__name__)
FOLDER = ".candidates"
LOCK = ".lock"
JOB = "job.json"
COMPARE = "compare.json"
TRAIN_LOG = "train.log"
MAX_COMPARE_BYTES = 16 << 20
ID_LENGTH = 16  # hex characters of a candidate id
EXPORTER = (sys.executable, "-m", "exporter.cli")  # `edge-export`, from the same installation
TRAIN_SHARE = 0.85  # of the progress bar: training, then the comparison
RUNNING = ("training", "comparing")
FINISHED = ("promoted", "discarded", "failed")

DatasetSource = Callable[[str, Path], None]  # (name, OUT): writes OUT/train and OUT/held_out


class TrainingBusy(TrainingError):
    """A training already runs on this device."""


class NoRoom(TrainingError):
    """Too little free disk to start a training."""


class UnknownCandidate(TrainingError):
    """No such candidate for this name."""


def is_candidate_id(value: str) -> bool:
    return len(value) == ID_LENGTH and all(c in "0123456789abcdef" for c in value)


@dataclass
class Job:
    id: str
    name: str
    state: str = "training"
    phase: str = "dataset"  # dataset, train, compare
    stage: str = ""  # the child's own stage ("features", "active", ...)
    done: int = 0
    total: int = 0
    progress: float = 0.0  # 0..1 over the whole job
    error: str = ""
    created_at: float = field(default_factory=time.time)
    finished_at: float | None = None
    active_version: int | None = None  # the version it was compared with
    version: int | None = None  # the version it became, once promoted
    train_images: int = 0
    held_out_images: int = 0
    pid: int | None = None  # the child's process id while one runs

    def to_json(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items()}
        return {"id": out.pop("id"), "name": out.pop("name"), "createdAt": out.pop("created_at"),
                "finishedAt": out.pop("finished_at"), "activeVersion": out.pop("active_version"),
                "trainImages": out.pop("train_images"), "heldOutImages": out.pop("held_out_images"), **out}

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> Job:
        names = {"createdAt": "created_at", "finishedAt": "finished_at", "activeVersion": "active_version",
                 "trainImages": "train_images", "heldOutImages": "held_out_images"}
        known = {f for f in cls.__dataclass_fields__}
        values = {names.get(k, k): v for k, v in body.items() if names.get(k, k) in known}
        return cls(**values)


def folder_pair(root: Path) -> DatasetSource:
    """A dataset given as a folder pair, ROOT/train and ROOT/held_out (the layouts
    `edge-export train` reads), copied as it is."""

    def write(name: str, out: Path) -> None:
        for part in ("train", "held_out"):
            if not (root / part).is_dir():
                raise TrainingError(f"{root / part}: no such folder (a dataset to retrain from has train/ and "
                                    "held_out/)")
        for part in ("train", "held_out"):
            shutil.copytree(root / part, out / part, symlinks=False)

    return write


def labelled_frames(store: ModelStore, events: EventStore | None, held_out: float) -> DatasetSource:
    """The model's labelled frames as a dataset to retrain from: the one place the server's
    candidates (and `edge-runtime retrain` without --dataset) get theirs.

    `events.export.export_dataset` writes the name's labels from the event store, the newest
    `held_out` share held out (models.retrain.held_out), with the model's base dataset
    (STORE/NAME/dataset/, when a user put one there) merged into train/."""

    def write(name: str, out: Path) -> None:
        if events is None:
            raise TrainingError(f"{name}: no event store, so no labelled frames: label frames on the device page, "
                                "or give a dataset (edge-runtime retrain NAME --dataset DIR)")
        base = store.root / name / "dataset"
        try:
            export_dataset(events, out, name, held_out, base=base if base.is_dir() else None)
        except ExportError as exc:
            raise TrainingError(f"{name}: {exc}") from None

    return write


class Retrainer:
    def __init__(self, store: ModelStore, manager: ModelManager | None, dataset: DatasetSource,
                 settings: RetrainConfig | None = None, command: Sequence[str] = EXPORTER) -> None:
        """`manager`: what promotes (None: a command that only trains); `command`: how
        `edge-export` is started."""
        self.store, self.manager, self.dataset = store, manager, dataset
        self.settings = settings or RetrainConfig()
        self.command = list(command)
        self.root = store.root / FOLDER
        self._lock = threading.Lock()  # the in-memory jobs, and starting one
        self._running: dict[str, Job] = {}  # by id, while its thread runs
        self._children: dict[str, Child] = {}
        self._threads: list[threading.Thread] = []
        self._lockfile: IO[bytes] | None = None

    @classmethod
    def open(cls, store: ModelStore, manager: ModelManager | None, dataset: DatasetSource,
             settings: RetrainConfig | None = None, command: Sequence[str] = EXPORTER) -> Retrainer:
        """A retrainer over `store`, with what a killed server or command left tidied."""
        retrainer = cls(store, manager, dataset, settings, command)
        retrainer.tidy()
        return retrainer

    # ---- starting ----------------------------------------------------------------------------

    def start(self, name: str) -> Job:
        """A new candidate for `name`, trained in a thread; the checks that can refuse at once
        (no such name, a training running, too little disk) raise here."""
        job = self._begin(name)
        thread = threading.Thread(target=self._run, args=(job,), name=f"retrain-{name}", daemon=True)
        self._threads = [t for t in self._threads if t.is_alive()] + [thread]
        thread.start()
        return job

    def run(self, name: str, on_progress: Callable[[Job], None] | None = None) -> Job:
        """As `start`, in this thread (the command line): the finished job."""
        job = self._begin(name)
        self._run(job, on_progress)
        return job

    def _begin(self, name: str) -> Job:
        name = check_name(name)
        state = self.store.state(name)
        if state is None or state.active is None:
            raise UnknownCandidate(f"no model is published as {name!r} in the model store")
        with self._lock:
            self._take_lock()
            try:
                self._room()
                job = Job(secrets.token_hex(ID_LENGTH // 2), name, active_version=state.active)
                self._folder(job).mkdir(parents=True)
                self._save(job)
            except BaseException:
                self._drop_lock()
                raise
            self._running[job.id] = job
        log.info("%s: training candidate %s (against v%d)", name, job.id, state.active)
        return job

    def _take_lock(self) -> None:
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            f = open(self.root / LOCK, "ab")  # noqa: SIM115 (held until the training ends)
        except OSError as exc:
            raise TrainingError(f"{self.root}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            raise TrainingBusy("a training is already running on this device; wait for it to end") from None
        self._lockfile = f

    def _drop_lock(self) -> None:
        if self._lockfile is not None:
            self._lockfile.close()  # closing releases the lock
            self._lockfile = None

    def _room(self) -> None:
        budget = self.settings.max_mb << 20
        free = shutil.disk_usage(self.root).free
        if free < budget:
            raise NoRoom(f"{free >> 20} MB free on the model store's disk; a training needs "
                                f"models.retrain.max_mb ({self.settings.max_mb} MB)")

    # ---- the job -----------------------------------------------------------------------------

    def _run(self, job: Job, on_progress: Callable[[Job], None] | None = None) -> None:
        folder = self._folder(job)
        deadline = time.monotonic() + self.settings.timeout_s
        try:
            dataset = folder / "dataset"
            self._snapshot(job, dataset)
            bundles = folder / "bundles"
            self._child(job, "train", TRAIN_SHARE, deadline, on_progress,
                        ["train", str(dataset / "train"), "--backend", "local", "--project", job.name,
                         "--out", str(bundles), "--progress-lines"])
            candidate = self._bundle(job)
            job.state = "comparing"
            self._save(job)
            active = self.store.version_path(job.name, job.active_version or 0)
            self._child(job, "compare", 1.0 - TRAIN_SHARE, deadline, on_progress,
                        ["compare", str(active), str(candidate), str(dataset / "held_out"),
                         "--json", str(folder / COMPARE), "--progress-lines"])
            self._read_comparison(job)
            shutil.rmtree(dataset / "train", ignore_errors=True)  # held_out stays for the page's thumbnails
            job.state, job.progress, job.stage = "ready", 1.0, ""
            log.info("%s: candidate %s is ready to compare", job.name, job.id)
        except Exception as exc:
            reason = str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}"
            if isinstance(exc, OSError):
                reason = f"{exc.filename + ': ' if exc.filename else ''}{exc.strerror or exc}"
            job.state, job.error, job.finished_at = "failed", reason, time.time()
            log.error("%s: candidate %s failed: %s", job.name, job.id, reason)
            self._remove_files(job)
        finally:
            with contextlib.suppress(OSError):  # a full disk: the record in memory says it
                self._save(job)
            with self._lock:
                self._running.pop(job.id, None)
                self._children.pop(job.id, None)
                self._drop_lock()
            if on_progress is not None:
                on_progress(job)

    def _snapshot(self, job: Job, dataset: Path) -> None:
        """The dataset, copied where the training reads it: the model's own is never written."""
        try:
            self.dataset(job.name, dataset)  # the labelled frames (labelled_frames), or a folder pair
        except OSError as exc:
            raise TrainingError(f"the dataset could not be written for training: {exc.strerror or exc}") from None
        size = _tree_bytes(dataset)
        if size > self.settings.max_mb << 20:
            raise TrainingError(f"the dataset is {size >> 20} MB, over models.retrain.max_mb "
                                f"({self.settings.max_mb} MB)")
        job.train_images = _images(dataset / "train")
        job.held_out_images = _images(dataset / "held_out")
        if not job.held_out_images:
            raise TrainingError("no held-out labelled frames to compare on: label more frames")

    def _child(self, job: Job, phase: str, share: float, deadline: float,
               on_progress: Callable[[Job], None] | None, args: list[str]) -> None:
        start = job.progress
        job.phase, job.stage, job.done, job.total = phase, "", 0, 0
        self._save(job)

        def progress(stage: str, done: int, total: int) -> None:
            job.stage, job.done, job.total = stage, done, total
            job.progress = min(start + share, start + share * done / total)
            if on_progress is not None:
                on_progress(job)

        left = deadline - time.monotonic()
        if left <= 0:
            raise TrainingError(f"the training ran past its deadline ({self.settings.timeout_s:g} s)")
        s = self.settings
        limits = Limits(timeout_s=left, max_output=s.max_output_kb << 10, max_file=s.max_mb << 20, nice=s.nice)
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        child = Child([*self.command, *args], limits, self._folder(job) / f"{phase}.log", progress, env,
                      what="the training" if phase == "train" else "the comparison")
        with self._lock:
            self._children[job.id] = child
        child.on_start = lambda pid: setattr(job, "pid", pid)
        try:
            child.run()
        except TrainingError:
            if child.timed_out:  # the deadline is the whole job's, not what was left of it
                raise TrainingError(f"{child.what} ran past models.retrain.timeout_s ({s.timeout_s:g} s) and was "
                                    "stopped") from None
            raise
        finally:
            job.pid = None

    def _bundle(self, job: Job) -> Path:
        found = sorted((self._folder(job) / "bundles" / job.name).glob("v*/model.onnx"))
        if not found:
            raise TrainingError("the training ended without writing a bundle")
        return found[-1].parent

    def _read_comparison(self, job: Job) -> dict[str, Any]:
        path = self._folder(job) / COMPARE
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_COMPARE_BYTES + 1)
            if len(raw) > MAX_COMPARE_BYTES:
                raise ValueError("too large")
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
        except (OSError, ValueError) as exc:
            raise TrainingError(f"the comparison could not be read: {exc}") from None
        return body

    # ---- reading -----------------------------------------------------------------------------

    def jobs(self, name: str) -> list[Job]:
        """Every candidate of `name`, newest first."""
        folder = self.root / check_name(name)
        found = []
        for path in folder.iterdir() if folder.is_dir() else ():
            if is_candidate_id(path.name):
                with contextlib.suppress(UnknownCandidate):
                    found.append(self.job(name, path.name))
        return sorted(found, key=lambda j: j.created_at, reverse=True)

    def job(self, name: str, job_id: str) -> Job:
        if not is_candidate_id(job_id):
            raise UnknownCandidate(f"{job_id[:64]!r} is not a candidate id")
        with self._lock:
            running = self._running.get(job_id)
        if running is not None and running.name == name:
            return running
        path = self.root / check_name(name) / job_id / JOB
        try:
            return Job.from_json(json.loads(path.read_bytes()[:1 << 20]))
        except (OSError, ValueError, TypeError):
            raise UnknownCandidate(f"{name} has no candidate {job_id}") from None

    def comparison(self, name: str, job_id: str) -> dict[str, Any] | None:
        job = self.job(name, job_id)
        if job.state in RUNNING or not (self._folder(job) / COMPARE).is_file():
            return None
        return self._read_comparison(job)

    def image(self, name: str, job_id: str, index: int) -> Path:
        """The held-out image of the comparison's disagreement `index`, while the candidate is ready."""
        job = self.job(name, job_id)
        body = self.comparison(name, job_id) if job.state == "ready" else None
        listed = body.get("disagreements") if body else None
        if not isinstance(listed, list) or not 0 <= index < len(listed) or not isinstance(listed[index], dict):
            raise UnknownCandidate(f"candidate {job_id} has no disagreement {index}")
        held_out = (self._folder(job) / "dataset" / "held_out").resolve()
        path = (held_out / str(listed[index].get("image", ""))).resolve()
        if not path.is_relative_to(held_out) or not path.is_file():
            raise UnknownCandidate(f"candidate {job_id} has no image for disagreement {index}")
        return path

    # ---- deciding ----------------------------------------------------------------------------

    def promote(self, name: str, job_id: str) -> Entry:
        """The candidate published through the manager (warm-up, verification, rollback);
        an EdgeRuntimeError with the reason leaves it ready and the active version serving."""
        if self.manager is None:
            raise ModelStoreError("this command has no model manager to promote with")
        job = self._ready(name, job_id)
        state = self.store.state(name)
        if state is None or state.active != job.active_version:
            raise TrainingBusy(f"{name}: the active version is v{state.active if state else '-'} now, not the "
                               f"v{job.active_version} this candidate was compared with; train again")
        try:
            entry = self.manager.publish(Update(self._bundle(job), name, source="retrain",
                                                origin=f"candidate {job.id}"))
        except EdgeRuntimeError as exc:
            job.error = f"not promoted: {exc}"
            self._save(job)
            raise
        active = entry.slot.active
        job.state, job.version, job.finished_at, job.error = "promoted", active.version if active else None, \
            time.time(), ""
        self._save(job)
        self._remove_files(job)
        return entry

    def discard(self, name: str, job_id: str) -> Job:
        """Thrown away, recorded as a "discard" model change; a failed one's record is removed."""
        job = self.job(name, job_id)
        if job.state in RUNNING:
            raise TrainingBusy(f"candidate {job_id} is still {job.state}; wait for it to end")
        if job.state == "failed":
            shutil.rmtree(self._folder(job), ignore_errors=True)
            return job
        job = self._ready(name, job_id)
        job.state, job.finished_at = "discarded", time.time()
        self._save(job)
        self._remove_files(job)
        if self.manager is not None:
            self.manager.discarded(name, f"candidate {job.id} discarded (trained on {job.train_images} images, "
                                   f"compared with v{job.active_version})", source="retrain")
        return job

    def _ready(self, name: str, job_id: str) -> Job:
        job = self.job(name, job_id)
        if job.state != "ready":
            raise TrainingBusy(f"candidate {job_id} is {job.state}, not ready")
        return job

    # ---- files -------------------------------------------------------------------------------

    def stop(self, timeout: float = 5.0) -> None:
        """Stop a running training (the server is shutting down) and wait for its thread."""
        with self._lock:
            children = list(self._children.values())
        for child in children:
            child.cancel()
        for thread in self._threads:
            thread.join(timeout)

    def tidy(self) -> None:
        """What a killed server or command left: jobs that were running marked failed and their
        files removed (unless a training is running now), finished jobs' files removed, only
        the newest models.retrain.keep records kept per name."""
        if not self.root.is_dir():
            return
        try:
            self._take_lock()
        except TrainingBusy:
            return  # a command beside this server is training: its files are its own
        try:
            for folder in self.root.iterdir():
                if folder.is_dir() and folder.name != LOCK:
                    self._tidy_name(folder)
        finally:
            self._drop_lock()

    def _tidy_name(self, folder: Path) -> None:
        records = []
        for path in folder.iterdir():
            try:
                job = Job.from_json(json.loads((path / JOB).read_bytes()[:1 << 20]))
            except (OSError, ValueError, TypeError):
                shutil.rmtree(path, ignore_errors=True)  # not one of ours, or written halfway
                continue
            if job.state in RUNNING:
                job.state, job.finished_at = "failed", time.time()
                job.error = "interrupted: the server or command stopped during the training"
                with contextlib.suppress(OSError):
                    self._save(job)
            if job.state in FINISHED:
                self._remove_files(job)
                records.append(job)
        records.sort(key=lambda j: j.finished_at or j.created_at, reverse=True)
        for old in records[self.settings.keep:]:
            shutil.rmtree(self._folder(old), ignore_errors=True)

    def _folder(self, job: Job) -> Path:
        return self.root / job.name / job.id

    def _save(self, job: Job) -> None:
        path = self._folder(job) / JOB
        tmp = path.with_name(f".{JOB}.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(job.to_json(), f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def _remove_files(self, job: Job) -> None:
        """The bulk of a finished job; its record, comparison and log stay."""
        folder = self._folder(job)
        for part in ("dataset", "bundles"):
            shutil.rmtree(folder / part, ignore_errors=True)


def _images(folder: Path) -> int:
    suffixes = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp"}
    return sum(1 for p in folder.rglob("*") if p.suffix.lower() in suffixes) if folder.is_dir() else 0


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def comparison_table(report: dict[str, Any]) -> str:
    """The comparison as text: one row per tag, the active version's figure, then the candidate's."""
    detection = report["kind"] == "detection"
    names = ("ap",) if detection else ("precision", "recall", "ap")
    width = max([len(t["tag"]) for t in report["perTag"]] + [7])
    head = "  ".join(f"{'AP@0.5' if detection else n:>17}" for n in names)
    lines = [f"{'tag':<{width}}  {head}  images", f"{'':<{width}}  " + "  ".join(
        f"{'active':>8} {'new':>8}" for _ in names)]
    for t in report["perTag"]:
        cells = "  ".join(f"{_pct(t['active'][n]):>8} {_pct(t['candidate'][n]):>8}" for n in names)
        lines.append(f"{t['tag']:<{width}}  {cells}  {t['images']:>6}")
    overall = report["overall"]
    keys = ("map50",) if detection else names
    cells = "  ".join(f"{_pct(overall['active'][k]):>8} {_pct(overall['candidate'][k]):>8}" for k in keys)
    lines.append(f"{'mAP@0.5' if detection else 'overall':<{width}}  {cells}")
    lines.append(f"{report['disagreementCount']} of {report['images']} images answered differently")
    return "\n".join(lines)
