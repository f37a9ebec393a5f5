"""The model store: published models on the device, by name, with their versions.

    models/                   models.path: under systemd models/ in the state folder
      shelf/                  a published name
        v1/ v2/ v3/           verified exports (versions.py: the layout `edge-export train` writes)
        state.json            which version is active, the project it answers for, the history
      .lock                   held while the store changes (a CLI publish beside a running server)

    store = ModelStore.open(Path("models"), keep=3)
    store.publish(Path("export.zip"), "shelf", project="2d50...")   # copied, verified, active
    store.rollback("shelf")                                          # the version before it
    store.unpublish("shelf")
    [m.name for m in store.models()]

Every change is crash-safe: a version is staged beside the others and renamed whole, and
`state.json` is replaced atomically (written beside, fsynced, renamed) only after the
version it names is on the disk. After kill -9 at any instant, a name is at its old version
or its new one; what a killed publish left (a staging folder, a version never made active)
is removed at the next open. `keep` versions per name stay on disk; the active and the
previous one are never removed. The state is plain JSON, readable by hand.

A model named on the command line or in model.path is served without being copied here
(a read-only root filesystem keeps working); see serve.py.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EdgeRuntimeError, ModelStoreError
from ..model.bundle import Bundle, open_bundle
from ..model.predictor import Predictor
from ..paths import fsync_dir
from . import versions as v
from .config import NAME

log = logging.getLogger(__name__)
STATE = "state.json"
LOCK = ".lock"
REMOVED_PREFIX = ".removed-"
UPLOADS = ".uploads"  # PUT /api/models streams each export here first
PENDING_PREFIX = ".pending-"  # NAME/.pending-vN: vN is claimed but not yet checked (a killed swap leaves it)
STATE_SCHEMA = 1
MAX_STATE_BYTES = 1 << 20
STALE_STAGING_S = 600.0  # a staging folder untouched this long belongs to a killed publish
PROJECT = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
HISTORY = 50  # activations remembered per name


def check_project(project: str | None) -> None:
    if project is not None and not PROJECT.fullmatch(project):
        raise ConfigError(f"project {project!r}: use 1 to 64 letters, digits, '_', '-' or '.'")


def check_name(name: str, what: str = "name") -> str:
    if not NAME.fullmatch(name or "") or name in (".", ".."):
        raise ConfigError(f"{what} {name!r}: use 1 to 64 letters, digits, '_', '-' or '.', starting with a "
                          "letter or digit")
    return name


@dataclass(frozen=True)
class Activation:
    version: int
    at: str  # ISO 8601, UTC
    reason: str  # "publish", "rollback"

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "at": self.at, "reason": self.reason}


@dataclass(frozen=True)
class State:
    name: str
    project: str | None
    history: tuple[Activation, ...] = ()  # oldest first; the last is the active version

    @property
    def active(self) -> int | None:
        return self.history[-1].version if self.history else None

    @property
    def previous(self) -> int | None:
        """What rollback goes back to: the activation before the current one."""
        return self.history[-2].version if len(self.history) > 1 else None

    def to_json(self) -> dict[str, Any]:
        return {"schema": STATE_SCHEMA, "name": self.name, "project": self.project, "active": self.active,
                "previous": self.previous, "history": [a.to_json() for a in self.history]}

    @classmethod
    def from_json(cls, data: Any, name: str) -> State:
        if not isinstance(data, dict) or data.get("schema") != STATE_SCHEMA or data.get("name") != name:
            raise ValueError("not a state file of this store")
        project = data.get("project")
        if project is not None and not (isinstance(project, str) and PROJECT.fullmatch(project)):
            raise ValueError(f"project {project!r} is not a project id")
        history = []
        for item in data.get("history", []):
            version = item.get("version") if isinstance(item, dict) else None
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ValueError(f"history entry {item!r} is not a version")
            history.append(Activation(version, str(item.get("at", "")), str(item.get("reason", ""))))
        return cls(name, project, tuple(history))


@dataclass(frozen=True)
class Published:
    """One name as `edge-runtime models` shows it."""

    name: str
    project: str | None
    active: int | None
    path: Path | None  # the active version's folder
    iteration: str
    sha1: str
    tags: tuple[str, ...]
    activated_at: str
    previous: int | None
    versions: tuple[int, ...] = field(default_factory=tuple)

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "project": self.project, "activeVersion": self.active,
                "path": str(self.path) if self.path else None, "iteration": self.iteration, "sha1": self.sha1,
                "tags": list(self.tags), "activatedAt": self.activated_at, "previousVersion": self.previous,
                "versions": list(self.versions)}


def _now() -> str:
    return dt.datetime.now(dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class ModelStore:
    def __init__(self, root: Path, keep: int = 3, max_bytes: int | None = None) -> None:
        self.root, self.keep, self.max_bytes = root, keep, max_bytes

    @classmethod
    def open(cls, root: Path, keep: int = 3, max_bytes: int | None = None) -> ModelStore:
        """The store at `root` (created if need be), with what killed writers left removed."""
        if keep < 2:
            raise ConfigError("models.keep must be at least 2 (the active and the previous version)")
        store = cls(Path(root), keep, max_bytes)
        try:
            v.make_dirs(store.root)
        except OSError as exc:
            raise ModelStoreError(f"model store {root}: {exc.strerror or exc}") from None
        with store._locked():
            store._tidy()
        return store

    # ---- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        if not self.root.is_dir():  # nothing published yet: the first publish creates it
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and NAME.fullmatch(p.name)
                      and (p / STATE).is_file())

    def state(self, name: str) -> State | None:
        path = self.root / check_name(name) / STATE
        try:
            with open(path, "rb") as f:
                raw = f.read(MAX_STATE_BYTES + 1)
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise ModelStoreError(f"{path}: {exc.strerror or exc}") from None
        try:
            if len(raw) > MAX_STATE_BYTES:
                raise ValueError("too large")
            return State.from_json(json.loads(raw), name)
        except ValueError as exc:  # json.JSONDecodeError included
            raise ModelStoreError(f"{path}: damaged ({exc}); fix or remove it by hand") from None

    def version_path(self, name: str, version: int) -> Path:
        return self.root / check_name(name) / f"v{version}"

    def models(self) -> list[Published]:
        out = []
        for name in self.names():
            try:
                out.append(self.describe(name))
            except EdgeRuntimeError as exc:  # one damaged name does not hide the others
                log.warning("model %s: %s", name, exc)
        return out

    def describe(self, name: str) -> Published:
        state = self.state(name)
        if state is None:
            raise ModelStoreError(f"no model published as {name!r}")
        path = self.version_path(name, state.active) if state.active else None
        bundle: Bundle | None = open_bundle(path) if path else None
        manifest = bundle.manifest if bundle else {}
        return Published(name=name, project=state.project, active=state.active, path=path,
                         iteration=str(manifest.get("IterationId") or ""),
                         sha1=str(manifest.get("ModelFileSHA1") or ""),
                         tags=tuple(bundle.labels or ()) if bundle else (),
                         activated_at=state.history[-1].at if state.history else "", previous=state.previous,
                         versions=tuple(v.versions(self.root / name)))

    # ---- changing --------------------------------------------------------------------------

    def publish(self, export: Path, name: str, project: str | None = None) -> Published:
        """Copy `export` in as the next version of `name`, verify it (it loads and predicts
        through the runtime), and make it active. The old version stays active on any error."""
        version = self.add(export, name, project)
        self.activate(name, version, "publish", project)
        return self.describe(name)

    def add(self, export: Path, name: str, project: str | None = None, *, verify: bool = True) -> int:
        """Copy `export` in as the next version of `name`, whole, without making it active;
        `verify` loads it and predicts once first (the server verifies with its own session)."""
        check_name(name)
        check_project(project)
        folder = self.root / name
        resolved = export.resolve()
        if export.is_dir() and resolved.parent == folder.resolve() and v.version_of(resolved):
            if verify:  # `edge-export train --out` wrote it here: activated where it is
                Predictor.load(resolved, warm_up=True)
            v.fsync_tree(resolved)  # written by another program: on the disk before state.json names it
            return v.version_of(resolved) or 0
        staging = v.new_staging(folder)
        try:
            v.stage(export, staging)
            if verify:
                Predictor.load(staging, warm_up=True)  # SHA-1, labels, metadata, one prediction
            v.make_world_readable(staging)
            v.fsync_tree(staging)
            with self._locked():
                target = v.claim_next_version(folder, staging)
                if not verify:  # checked by the caller before it is activated: until then it is pending
                    (folder / f"{PENDING_PREFIX}{target.name}").touch()
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
            with contextlib.suppress(OSError):  # a first publish that failed leaves no empty name behind
                folder.rmdir()
        return v.version_of(target) or 0

    def activate(self, name: str, version: int, reason: str, project: str | None = None) -> State:
        """Make `version` (on the disk, verified) the active one, atomically; older versions
        beyond `keep` are removed."""
        check_project(project)
        with self._locked():
            if not self.version_path(name, version).is_dir():
                raise ModelStoreError(f"{name} v{version} is not on the disk")
            old = self.state(name)
            state = State(name, project if project is not None else (old.project if old else None),
                          (*(old.history if old else ())[-(HISTORY - 1):], Activation(version, _now(), reason)))
            self._write_state(state)
            (self.root / name / f"{PENDING_PREFIX}v{version}").unlink(missing_ok=True)
            self._prune(name, state)
        log.info("%s %s v%d%s", "published" if reason == "publish" else f"activated ({reason})", name, version,
                 f" for project {state.project}" if state.project else "")
        return state

    def discard(self, name: str, version: int) -> None:
        """Remove a version that never became active (refused by the server's checks)."""
        with self._locked():
            state = self.state(name)
            if state is not None and version in {state.active, state.previous}:
                raise ModelStoreError(f"{name} v{version} is in use; it is not removed")
            path = self.version_path(name, version)
            if path.is_dir():
                gone = path.parent / f"{REMOVED_PREFIX}v{version}-{os.getpid()}-{time.monotonic_ns()}"
                os.rename(path, gone)
                shutil.rmtree(gone, ignore_errors=True)
            (self.root / name / f"{PENDING_PREFIX}v{version}").unlink(missing_ok=True)
            if state is None:
                with contextlib.suppress(OSError):  # a refused first version leaves no empty name behind
                    (self.root / name).rmdir()

    def rollback(self, name: str, reason: str = "rollback", *, verify: bool = True,
                 expect: int | None = None) -> Published:
        """Make the version before the active one active again; `verify` loads it first.
        `expect`: the version the caller saw active; another active meanwhile refuses."""
        with self._locked():
            state = self.state(name)
            if state is None:
                raise ModelStoreError(f"no model published as {name!r}")
            if expect is not None and state.active != expect:
                raise ModelStoreError(f"{name} changed meanwhile (v{state.active} is active, not v{expect}); "
                                      "nothing was rolled back")
            if state.previous is None:
                raise ModelStoreError(f"{name} has no earlier version to go back to")
            if not self.version_path(name, state.previous).is_dir():
                raise ModelStoreError(f"{name} v{state.previous} is no longer on the disk")
            if verify:  # still whole, or no change
                Predictor.load(self.version_path(name, state.previous), warm_up=True)
            back = State(name, state.project, (*state.history[:-2], Activation(state.previous, _now(), reason)))
            self._write_state(back)
        log.info("rolled %s back from v%s to v%s", name, state.active, state.previous)
        return self.describe(name)

    def unpublish(self, name: str) -> None:
        """Remove `name` and all its versions (renamed away first, so it goes at once)."""
        with self._locked():
            folder = self.root / check_name(name)
            if not (folder / STATE).is_file():
                raise ModelStoreError(f"no model published as {name!r}")
            gone = self.root / f"{REMOVED_PREFIX}{name}-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(folder, gone)
            fsync_dir(self.root)
        shutil.rmtree(gone, ignore_errors=True)
        log.info("unpublished %s", name)

    # ---- internals -------------------------------------------------------------------------

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        with open(self.root / LOCK, "a+b") as f:
            fcntl.flock(f, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f, fcntl.LOCK_UN)

    def _write_state(self, state: State) -> None:
        folder = self.root / state.name
        tmp = folder / f".{STATE}.{os.getpid()}.tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(state.to_json(), f, indent=2)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, v.FILE_MODE)
        os.replace(tmp, folder / STATE)
        fsync_dir(folder)

    def _prune(self, name: str, state: State) -> None:
        """Keep `keep` versions: the newest, and never the active or the previous one. A
        version is renamed away before it is deleted, so none is ever left half-deleted."""
        protected = {state.active, state.previous}
        numbers = v.versions(self.root / name)
        spare = [n for n in numbers if n not in protected]
        excess = max(0, len(numbers) - self.keep)
        doomed, spare = spare[:excess], spare[excess:]
        if self.max_bytes is not None:  # the disk budget: the oldest spare versions go first
            total = self.size() - sum(_tree_bytes(self.version_path(name, n)) for n in doomed)
            while spare and total > self.max_bytes:
                number = spare.pop(0)
                total -= _tree_bytes(self.version_path(name, number))
                doomed.append(number)
        for number in doomed:
            gone = self.root / name / f"{REMOVED_PREFIX}v{number}-{os.getpid()}-{time.monotonic_ns()}"
            os.rename(self.version_path(name, number), gone)
            shutil.rmtree(gone, ignore_errors=True)
        if self.max_bytes is not None and self.size() > self.max_bytes:
            log.warning("model store %s holds %d MB, over models.max_mb (%d MB): only the active and previous "
                        "versions of each name are left to remove", self.root, self.size() >> 20,
                        self.max_bytes >> 20)

    def size(self) -> int:
        """Bytes of every version of every name."""
        return sum(_tree_bytes(self.version_path(n, k)) for n in self.names() for k in v.versions(self.root / n))

    def _tidy(self) -> None:
        """What killed writers left: removed names and versions, stale staging folders, stray
        state temps, and versions a killed server claimed but never checked (still marked
        pending, not named in state.json). Any other version folder is never removed here:
        one that `edge-export train` wrote, or a killed CLI publish verified, is whole."""
        now = time.time()
        for path in self.root.iterdir():
            if path.name == UPLOADS and path.is_dir() and not path.is_symlink():
                for item in path.iterdir():  # what a killed PUT left: never a whole update
                    if now - item.lstat().st_mtime <= STALE_STAGING_S:
                        continue
                    if item.is_dir() and not item.is_symlink():
                        shutil.rmtree(item, ignore_errors=True)
                    else:
                        item.unlink(missing_ok=True)
                continue
            if path.name.startswith(REMOVED_PREFIX):
                shutil.rmtree(path, ignore_errors=True)
                continue
            if not (path.is_dir() and NAME.fullmatch(path.name)):
                continue
            for item in path.iterdir():
                if item.name.startswith(REMOVED_PREFIX):
                    shutil.rmtree(item, ignore_errors=True)
                elif item.name.startswith(v.STAGING_PREFIX):
                    with contextlib.suppress(OSError):  # gone meanwhile: a publish that ended
                        if now - item.lstat().st_mtime > STALE_STAGING_S:
                            shutil.rmtree(item, ignore_errors=True)
                elif item.name.startswith(f".{STATE}.") and item.name.endswith(".tmp"):
                    item.unlink(missing_ok=True)
                elif item.name.startswith(PENDING_PREFIX):
                    self._drop_pending(path.name, item, now)

    def _drop_pending(self, name: str, marker: Path, now: float) -> None:
        number = v.version_of(Path(marker.name[len(PENDING_PREFIX):]))
        with contextlib.suppress(OSError, EdgeRuntimeError):
            if now - marker.lstat().st_mtime <= STALE_STAGING_S:
                return  # a swap that may still be running in a server beside this command
            state = self.state(name)
            if number is not None and (state is None or number not in {state.active, state.previous}):
                gone = marker.parent / f"{REMOVED_PREFIX}v{number}-{os.getpid()}-{time.monotonic_ns()}"
                if self.version_path(name, number).is_dir():
                    os.rename(self.version_path(name, number), gone)
                    shutil.rmtree(gone, ignore_errors=True)
            marker.unlink(missing_ok=True)


def _tree_bytes(folder: Path) -> int:
    total = 0
    for current, _, files in os.walk(folder):
        for file in files:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(current, file)).st_size
    return total
