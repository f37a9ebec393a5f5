"""One camera: a grabber thread that keeps only the newest frame, and a watchdog.

Capture never waits for inference. A frame that inference did not take before the next
one arrived is counted as dropped. No frame for `watchdog_s` or a read error releases
the source and reopens it with exponential backoff (capped); every reopen attempt is
counted in `stats.reconnects`. A source that ends (a file or folder without --loop) ends
the camera. The camera reports its state throughout and never raises into the caller.
Files (not live) are read at the pace the consumer takes frames, so none is dropped.

Only the grabber thread reads and closes the source, so a capture is never released
while a read() is still inside it: `stop` leaves a stuck read to close it when it returns.

    camera = Camera("door", lambda: open_source("rtsp://..."))
    camera.start()
    frame = camera.next_frame(after_seq=0, timeout=1.0)   # None on timeout
"""

from __future__ import annotations

import enum
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import EdgeRuntimeError
from ..service.backoff import Backoff
from ..types import Frame
from .sources.base import Source, SourceEnded

log = logging.getLogger(__name__)


class CameraState(str, enum.Enum):
    STARTING = "starting"
    ONLINE = "online"
    RECONNECTING = "reconnecting"
    OFFLINE = "offline"  # several reopen attempts failed; still retrying at the backoff cap
    ENDED = "ended"  # a file or folder finished (no --loop)
    STOPPED = "stopped"


@dataclass
class CameraStats:
    frames: int = 0
    dropped: int = 0
    reconnects: int = 0
    read_errors: int = 0
    last_error: str = ""
    last_frame_mono: float = 0.0


class Camera:
    def __init__(
        self,
        camera_id: str,
        opener: Callable[[], Source],
        watchdog_s: float = 5.0,
        backoff: Backoff | None = None,
        offline_after: int = 3,
        name: str = "",
        prepare: Callable[[np.ndarray], Any] | None = None,
    ) -> None:
        self.id = camera_id
        # Runs on the grabber thread for every frame, so that preprocessing overlaps inference.
        self.prepare = prepare
        self.name = name or camera_id
        self.watchdog_s = watchdog_s
        self.backoff = backoff or Backoff()
        self.offline_after = offline_after  # failed attempts in a row before the state says offline
        self.stats = CameraStats()
        self._opener = opener
        self._source: Source | None = None
        self._state = CameraState.STARTING
        self._newest: Frame | None = None
        self._taken = True
        self._seq = 0
        self._failures = 0
        self._attempts = 0
        self._last_activity = 0.0
        self._cond = threading.Condition()
        self._close_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- lifecycle -------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name=f"grab-{self.id}", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 2.0) -> None:
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout)  # a driver stuck in read() cannot hold shutdown: daemon thread
        if self._thread is None or not self._thread.is_alive():
            self._close_source()
        # else: the grabber is still inside read(); it closes the source when read() returns
        self._state = CameraState.STOPPED

    @property
    def state(self) -> CameraState:
        state = self._state
        if state is CameraState.ONLINE and time.monotonic() - self.stats.last_frame_mono > self.watchdog_s:
            return CameraState.RECONNECTING  # read() is stuck: the next timeout will reopen
        return state

    @property
    def finished(self) -> bool:
        return self._state in (CameraState.ENDED, CameraState.STOPPED)

    def status(self) -> dict[str, object]:
        age = time.monotonic() - self.stats.last_frame_mono if self.stats.last_frame_mono else None
        return {
            "id": self.id, "source": self.name, "state": self.state.value, "frames": self.stats.frames,
            "dropped": self.stats.dropped, "reconnects": self.stats.reconnects,
            "last_frame_age_s": round(age, 3) if age is not None else None, "last_error": self.stats.last_error,
        }

    # -- consumer side ---------------------------------------------------------------
    def next_frame(self, after_seq: int, timeout: float) -> Frame | None:
        """The newest frame after `after_seq`, waiting up to `timeout`; None if none came."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._newest is None or self._newest.seq <= after_seq:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._stop.is_set() or self.finished:
                    return None
                self._cond.wait(remaining)
            self._taken = True
            self._cond.notify_all()
            return self._newest

    # -- grabber thread --------------------------------------------------------------
    def _run(self) -> None:
        try:
            self._grab()
        finally:
            self._close_source()

    def _grab(self) -> None:
        while not self._stop.is_set():
            if self._source is None and not self._open():
                continue
            try:
                assert self._source is not None
                image = self._source.read()
            except SourceEnded as exc:
                log.info("camera %s: %s", self.id, exc)
                self._close_source()
                if not self._stop.is_set():
                    self._state = CameraState.ENDED
                with self._cond:
                    self._cond.notify_all()
                return
            except Exception as exc:  # any driver or decoder failure: reopen, never die
                if self._stop.is_set():
                    return
                self.stats.read_errors += 1
                self._fail(str(exc) if isinstance(exc, EdgeRuntimeError) else f"{type(exc).__name__}: {exc}")
                continue
            if self._stop.is_set():  # stopped while read() was running: the state stays STOPPED
                return
            if image is None:
                if time.monotonic() - self._last_activity > self.watchdog_s:
                    self._fail(f"no frame for {self.watchdog_s:g} s")
                continue
            self._publish(image)

    def _open(self) -> bool:
        delay = self.backoff.delay(self._failures)
        if delay and self._stop.wait(delay):
            return False
        self._attempts += 1
        if self._attempts > 1:
            self.stats.reconnects += 1
        try:
            source = self._opener()
        except Exception as exc:
            self._failures += 1
            self.stats.last_error = str(exc)
            offline = self._failures >= self.offline_after
            self._state = CameraState.OFFLINE if offline else CameraState.RECONNECTING
            # the first failure and going offline are news; each retry after that is not
            level = logging.WARNING if self._failures in (1, self.offline_after) else logging.DEBUG
            log.log(level, "camera %s: cannot open (%s); %s, retry in %.1f s", self.id, exc,
                    "offline" if offline else "reconnecting", self.backoff.delay(self._failures))
            return False
        if self._stop.is_set():
            source.close()
            return False
        self._source = source
        self._last_activity = time.monotonic()
        return True

    def _fail(self, reason: str) -> None:
        log.log(logging.WARNING if self._failures == 0 else logging.DEBUG, "camera %s: %s; reopening", self.id,
                reason)
        self.stats.last_error = reason
        self._failures += 1
        self._state = CameraState.RECONNECTING
        self._close_source()

    def _close_source(self) -> None:
        with self._close_lock:
            source, self._source = self._source, None
        if source is not None:
            try:
                source.close()
            except Exception:  # closing a dead device can fail too; nothing left to do
                log.debug("camera %s: close failed", self.id, exc_info=True)

    def _publish(self, image: np.ndarray) -> None:
        now, wall = time.monotonic(), time.time()
        prepared = None
        if self.prepare is not None:
            try:
                prepared = self.prepare(image)
            except Exception:  # the consumer will meet the same error and count it
                log.debug("camera %s: prepare failed", self.id, exc_info=True)
        self._last_activity = now
        self._failures = 0
        self._state = CameraState.ONLINE
        backpressure = self._source is not None and not self._source.live
        with self._cond:
            while backpressure and not self._taken and not self._stop.is_set():
                self._cond.wait(0.1)
            if not self._taken:
                self.stats.dropped += 1
            self._seq += 1
            self._newest = Frame(self.id, self._seq, wall, now, image, prepared)
            self._taken = False
            self.stats.frames += 1
            self.stats.last_frame_mono = now
            self._cond.notify_all()
