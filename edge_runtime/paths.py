"""Where the runtime's files are: the package's own (the built-in demo export and its sample
photographs), and one cache folder for everything derived that can be rebuilt (unpacked
export zips, optimised graphs).

    cache_dir()   EDGE_RUNTIME_CACHE_DIR, else systemd's CACHE_DIRECTORY (CacheDirectory=, for
                  a DynamicUser), else $XDG_CACHE_HOME/edge-runtime or ~/.cache/edge-runtime,
                  else a private folder in the temporary directory (a PrivateTmp under systemd)
"""

from __future__ import annotations

import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "EDGE_RUNTIME_CACHE_DIR"
DEMO_MODEL = Path(__file__).resolve().parent / "demo"
DEMO_SAMPLES = DEMO_MODEL / "samples"


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


def graph_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / "graphs"
