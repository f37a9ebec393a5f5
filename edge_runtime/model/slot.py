"""A published name's active predictor, swapped atomically while it serves.

    slot = ModelSlot("shelf", predictor, version=3)
    predictor = slot.get()           # what this request or frame runs on, start to finish
    old = slot.swap(new, version=4)  # later requests and frames run on `new`

A request or a camera frame takes the predictor once and finishes on it, so requests
already running when a swap happens finish on the old session, and a camera switches
between two frames. Nothing else holds the old predictor: its session is freed when its
last request is done (Python drops it with its last reference), which `on_freed` reports.

A board that cannot hold two sessions unloads first: `unload()` empties the slot, and
`get()` waits (up to its timeout) until `swap` fills it again.
"""

from __future__ import annotations

import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from ..errors import ModelStoreError

P = TypeVar("P")
WAIT_S = 60.0  # the longest a request waits for a model being loaded (unload-first)


class ModelUnavailable(ModelStoreError):
    """The slot stayed empty (a model being loaded in its place) for the whole wait."""


@dataclass(frozen=True)
class Active(Generic[P]):
    predictor: P
    version: int | None  # None: named on the command line, not from the store
    since: float  # time.time() it became active
    memory_bytes: int | None = None  # RSS its load added, when measured


class ModelSlot(Generic[P]):
    def __init__(self, name: str, predictor: P | None, version: int | None = None,
                 memory_bytes: int | None = None) -> None:
        self.name = name
        self._cond = threading.Condition()
        self._active: Active[P] | None = (
            Active(predictor, version, time.time(), memory_bytes) if predictor is not None else None)
        self.loading = ""  # what is being loaded into an emptied slot, for /api/models and the log

    @property
    def active(self) -> Active[P] | None:
        return self._active

    def get(self, timeout: float = WAIT_S) -> P:
        """The active predictor; while the slot is emptied for a load, waits for it."""
        active = self._active  # one read: no lock on the path every frame takes
        if active is not None:
            return active.predictor
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._active is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ModelUnavailable(f"model {self.name} is being loaded ({self.loading or 'unload-first'}); "
                                           "try again shortly")
                self._cond.wait(left)
            return self._active.predictor

    def swap(self, predictor: P, version: int | None, memory_bytes: int | None = None,
             on_freed: Callable[[], None] | None = None) -> P | None:
        """Make `predictor` active; the old one is returned (drop it) and `on_freed` runs
        once the last request that holds it is done."""
        with self._cond:
            old = self._active
            self._active = Active(predictor, version, time.time(), memory_bytes)
            self.loading = ""
            self._cond.notify_all()
        if old is None:
            return None
        if on_freed is not None:
            weakref.finalize(old.predictor, on_freed)
        return old.predictor

    def unload(self, loading: str, on_freed: Callable[[], None] | None = None) -> P | None:
        """Empty the slot before a load: later requests wait in `get` until `swap`."""
        with self._cond:
            old = self._active
            self._active, self.loading = None, loading
        if old is None:
            return None
        if on_freed is not None:
            weakref.finalize(old.predictor, on_freed)
        return old.predictor
