"""Bounds on the work one input may cause: file sizes, image shapes, and decode memory.

The figures are the `limits:` section of the settings (config.py), defined here by
LimitsConfig. Each can also be set by its older variable, EDGE_RUNTIME_<FIELD IN
CAPITALS> (EDGE_RUNTIME_MAX_WORK_PIXELS, docs/limits.md), an alias of
EDGE_RUNTIME_LIMITS__<FIELD>. `serve` installs the loaded settings' limits; any other use
reads the environment once, on first use, through the same model. A bad value is a
ConfigError naming the variable.

    data = read_file_capped(path, current().max_image_file_bytes, ImageDecodeError)
    with decode_budget().reserve(6 * width * height):  # bytes; waits while others decode
        frame = cv2.imdecode(...)
"""

from __future__ import annotations

import os
import stat
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

from pydantic import Field, ValidationError

from ..errors import ConfigError, EdgeRuntimeError, ImageBusyError
from ..settings_base import ENV_PREFIX, Strict

MiB = 1024 * 1024

# The default limit on the pixels of one image (decompression bombs): 64 Mpx covers 48 Mpx
# phone photos. The server's limit is `server.max_image_pixels`, which may raise or lower
# it. It is checked by our own code, so it does not depend on when OpenCV was imported:
# OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when it loads, and its own default
# (2**30 pixels) stays in place as a last backstop.
MAX_IMAGE_PIXELS = 1 << 26


class LimitsConfig(Strict):
    """What one input may cost; each field also reads EDGE_RUNTIME_<FIELD IN CAPITALS>."""

    max_aspect_ratio: int = Field(
        20, ge=1, description="an image's longer side may be at most this many times its shorter side (ByShorterSide "
        "scales the shorter side to the network size: a 1 x 65535 picture would be resized to 12.9 GB)")
    max_work_pixels: int = Field(1 << 22, ge=1, description="no image made while preprocessing (after any resize) "
                                 "may have more pixels than this")
    decode_budget_mb: int = Field(
        160, ge=1, description="MiB that all decodes and preprocessing in this process may hold at once (uploads, "
        "predict, camera frames); a request beyond what is free waits its turn, and an image that alone would need "
        "more is refused. 160 MiB decodes a 26-megapixel PNG")
    decode_wait_s: int = Field(30, ge=0, description="how long a decode waits for its share of that budget")
    max_image_file_bytes: int = Field(64 * MiB, ge=1, description="largest image file that predict and "
                                      "image-folder sources read")


def alias(field: str) -> str:
    """The older variable for a field: max_work_pixels -> EDGE_RUNTIME_MAX_WORK_PIXELS."""
    return ENV_PREFIX + field.upper()


def from_env(env: Mapping[str, str]) -> dict[str, str]:
    """The fields set by their older variables, as raw text (`1_000_000` allowed)."""
    values = {}
    for field in LimitsConfig.model_fields:
        raw = env.get(alias(field), "").strip()
        if raw:
            values[field] = raw.replace("_", "")
    return values


def _from_environment() -> LimitsConfig:
    try:
        return LimitsConfig.model_validate(from_env(os.environ))
    except ValidationError as exc:
        err = exc.errors()[0]
        field = str(err["loc"][0])
        raise ConfigError(f"{alias(field)}={os.environ.get(alias(field))!r}: {err['msg']}") from None


_lock = threading.Lock()
_installed: LimitsConfig | None = None
_budget: MemoryBudget | None = None


def install(limits: LimitsConfig) -> None:
    """Use these limits in this process from now on (serve and each worker, from settings)."""
    global _installed, _budget
    with _lock:
        _installed, _budget = limits, None


def current() -> LimitsConfig:
    """The installed limits, else the environment's, read once (a bad value is a ConfigError).
    Called for every frame: once they are known, no lock is taken."""
    global _installed
    limits = _installed
    if limits is not None:
        return limits
    with _lock:
        if _installed is None:
            _installed = _from_environment()
        return _installed


# Manifest, metadata and bundle.json are a few KB; labels.txt of 10,000 tags is ~200 KB.
MAX_JSON_BYTES = 4 * MiB
MAX_LABELS_BYTES = 4 * MiB


def read_file_capped(path: Path, limit: int, error: type[EdgeRuntimeError]) -> bytes:
    """The whole file, or `error` if it is longer than `limit` (a device such as /dev/zero is
    read up to the cap); a FIFO is refused before anything waits on it."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
        with os.fdopen(fd, "rb") as f:
            mode = os.fstat(fd).st_mode
            if stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode) or stat.S_ISDIR(mode):
                raise error(f"{path}: not a regular file")
            os.set_blocking(fd, True)
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
        self.waiting = 0  # reservations waiting for room now
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
            self.waiting += 1
            try:
                room = self._cond.wait_for(lambda: self.in_use + want <= self.total, timeout=self.wait_s)
            finally:
                self.waiting -= 1
            if not room:
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


def decode_budget() -> MemoryBudget:
    """The one budget shared by every decode in this process."""
    global _budget
    limits = current()
    with _lock:
        if _budget is None:
            _budget = MemoryBudget(limits.decode_budget_mb * MiB, limits.decode_wait_s)
        return _budget


def reset() -> None:
    """Read the environment again on next use (for tests; a running budget is dropped)."""
    global _installed, _budget
    with _lock:
        _installed, _budget = None, None
