"""What a sink's `build` function gets: the settings and the shared parts it may use."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Settings
from ..events.retention import Janitor
from ..events.store import EventStore
from .broadcast import EventBroadcaster


@dataclass(frozen=True)
class SinkContext:
    settings: Settings
    project: str
    iteration: str
    broadcaster: EventBroadcaster  # sinks may publish their own SSE messages through it
    store: EventStore | None = None  # the opened event store (closed by its owner, not by sinks)
    janitor: Janitor | None = None  # the store's one janitor, shared with the retention loop
