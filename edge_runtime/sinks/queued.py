"""A thread of a sink's own behind a bounded queue, so slow work never holds the publisher.

    worker = QueuedThread("samples", store_one, size=8)
    worker.put(job)      # never blocks: False (and counted in `dropped`) when the queue is full
    worker.close()       # finishes what is queued, then ends the thread

A job that raises is counted in `failed` and logged (at most every 30 s); the thread goes on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from typing import Generic, TypeVar

log = logging.getLogger(__name__)
LOG_EVERY_S = 30.0
T = TypeVar("T")


class QueuedThread(Generic[T]):
    def __init__(self, name: str, handle: Callable[[T], None], size: int) -> None:
        self.name, self.handle = name, handle
        self.dropped = self.failed = 0
        self._queue: queue.Queue[tuple[T] | None] = queue.Queue(size)
        self._logged = -LOG_EVERY_S
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def put(self, job: T) -> bool:
        try:
            self._queue.put_nowait((job,))
        except queue.Full:
            self.dropped += 1
            return False
        return True

    def _run(self) -> None:
        while (item := self._queue.get()) is not None:
            try:
                self.handle(item[0])
            except Exception as exc:  # e.g. a full disk: later jobs may succeed, so keep going
                self.failed += 1
                now = time.monotonic()
                if now - self._logged >= LOG_EVERY_S:
                    self._logged = now
                    log.error("%s: a job failed (%d so far): %s", self.name, self.failed, exc)

    def close(self, timeout: float = 10.0) -> None:
        """Finish what is queued (waiting up to `timeout`), then end the thread."""
        try:
            self._queue.put(None, timeout=timeout)
        except queue.Full:
            log.error("%s: the queue did not drain in %.0f s; %d jobs lost", self.name, timeout, self._queue.qsize())
            return
        self._thread.join(timeout)
