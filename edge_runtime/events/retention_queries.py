"""The queries retention.py decides with: the oldest rows with media, dropping an item's
media, deleting the oldest records and samples. A labelled sample (labels.py) is never
among them: its frame is what the next model trains on.
"""

from __future__ import annotations

from typing import Any

from .files import MediaFiles
from .records import EVENT_COLUMNS, EventRecord, events_of


class RetentionQueries(MediaFiles):
    def _has_labels(self) -> bool:
        """Whether the labels table is there (not in a store older than labels, read-only or on a full disk)."""
        return bool(self._read_all("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'labels'"))

    def _unlabelled(self) -> str:
        """A condition on samples.id that leaves labelled samples out."""
        return "id NOT IN (SELECT sample_id FROM labels)" if self._has_labels() else "1"

    def oldest_with_media(self, limit: int = 20) -> list[tuple[str, str, float]]:
        """(kind "event"|"sample", id, time) of the oldest rows that still have media files."""
        rows = self._read_all(
            "SELECT 'event', id, start FROM events WHERE media_bytes > 0 AND end_at IS NOT NULL "
            f"UNION ALL SELECT 'sample', id, taken_at FROM samples WHERE {self._unlabelled()} ORDER BY 3 LIMIT ?",
            (limit,))
        return [(str(k), str(i), float(t)) for k, i, t in rows]

    def drop_media(self, kind: str, item_id: str) -> int:
        """Delete the media of one event (keeping its record) or one unlabelled sample; bytes freed."""
        if kind == "sample":
            unlabelled = self._unlabelled()
            with self._transaction() as db:  # the check and the delete in one: a label saved meanwhile keeps it
                rows = db.execute(f"SELECT image, bytes FROM samples WHERE id = ? AND {unlabelled}",
                                  (item_id,)).fetchall()
                db.execute(f"DELETE FROM samples WHERE id = ? AND {unlabelled}", (item_id,))
            names: list[str | None] = [rows[0][0]] if rows else []
            freed = int(rows[0][1]) if rows else 0
        else:
            rows = self._read_all("SELECT snapshot, thumbnail, clip, frame, media_bytes FROM events WHERE id = ?",
                                  (item_id,))
            with self._transaction() as db:
                db.execute("UPDATE events SET snapshot=NULL, thumbnail=NULL, clip=NULL, frame=NULL, media_bytes=0 "
                           "WHERE id = ?", (item_id,))
            names = list(rows[0][:4]) if rows else []
            freed = int(rows[0][4]) if rows else 0
        self._unlink(names)
        self._count_bytes(-freed)
        self.stats.evicted_media += 1
        return freed

    def delete_oldest_records(self, count: int, older_than: float | None = None) -> int:
        """Delete up to `count` of the oldest ended events (with any media); how many."""
        sql = f"SELECT {EVENT_COLUMNS} FROM events WHERE end_at IS NOT NULL"
        args: tuple[Any, ...] = ()
        if older_than is not None:
            sql += " AND start < ?"
            args = (older_than,)
        events = events_of(self._read_all(sql + " ORDER BY start LIMIT ?", (*args, count)))
        self._delete_events(events)
        self.stats.evicted_records += len(events)
        return len(events)

    def delete_samples_before(self, when: float) -> int:
        rows = self._read_all(f"SELECT id FROM samples WHERE taken_at < ? AND {self._unlabelled()}", (when,))
        for (sample_id,) in rows:
            self.drop_media("sample", sample_id)
        return len(rows)

    def _delete_events(self, events: list[EventRecord]) -> None:
        if not events:
            return
        ids = [(e.id,) for e in events]
        with self._transaction() as db:
            freed = sum(db.execute("SELECT media_bytes FROM events WHERE id = ?", i).fetchone()[0] for i in ids)
            db.executemany("DELETE FROM events WHERE id = ?", ids)
            db.executemany("DELETE FROM outbox WHERE event_id = ?", ids)  # a deleted event is not sent
        self._unlink([n for e in events for n in e.media_names()])
        self._count_bytes(-freed)
