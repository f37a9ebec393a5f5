"""Bounds on the work one input may cause: file sizes, image shapes, and decode memory.

The figures in `Limits` can be changed with environment variables, read once, on first
use (docs/limits.md lists them). A bad value is a ConfigError naming the variable.

    data = read_capped(path, current().max_image_file_bytes, ImageDecodeError)
    with decode_budget().reserve(6 * width * height):  # bytes; waits while others decode
        frame = cv2.imdecode(...)
"""

from __future__ import annotations

import dataclasses
import functools
import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from ..errors import ConfigError, EdgeRuntimeError, ImageBusyError

MiB = 1024 * 1024


ENV_PREFIX = "EDGE_RUNTIME_"


@dataclass(frozen=True)
class Limits:
    """The figures; each field can be set by EDGE_RUNTIME_<FIELD NAME IN CAPITALS>."""

    # An image's longer side may be at most this many times its shorter side. ByShorterSide
    # scales the shorter side to the network size, so a 1 x 65535 picture would otherwise be
    # resized to 256 x 16.7 million pixels (12.9 GB).
    max_aspect_ratio: int = 20
    # No image made while preprocessing (after any resize) may have more pixels than this.
    max_work_pixels: int = 1 << 22
    # Memory (MiB) that all decodes and preprocessing in this process may hold at once
    # (uploads, `predict`, camera frames); a request beyond what is free waits its turn, and
    # an image that alone would need more is refused. 160 MiB decodes a 26-megapixel PNG.
    decode_budget_mb: int = 160
    # How long a decode waits for its share of that budget before giving up.
    decode_wait_s: int = 30
    # Largest image file `predict` and image-folder sources will read.
    max_image_file_bytes: int = 64 * MiB

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Limits:
        env = os.environ if env is None else env
        values: dict[str, int] = {}
        for f in dataclasses.fields(cls):
            name = ENV_PREFIX + f.name.upper()
            raw = env.get(name, "").strip()
            if not raw:
                continue
            try:
                values[f.name] = int(raw.replace("_", ""))
            except ValueError:
                raise ConfigError(f"{name}={raw!r} is not a whole number") from None
            minimum = 0 if f.name == "decode_wait_s" else 1
            if values[f.name] < minimum:
                raise ConfigError(f"{name}={raw!r} must be at least {minimum}")
        return cls(**values)


@functools.cache
def current() -> Limits:
    """The limits from the environment, read once (a bad value is a ConfigError naming it)."""
    return Limits.from_env()


# Manifest, metadata and bundle.json are a few KB; labels.txt of 10,000 tags is ~200 KB.
MAX_JSON_BYTES = 4 * MiB
MAX_LABELS_BYTES = 4 * MiB


def read_capped(path: Path, limit: int, error: type[EdgeRuntimeError]) -> bytes:
    """The whole file, or `error` if it is longer than `limit` (devices and pipes included)."""
    try:
        with open(path, "rb") as f:
            data = f.read(limit + 1)
    except OSError as exc:
        raise error(f"{path}: {exc.strerror or exc}") from exc
    if len(data) > limit:
        raise error(f"{path}: larger than the {limit}-byte limit for this file")
    return data


class MemoryBudget:
    """A counting semaphore measured in bytes, shared by every decode in the process.

    A request larger than the whole budget waits until it can have all of it (decoders
    refuse such images first; a camera frame is already in memory). Nested reservations
    on one thread (decode, then preprocess the same frame) are free.
    """

    def __init__(self, total_bytes: int, wait_s: float) -> None:
        self.total = total_bytes
        self.wait_s = wait_s
        self.in_use = 0
        self._cond = threading.Condition()
        self._held = threading.local()

    @contextmanager
    def reserve(self, nbytes: int) -> Iterator[None]:
        if getattr(self._held, "depth", 0):
            self._held.depth += 1
            try:
                yield
            finally:
                self._held.depth -= 1
            return
        want = min(max(nbytes, 0), self.total)
        with self._cond:
            if not self._cond.wait_for(lambda: self.in_use + want <= self.total, timeout=self.wait_s):
                raise ImageBusyError(
                    f"other images are being decoded; waited {self.wait_s:g} s for {want >> 20} MiB "
                    f"of EDGE_RUNTIME_DECODE_BUDGET_MB={self.total >> 20}; try again"
                )
            self.in_use += want
        self._held.depth = 1
        try:
            yield
        finally:
            self._held.depth = 0
            with self._cond:
                self.in_use -= want
                self._cond.notify_all()


_budget_lock = threading.Lock()
_budget: MemoryBudget | None = None


def decode_budget() -> MemoryBudget:
    """The one budget shared by every decode in this process."""
    global _budget
    with _budget_lock:
        if _budget is None:
            limits = current()
            _budget = MemoryBudget(limits.decode_budget_mb * MiB, limits.decode_wait_s)
        return _budget


def reset() -> None:
    """Read the environment again on next use (for tests; a running budget is dropped)."""
    global _budget
    with _budget_lock:
        current.cache_clear()
        _budget = None
