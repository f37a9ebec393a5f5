"""The watched folder (`models.incoming`): an export zip dropped there is published.

    watcher = IncomingWatcher(Path("/var/lib/edge-runtime/incoming"), manager.publish, poll_s=2.0)
    watcher.start()          # a thread of its own, a scan every poll_s
    watcher.scan_once()      # one scan, in the caller's thread (tests)
    watcher.stop(timeout=5)

Drop `shelf.zip`, and for a signed update its signature `shelf.zip.sig` (copy the .sig
first, or with the zip: a zip taken before its .sig arrives is published unsigned). It is
published under the `name` in the zip's bundle.json, else under the file's stem (`shelf`);
the project is bundle.json's `project`, else the `source.projectId` that edge-export writes.

Only complete files are taken. A zip is taken once its size, modification time and inode,
and its .sig's, stayed the same across two scans at least `poll_s` apart, and its zip
directory reads: a copy still being written changes, and a copy cut short has no directory
at its end. A zip that stays unchanged with no readable directory is waited for (a copy
that stalls may resume) until it has been unchanged for `give_up_s` (10 minutes), then it
is refused. Zips that became complete in the same scan are published oldest first (mtime).

Taking a zip renames it (and its .sig) into the hidden `.taking/` folder first, so a file of
the same name dropped during the publish is a new update, not one deleted with the old.
Published: the files are removed. Refused (a bad name, a model that does not load, a bad
signature, anything the publisher refuses): they are moved to `failed/`, with
`NAME.zip.reason` holding the reason in one line, which is also logged in one line; a
failed file is never tried again until a new one replaces it. A crash during a publish
leaves the files in `.taking/`; the next start puts them back to be taken again.

Ignored: hidden files, folders, symbolic links (never followed), files that are not zips
(each logged once). A zip larger than `max_bytes` (models.max_upload_mb, else 512 MB) is
refused without being read.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import threading
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EdgeRuntimeError, first_line
from ..model.archive import check_directory_size
from ..model.bundle import BUNDLE_INFO
from ..model.limits import MAX_JSON_BYTES
from .config import ModelsConfig
from .store import PROJECT, check_name
from .update import Publisher, Update

log = logging.getLogger(__name__)
MiB = 1 << 20
DEFAULT_MAX_BYTES = 512 * MiB
MAX_SIGNATURE_BYTES = 1 * MiB  # a model-signing bundle is a few KB
GIVE_UP_S = 600.0
FAILED = "failed"
TAKING = ".taking"
SIG = ".sig"
REASON = ".reason"
Key = tuple[int, int, int]  # (inode, size, mtime_ns): a file that changes, or is replaced, has another


class Refused(EdgeRuntimeError):
    """A dropped file that will not be published; the message is its one-line reason."""


class Unreadable(Exception):
    """The zip's directory does not read (yet): a copy cut short, or not a zip."""


@dataclass
class _Seen:
    key: tuple[Key, Key | None]  # the zip's, and its .sig's
    since: float  # monotonic: since when it has been unchanged


@dataclass(frozen=True)
class Outcome:
    """What a scan did with one zip: published (reason "") or refused."""

    file: str
    name: str | None
    reason: str = ""


def _key(st: os.stat_result) -> Key:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _regular(path: Path) -> os.stat_result | None:
    """The file's own stat (a link is not followed), or None when it is missing."""
    try:
        return os.lstat(path)
    except FileNotFoundError:
        return None


def read_info(path: Path, key: Key) -> dict[str, Any]:
    """bundle.json of the zip at `path` ({} when it has none). Unreadable when the zip's
    directory does not read; Refused for a bundle.json that is too large or not JSON. The file
    is opened without following links, and must still be the one scanned (`key`)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    except OSError as exc:
        raise Unreadable(exc.strerror or str(exc)) from None
    with os.fdopen(fd, "rb") as f:
        st = os.fstat(f.fileno())
        if not stat.S_ISREG(st.st_mode) or _key(st) != key:
            raise Unreadable("changed while it was read")
        try:
            check_directory_size(path)
            zf = zipfile.ZipFile(f)
            zf.namelist()
        except EdgeRuntimeError as exc:  # a directory no export needs: it is read, and refused
            raise Refused(str(exc)) from None
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError) as exc:
            raise Unreadable(first_line(exc)) from None
        with zf:
            try:
                member = zf.getinfo(BUNDLE_INFO)
            except KeyError:
                return {}
            if member.file_size > MAX_JSON_BYTES:
                raise Refused(f"{BUNDLE_INFO} is larger than {MAX_JSON_BYTES} bytes")
            try:
                with zf.open(member) as src:
                    raw = src.read(MAX_JSON_BYTES + 1)
                if len(raw) > MAX_JSON_BYTES:
                    raise Refused(f"{BUNDLE_INFO} is larger than {MAX_JSON_BYTES} bytes")
                info = json.loads(raw)
            except Refused:
                raise
            except (ValueError, zipfile.BadZipFile, EOFError, RuntimeError, NotImplementedError, OSError) as exc:
                raise Refused(f"{BUNDLE_INFO}: {first_line(exc)}") from None  # zlib.error is an OSError too
    if not isinstance(info, dict):
        raise Refused(f"{BUNDLE_INFO} is not a JSON object")
    return info


def name_and_project(file: str, info: dict[str, Any]) -> tuple[str, str | None]:
    """The published name (bundle.json's, else the file's stem) and project; Refused (one
    line) for a name or project the store cannot take."""
    name = info.get("name")
    try:
        if name is not None:
            if not isinstance(name, str):
                raise Refused(f"{BUNDLE_INFO} name {name!r} is not text")
            check_name(name, f"{BUNDLE_INFO} name")
        else:
            name = check_name(file[:-len(".zip")], "file name")
    except ConfigError as exc:
        raise Refused(str(exc)) from None
    source = info.get("source")
    project = info.get("project", source.get("projectId") if isinstance(source, dict) else None)
    if project is not None and not (isinstance(project, str) and PROJECT.fullmatch(project)):
        raise Refused(f"{BUNDLE_INFO} project {str(project)[:80]!r} is not a project id")
    return name, project


class IncomingWatcher:
    """Publishes the complete export zips dropped into `folder` through `publisher`."""

    def __init__(self, folder: Path, publisher: Publisher, poll_s: float = 2.0, *,
                 max_bytes: int = DEFAULT_MAX_BYTES, give_up_s: float = GIVE_UP_S,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.folder, self.publisher, self.poll_s = Path(folder), publisher, poll_s
        self.max_bytes, self.give_up_s, self.clock = max_bytes, give_up_s, clock
        self.published = self.refused = 0
        self._seen: dict[str, _Seen] = {}
        self._failed: dict[str, Key] = {}  # refused files that could not be moved away
        self._noted: set[str] = set()  # files logged once as ignored
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @classmethod
    def from_config(cls, models: ModelsConfig, publisher: Publisher) -> IncomingWatcher | None:
        """The watcher `models.incoming` asks for; None when it is not set."""
        if models.incoming is None:
            return None
        upload_mb = getattr(models, "max_upload_mb", None)  # the PUT's cap, where the settings have one
        return cls(models.incoming, publisher, models.incoming_poll_s,
                   max_bytes=int(upload_mb * MiB) if upload_mb else DEFAULT_MAX_BYTES)

    # --- the thread --------------------------------------------------------------------------

    def start(self) -> IncomingWatcher:
        """Create the folder if need be (ConfigError, one line, if it cannot be), put back what
        a crash left in .taking/, and scan every poll_s on a thread of its own."""
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            if not self.folder.is_dir():
                raise NotADirectoryError(f"{self.folder} is not a folder")
        except OSError as exc:
            raise ConfigError(f"models.incoming {self.folder}: {exc.strerror or exc}") from None
        self.recover()
        self._thread = threading.Thread(target=self._run, name="models-incoming", daemon=True)
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread; a publish in progress finishes first (up to `timeout`)."""
        self._stop.set()
        if self._thread is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.scan_once()
            except Exception as exc:  # the folder is gone or unreadable for now: say so, and go on
                log.warning("models.incoming %s: %s", self.folder, first_line(exc))
            self._stop.wait(self.poll_s)

    def recover(self) -> None:
        """Put the files a killed publish left in .taking/ back to be taken again (unless a
        newer file of that name was dropped meanwhile: then the old one is refused)."""
        taking = self.folder / TAKING
        if not taking.is_dir():
            return
        for path in sorted(taking.iterdir()):
            if path.name.endswith(SIG) or not path.name.lower().endswith(".zip"):
                continue
            if _regular(self.folder / path.name) is not None:
                self._fail(taking, path.name, "a newer file of the same name was dropped before it was published")
                continue
            for name in (path.name, path.name + SIG):
                with contextlib.suppress(FileNotFoundError):
                    os.rename(taking / name, self.folder / name)

    # --- one scan ----------------------------------------------------------------------------

    def scan_once(self, now: float | None = None) -> list[Outcome]:
        """Look at the folder once; take the zips that are complete, oldest first. What
        was published or refused this time."""
        with self._lock:
            now = self.clock() if now is None else now
            ready: list[tuple[int, str, Key]] = []
            present: set[str] = set()
            outcomes = []
            with os.scandir(self.folder) as entries:
                for entry in entries:
                    present.add(entry.name)
                    found = self._look(entry, now)
                    if isinstance(found, Outcome):
                        outcomes.append(found)
                    elif found is not None:
                        ready.append(found)
            for gone in [n for n in self._seen if n not in present]:
                del self._seen[gone]
            self._noted &= present
            self._failed = {n: k for n, k in self._failed.items() if n in present}
            for _, file, key in sorted(ready):
                outcome = self._take(file, key, now)
                if outcome is not None:
                    outcomes.append(outcome)
            return outcomes

    def _look(self, entry: os.DirEntry[str], now: float) -> tuple[int, str, Key] | Outcome | None:
        """(mtime, file, key) for a zip that stayed unchanged long enough, an Outcome for
        one refused at once (too large), None for anything not (yet) to be taken."""
        name = entry.name
        if name.startswith("."):
            return None
        if entry.is_symlink():
            self._note(name, "a symbolic link, never followed")
            return None
        if entry.is_dir(follow_symlinks=False):
            return None
        lower = name.lower()
        if lower.endswith(".zip" + SIG):
            return None  # taken with its zip
        if not entry.is_file(follow_symlinks=False):
            self._note(name, "not a regular file")
            return None
        if not lower.endswith(".zip"):
            self._note(name, "not a .zip")
            return None
        st = entry.stat(follow_symlinks=False)
        key = _key(st)
        if self._failed.get(name) == key:
            return None
        if st.st_size > self.max_bytes:
            return self._fail(self.folder, name, f"larger than the {self.max_bytes // MiB} MB cap", key)
        sig = _regular(self.folder / (name + SIG))
        seen = (key, _key(sig) if sig is not None else None)
        before = self._seen.get(name)
        if before is None or before.key != seen:
            self._seen[name] = _Seen(seen, now)
            return None
        if now - before.since < self.poll_s:
            return None
        return (st.st_mtime_ns, name, key)

    def _note(self, file: str, why: str) -> None:
        if file not in self._noted:
            self._noted.add(file)
            log.info("models.incoming: %r is ignored: %s", file, why)

    def _take(self, file: str, key: Key, now: float) -> Outcome | None:
        path = self.folder / file
        try:
            info = read_info(path, key)
            name, project = name_and_project(file, info)
            signature = self._signature(file)
        except Unreadable as exc:
            since = self._seen[file].since
            if now - since < self.give_up_s:
                return None  # a copy that stalled may still resume
            return self._fail(self.folder, file, f"not a readable zip, unchanged for {now - since:.0f} s: {exc}", key)
        except Refused as exc:
            return self._fail(self.folder, file, str(exc), key)
        taking = self.folder / TAKING
        try:
            taking.mkdir(exist_ok=True)
            os.rename(path, taking / file)
            if signature:
                os.rename(self.folder / (file + SIG), taking / (file + SIG))
        except OSError as exc:
            return self._fail(self.folder, file, f"cannot be taken: {exc.strerror or exc}", key)
        self._seen.pop(file, None)
        update = Update(taking / file, name, project, signature=taking / (file + SIG) if signature else None,
                        source="incoming", origin=file)
        try:
            self.publisher(update)
        except Exception as exc:  # whatever refused it, the file goes to failed/ with the reason
            if not isinstance(exc, EdgeRuntimeError):
                log.debug("models.incoming: publishing %r failed", file, exc_info=True)
            return self._fail(taking, file, first_line(exc))
        for done in (file, file + SIG):
            (taking / done).unlink(missing_ok=True)
        self.published += 1
        log.info("models.incoming: published %r as %s%s", file, name, f" for project {project}" if project else "")
        return Outcome(file, name)

    def _signature(self, file: str) -> bool:
        """Whether the zip has a .sig beside it; Refused for one that is no small regular file."""
        st = _regular(self.folder / (file + SIG))
        if st is None:
            return False
        if not stat.S_ISREG(st.st_mode):
            raise Refused(f"{file}{SIG} is not a regular file (a link is never followed)")
        if st.st_size > MAX_SIGNATURE_BYTES:
            raise Refused(f"{file}{SIG} is larger than {MAX_SIGNATURE_BYTES} bytes")
        return True

    def _fail(self, where: Path, file: str, reason: str, key: Key | None = None) -> Outcome:
        """Move the zip (and its .sig) from `where` to failed/ with its reason beside it, and
        log the reason; a zip that cannot be moved is remembered and left alone until replaced."""
        reason = " ".join(reason.split())  # one line, whatever the publisher said
        self.refused += 1
        self._seen.pop(file, None)
        failed = self.folder / FAILED
        try:
            failed.mkdir(exist_ok=True)
            os.replace(where / file, failed / file)
            (failed / (file + SIG)).unlink(missing_ok=True)  # an old refusal's .sig is not this one's
            with contextlib.suppress(FileNotFoundError):
                os.replace(where / (file + SIG), failed / (file + SIG))
            tmp = failed / f".{file}{REASON}.tmp"
            tmp.write_text(reason + "\n", encoding="utf-8")
            os.replace(tmp, failed / (file + REASON))
        except OSError as exc:
            if key is not None:
                self._failed[file] = key
            log.warning("models.incoming: %r refused: %s (and not moved to %s/: %s)", file, reason, FAILED,
                        exc.strerror or exc)
            return Outcome(file, None, reason)
        log.warning("models.incoming: %r refused: %s", file, reason)
        return Outcome(file, None, reason)
