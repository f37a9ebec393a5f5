"""An outbox in memory with the event store's forwarder methods, for tests and trials.

    box = MemoryOutbox()
    box.add_outbox("event-start", "e1", {"id": "e1", "camera": "door"})
    Forwarder("test", "webhook", transport, box, ttl_s=60, backoff=Backoff(0.01, 0.1)).run_once()
    box.cursor("test")   # -> 1
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class MemoryItem:
    seq: int
    kind: str
    event_id: str
    created: float
    payload: dict[str, Any] = field(default_factory=dict)


class MemoryOutbox:
    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self.items: list[MemoryItem] = []
        self.cursors: dict[str, int] = {}
        self.thumbnails: dict[str, Path] = {}  # event id -> its thumbnail file
        self.clock = clock
        self._head = 0  # the highest seq given out: never reused, as the store's AUTOINCREMENT
        self._lock = threading.Lock()

    def add_outbox(self, kind: str, event_id: str, payload: dict[str, Any], created: float | None = None) -> int:
        with self._lock:
            self._head = seq = max(self._head, self.items[-1].seq if self.items else 0) + 1
            self.items.append(MemoryItem(seq, kind, event_id, self.clock() if created is None else created,
                                         dict(payload)))
            return seq

    def outbox_after(self, seq: int, limit: int = 100) -> list[MemoryItem]:
        with self._lock:
            return [i for i in self.items if i.seq > seq][:limit]

    def outbox_count(self, after: int) -> int:
        with self._lock:
            return sum(1 for i in self.items if i.seq > after)

    def outbox_head(self) -> int:
        with self._lock:
            return max(self._head, self.items[-1].seq if self.items else 0)

    def cursor(self, name: str) -> int:
        """The saved cursor; without one, just before the oldest item kept (as the store's)."""
        with self._lock:
            if name in self.cursors:
                return self.cursors[name]
            return self.items[0].seq - 1 if self.items else self._head

    def set_cursor(self, name: str, seq: int) -> None:
        with self._lock:
            self.cursors[name] = seq

    def thumbnail_path(self, event_id: str) -> Path | None:
        return self.thumbnails.get(event_id)
