"""Where the runtime keeps files of its own between runs.

    cache_dir()   derived data that can be rebuilt (optimised graphs): EDGE_RUNTIME_CACHE_DIR,
                  else systemd's CACHE_DIRECTORY, else $XDG_CACHE_HOME/edge-runtime,
                  else ~/.cache/edge-runtime
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping
from pathlib import Path

CACHE_ENV = "EDGE_RUNTIME_CACHE_DIR"


def cache_dir(env: Mapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    if env.get(CACHE_ENV):
        return Path(env[CACHE_ENV])
    if env.get("CACHE_DIRECTORY"):  # systemd's CacheDirectory=; may list several, the first is ours
        return Path(env["CACHE_DIRECTORY"].split(":")[0])
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]) / "edge-runtime"
    try:
        return Path.home() / ".cache" / "edge-runtime"
    except RuntimeError:  # no home folder (a service user): somewhere private to this machine
        return Path(tempfile.gettempdir()) / "edge-runtime-cache"


def graph_cache_dir(env: Mapping[str, str] | None = None) -> Path:
    return cache_dir(env) / "graphs"
