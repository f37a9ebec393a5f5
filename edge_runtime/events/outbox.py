"""The outbox and the forwarders' cursors: every event start and end appends a row in the
same transaction as the event row; a forwarder reads after its cursor (the forwarders'
Outbox protocol) and saves its place. A row goes only once every configured forwarder
passed it, or once it outlived the longest time-to-live.
"""

from __future__ import annotations

import json
import time
from typing import Any

from .db import StoreCore
from .records import OutboxItem


class OutboxRows(StoreCore):

    def add_outbox(self, kind: str, event_id: str, payload: dict[str, Any]) -> int:
        """Append an item (e.g. kind "result") for the forwarders; its seq."""
        with self._transaction("appending to the outbox") as db:
            seq = self._append_outbox(db, kind, event_id, payload)
        self._wrote()
        return seq

    def outbox_after(self, seq: int, limit: int = 100) -> list[OutboxItem]:
        rows = self._read_all("SELECT seq, kind, event_id, created, payload FROM outbox WHERE seq > ? "
                              "ORDER BY seq LIMIT ?", (seq, limit))
        return [OutboxItem(seq=s, kind=k, event_id=e, created=c, payload=json.loads(p)) for s, k, e, c, p in rows]

    def outbox_head(self) -> int:
        """The highest seq so far (0 if none), even after older rows were pruned."""
        rows = self._read_all("SELECT seq FROM sqlite_sequence WHERE name = 'outbox'")
        return int(rows[0][0]) if rows else 0

    def outbox_count(self, after: int) -> int:
        """How many rows are stored after `after` (rows removed leave gaps in the seqs)."""
        return int(self._read_all("SELECT COUNT(*) FROM outbox WHERE seq > ?", (after,))[0][0])

    def cursor(self, name: str) -> int:
        """The forwarder's saved cursor; for a name that has none yet, just before the oldest
        row still stored (the head when none is), so a forwarder added later starts there."""
        rows = self._read_all(
            "SELECT COALESCE((SELECT seq FROM cursors WHERE name = ?), (SELECT MIN(seq) - 1 FROM outbox), "
            "(SELECT seq FROM sqlite_sequence WHERE name = 'outbox'), 0)", (name,))
        return int(rows[0][0])

    def set_cursor(self, name: str, seq: int) -> None:
        with self._transaction("saving a forwarder's cursor") as db:
            db.execute("INSERT INTO cursors(name, seq) VALUES (?, ?) "
                       "ON CONFLICT(name) DO UPDATE SET seq = excluded.seq", (name, seq))

    def prune_outbox(self, consumers: list[str], max_ttl_s: float | None, now: float | None = None) -> int:
        """Delete the outbox rows that every consumer (the configured forwarders) has saved a
        cursor past, and the rows older than `max_ttl_s` (the longest time-to-live); how many.
        A consumer without a saved cursor yet holds every row (it starts at the oldest), one
        that is not named holds none, and with no consumers only the age removes rows."""
        now = time.time() if now is None else now
        names = sorted(set(consumers))
        deleted = 0
        with self._transaction("pruning the outbox") as db:
            if names:
                marks = db.execute(f"SELECT seq FROM cursors WHERE name IN ({','.join('?' * len(names))})",
                                   names).fetchall()
                if len(marks) == len(names):
                    deleted += db.execute("DELETE FROM outbox WHERE seq <= ?", (min(m[0] for m in marks),)).rowcount
            if max_ttl_s is not None:
                deleted += db.execute("DELETE FROM outbox WHERE created < ?", (now - max_ttl_s,)).rowcount
        return deleted
