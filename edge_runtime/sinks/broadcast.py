"""Server-Sent Events: each result serialised once and handed to every subscribed client.

Clients get `(kind, camera, data)` items: kind is the SSE event name ("prediction", and
whatever else is published with `publish`, such as "event-start").
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from dataclasses import dataclass, field

from ..types import FrameResult

Item = tuple[str, str, str]  # (event name, camera id, JSON data)


@dataclass(eq=False)
class Subscription:
    """One event-stream client: a bounded queue fed from the pipeline's threads."""

    loop: asyncio.AbstractEventLoop
    queue: asyncio.Queue[Item | None] = field(default_factory=lambda: asyncio.Queue(maxsize=256))
    dropped: int = 0

    def put(self, item: Item | None) -> None:
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
        data = result.json_text(self.project, self.iteration)
        self._send(subs, ("prediction", result.camera_id, data))

    def publish(self, kind: str, camera_id: str, data: str) -> None:
        """Send one more kind of message (already JSON) to every client, from any thread."""
        with self._lock:
            subs = list(self._subs)
        self._send(subs, (kind, camera_id, data))

    def _send(self, subs: list[Subscription], item: Item) -> None:
        for sub in subs:
            try:
                sub.loop.call_soon_threadsafe(sub.put, item)
            except RuntimeError:  # that client's loop has closed
                self.unsubscribe(sub)

    def close(self) -> None:
        """End every stream (server shutdown)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            with contextlib.suppress(RuntimeError):  # that client's loop is already gone
                sub.loop.call_soon_threadsafe(sub.put, None)
