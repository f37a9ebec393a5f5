"""The seams between the delivery loop, the store and the transports.

    Item       one outbox row (the store's OutboxItem, memory.MemoryItem in tests)
    Outbox     the part of the event store a forwarder reads and writes
    Transport  one method that sends, and one that cuts the link

base.py (the loop) and payload.py (what is sent) both use these, and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol


class Item(Protocol):
    """One outbox row (the store's OutboxItem)."""

    @property
    def seq(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def event_id(self) -> str: ...
    @property
    def created(self) -> float: ...
    @property
    def payload(self) -> dict[str, Any]: ...


class Outbox(Protocol):
    """The part of the event store a forwarder reads and writes; all methods thread-safe.

    Seqs only grow and are never reused, so a gap between two rows is rows removed (by
    retention, or with their event). A name without a saved cursor starts just before the
    oldest row still stored: a forwarder added later gets every row that is still there."""

    def outbox_after(self, seq: int, limit: int = 100) -> Sequence[Item]: ...
    def outbox_count(self, after: int) -> int: ...
    def cursor(self, name: str) -> int: ...
    def set_cursor(self, name: str, seq: int) -> None: ...
    def thumbnail_path(self, event_id: str) -> Path | None: ...


class Transport(Protocol):
    def send(self, item: Item, body: bytes) -> None:
        """Return once the receiver acknowledged the item, within the transport's deadline;
        raise DeliveryError otherwise (base.DeliveryError)."""

    def close(self) -> None:
        """Release the link; a send waiting on it (another thread) ends soon after."""
