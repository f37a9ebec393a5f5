"""A scripted source for tests and examples: frames, timeouts and failures on cue."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence

import numpy as np

from .base import SourceEnded, SourceError

Step = np.ndarray | None | Exception


class ScriptedSource:
    """Plays `steps` in order: an array is a frame, None a timeout (which takes `timeout_s`,
    as a real read timeout would), an exception is raised.

    After the script: repeats the last frame forever when `hold` is set, else ends.
    """

    def __init__(
        self, steps: Sequence[Step], live: bool = True, hold: bool = False, name: str = "scripted",
        timeout_s: float = 0.01,
    ) -> None:
        self.steps = list(steps)
        self.timeout_s = timeout_s
        self.live = live
        self.hold = hold
        self.name = name
        self.closed = False
        self.reads = 0
        self._last: np.ndarray | None = None
        self._lock = threading.Lock()

    def read(self) -> np.ndarray | None:
        with self._lock:
            if self.closed:
                raise SourceError("read after close")
            self.reads += 1
            if not self.steps:
                if self.hold and self._last is not None:
                    return self._last
                raise SourceEnded(f"{self.name}: script finished")
            step = self.steps.pop(0)
        if isinstance(step, Exception):
            raise step
        if step is None:
            time.sleep(self.timeout_s)
        else:
            self._last = step
        return step

    def close(self) -> None:
        self.closed = True


def factory_sequence(makers: Sequence[Callable[[], ScriptedSource] | Exception]) -> Callable[[], ScriptedSource]:
    """A source factory that opens the next scripted source each time (or fails, for an exception)."""
    queue = list(makers)

    def open_next() -> ScriptedSource:
        if not queue:
            raise SourceError("no more sources")
        item = queue.pop(0) if len(queue) > 1 else queue[0]
        if isinstance(item, Exception):
            raise item
        return item()

    return open_next
