"""Where results go. A sink is any callable taking a FrameResult.

    sink = MultiSink({"latest": latest, "events": events, "frames": frames, "log": jsonl})
    sink(result)     # a failing sink is logged and counted; the others still run
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from .annotate import annotate, encode_jpeg
from .results import FrameResult

log = logging.getLogger(__name__)
Sink = Callable[[FrameResult], None]
LOG_EVERY_S = 30.0  # a sink failing on every frame logs once per this many seconds


class MultiSink:
    def __init__(self, sinks: Mapping[str, Sink], on_error: Callable[[str], None] | None = None) -> None:
        self.sinks = dict(sinks)
        self.errors: Counter[str] = Counter()
        self._on_error = on_error
        self._logged: dict[str, float] = {}

    def __call__(self, result: FrameResult) -> None:
        for name, sink in self.sinks.items():
            try:
                sink(result)
            except Exception as exc:  # one sink's failure must never stop the others
                self.errors[name] += 1
                if self._on_error:
                    self._on_error(name)
                now = time.monotonic()
                if now - self._logged.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
                    self._logged[name] = now
                    log.error("sink %s failed (%d so far): %s", name, self.errors[name], exc)


class LatestResults:
    """The newest result of each camera."""

    def __init__(self) -> None:
        self._latest: dict[str, FrameResult] = {}
        self._lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._latest[result.camera_id] = result

    def get(self, camera_id: str) -> FrameResult | None:
        with self._lock:
            return self._latest.get(camera_id)

    def all(self) -> dict[str, FrameResult]:
        with self._lock:
            return dict(self._latest)


@dataclass(eq=False)
class Subscription:
    """One event-stream client: a bounded queue fed from the pipeline's threads."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[tuple[str, str] | None] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    dropped: int = 0

    def put(self, item: tuple[str, str] | None) -> None:
        if self.queue.full():  # a slow client loses its oldest events, never the pipeline's time
            self.queue.get_nowait()
            self.dropped += 1
        self.queue.put_nowait(item)


class EventBroadcaster:
    """Serialises each result once and hands it to every subscribed client."""

    def __init__(self, project: str = "", iteration: str = "") -> None:
        self.project, self.iteration = project, iteration
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()

    def subscribe(self) -> Subscription:
        sub = Subscription(asyncio.get_running_loop())
        with self._lock:
            self._subs.add(sub)
        return sub

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def subscribers(self) -> int:
        return len(self._subs)

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            subs = list(self._subs)
        if not subs:
            return
        data = json.dumps(result.to_json(self.project, self.iteration), separators=(",", ":"))
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.put, (result.camera_id, data))
            except RuntimeError:  # that client's loop has closed
                self.unsubscribe(sub)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # that client's loop is already gone
                sub.loop.call_soon_threadsafe(sub.put, None)


class AnnotatedFrames:
    """Keeps each camera's newest frame and result; draws and encodes only when asked."""

    def __init__(self, quality: int = 80) -> None:
        self.quality = quality
        self._latest: dict[str, FrameResult] = {}
        self._jpeg: dict[str, tuple[int, bytes]] = {}
        self._lock = threading.Lock()
        self._render_lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self._latest[result.camera_id] = result

    def cameras(self) -> list[str]:
        with self._lock:
            return list(self._latest)

    def latest_seq(self, camera_id: str) -> int:
        with self._lock:
            result = self._latest.get(camera_id)
        return result.frame.seq if result else 0

    def jpeg(self, camera_id: str) -> tuple[int, bytes] | None:
        """(frame seq, annotated JPEG) of the newest frame, rendered once per frame."""
        with self._lock:
            result = self._latest.get(camera_id)
        if result is None:
            return None
        with self._render_lock:
            cached = self._jpeg.get(camera_id)
            if cached and cached[0] == result.frame.seq:
                return cached
            data = encode_jpeg(annotate(result.frame.image, result.prediction), self.quality)
            self._jpeg[camera_id] = (result.frame.seq, data)
            return self._jpeg[camera_id]


class JsonlLog:
    """Appends one JSON line per result. A full disk fails this sink alone; once space is
    back, logging resumes and a line cut short by the failure is terminated first."""

    def __init__(self, path: Path, project: str = "", iteration: str = "") -> None:
        self.path = path
        self.project, self.iteration = project, iteration
        path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self._broken = False
        self._lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        line = json.dumps(result.to_json(self.project, self.iteration), separators=(",", ":")) + "\n"
        data = (b"\n" if self._broken else b"") + line.encode()
        with self._lock:
            try:
                written = os.write(self._fd, data)
            except OSError:
                self._broken = True
                raise
            self._broken = written != len(data)
            if self._broken:
                raise OSError(f"{self.path}: short write ({written} of {len(data)} bytes)")

    def close(self) -> None:
        os.close(self._fd)
