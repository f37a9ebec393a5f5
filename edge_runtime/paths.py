"""Where the runtime's files are: the package's own (the built-in demo export and its sample
photographs), and one cache folder for everything derived that can be rebuilt (unpacked
export zips, optimised graphs); and how a file that a setting names is read.

    cache_dir()         EDGE_RUNTIME_CACHE_DIR, else systemd's CACHE_DIRECTORY (CacheDirectory=,
                        for a DynamicUser), else $XDG_CACHE_HOME/edge-runtime or
                        ~/.cache/edge-runtime, else a private folder in the temporary directory
    state_dir()         what the service keeps (the event store; the model store): systemd's
                        STATE_DIRECTORY (StateDirectory=), else /var/lib/edge-runtime when
                        systemd started us, else None (the caller's folder in the working
                        directory: ./data for events)
    read_setting_file() a config, token, secret or password file: a regular file (a symlink to
                        one is fine, as Kubernetes secret mounts are) within a size cap
    read_regular_file() the same check for any file, with the caller's error, symlinks refused
                        if asked (a signature that came with an update)
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .errors import ConfigError, EdgeRuntimeError

log = logging.getLogger(__name__)

CACHE_ENV = "EDGE_RUNTIME_CACHE_DIR"
DEMO_MODEL = Path(__file__).resolve().parent / "demo"
DEMO_SAMPLES = DEMO_MODEL / "samples"

SYSTEMD_STATE_DIR = Path("/var/lib/edge-runtime")
KiB = 1024
CONFIG_FILE_BYTES = 1024 * KiB  # a config file of hundreds of cameras is a few tens of KB
SECRET_FILE_BYTES = 4 * KiB  # a token, a password, an HMAC key


def read_setting_file(path: Path | str, what: str, limit: int, *, secret: bool = False) -> bytes:
    """The bytes of a file that a setting names, or a ConfigError naming `what` and the file.

    It must be a regular file (after symlinks): a FIFO, a device such as /dev/zero, or a
    folder is refused before anything is read, and so is a file over `limit` bytes. A
    `secret` that other users may read is warned about (by name, never by content).
    """
    data, mode = read_regular_file(path, what, limit, ConfigError)
    if secret and mode & stat.S_IROTH:
        log.warning("%s %s can be read by every user on this machine: chmod o-r it", what, path)
    return data


def read_regular_file(path: Path | str, what: str, limit: int, error: type[EdgeRuntimeError], *,
                      follow_symlinks: bool = True) -> tuple[bytes, int]:
    """The bytes and mode of a regular file of at most `limit` bytes, else `error` naming
    `what` and the file; with follow_symlinks=False a symlink is refused (O_NOFOLLOW)."""
    path = Path(path)
    flags = os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0)
    if not follow_symlinks:
        flags |= getattr(os, "O_NOFOLLOW", 0)
    try:
        # O_NONBLOCK: opening a FIFO must not wait for a writer; it is refused just below.
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP and not follow_symlinks:
            raise error(f"{what} {path}: is a symbolic link, not a regular file") from None
        raise error(f"{what} {path}: {exc.strerror or exc}") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):  # before fdopen, which refuses a folder with an error of its own
        os.close(fd)
        raise error(f"{what} {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        if info.st_size > limit:
            raise error(f"{what} {path}: larger than the {limit}-byte limit for this file")
        try:
            data = f.read(limit + 1)
        except OSError as exc:
            raise error(f"{what} {path}: {exc.strerror or exc}") from None
    if len(data) > limit:  # grew while it was read
        raise error(f"{what} {path}: larger than the {limit}-byte limit for this file")
    return data, info.st_mode


def _usable(path: Path) -> bool:
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError:
        return False
    return os.access(path, os.W_OK | os.X_OK)


def _private_tmp() -> Path:
    """A folder in the temporary directory that only this user owns (never another's)."""
    path = Path(tempfile.gettempdir()) / f"edge-runtime-{os.getuid()}"
    try:
        path.mkdir(mode=0o700, exist_ok=True)
        info = path.lstat()
        if stat.S_ISDIR(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022:
            return path
    except OSError:
        pass
    return Path(tempfile.mkdtemp(prefix="edge-runtime-"))


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    """The first usable candidate (created if need be)."""
    env = os.environ if env is None else env
    candidates = []
    if env.get(CACHE_ENV):
        candidates.append(Path(env[CACHE_ENV]))
    if env.get("CACHE_DIRECTORY"):  # may list several folders; the first is ours
        candidates.append(Path(env["CACHE_DIRECTORY"].split(":")[0]))
    home_cache = env.get("XDG_CACHE_HOME") or os.path.join(env.get("HOME") or os.path.expanduser("~"), ".cache")
    candidates.append(Path(home_cache) / "edge-runtime")
    for base in candidates:
        if base.is_absolute() and _usable(base):
            return base
    return _private_tmp()


def fsync_dir(path: Path) -> None:
    """A folder's entries on the disk: after a rename into it, a power cut keeps the new name."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def state_dir(env: Mapping[str, str] | None = None) -> Path | None:
    """The service's state folder under systemd, or None outside it (see the module docstring)."""
    env = os.environ if env is None else env
    if env.get("STATE_DIRECTORY"):  # may list several folders; the first is ours
        return Path(env["STATE_DIRECTORY"].split(":")[0])
    if env.get("INVOCATION_ID"):  # started by systemd without StateDirectory=
        return SYSTEMD_STATE_DIR
    return None


def graph_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / "graphs"
