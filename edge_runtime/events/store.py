"""The event store: SQLite in WAL mode in a data folder, media files beside it.

    store = EventStore.open(Path("data"), Budget(max_bytes=512 << 20))
    store.start_event(record, {"snapshot": jpeg, "thumbnail": thumb})
    store.end_event(ended, {"snapshot": best, "thumbnail": thumb})
    store.events(camera="door", limit=50)
    store.close()

Layout: `<data>/events.db` (+ -wal, -shm) and `<data>/media/` (events/<day>/<id>.jpg, ...,
samples/<day>/<id>.jpg). A media file is written to a temporary name, fsynced and renamed
(and its folder fsynced) before the record that names it is committed, so a record never
points at a file a crash lost. Commits use synchronous=FULL: a committed event survives
kill -9 and power loss.

An event still open when the process died is closed at the next open, with the time of the
last frame recorded for it (`last_at`, refreshed by `touch` at most about once a second).
An event deleted while open stays deleted: its `end_event` writes nothing.

`readable_events` and `readable_samples` read a store that may be damaged (salvage.py):
what a bad page or a bad row holds is counted, not raised, and the rest is read.

The outbox: every event start and end appends a row in the same transaction as the event
row; forwarders read it with `outbox_after` and keep their place with `set_cursor`.
`prune_outbox` removes a row only once every configured forwarder saved its cursor past
it, or once it outlived the longest time-to-live, so a crash at any point loses none.

One writer connection, guarded by a lock; readers open connections of their own, so a long
query never waits for a write. Every public method is thread-safe.

Labels (labels.py: what a person said a sample shows, for one model, with a revision for
concurrent saves) are kept beside the samples; a labelled sample is exempt from retention.

Model changes (model_changes.py: each change of a published model's active version) are
kept beside the events, each with an outbox row of its own kind, "model-change".

The store is split by what it keeps: db.py (the SQLite core), files.py (media files and
their budget), outbox.py (the outbox and cursors), sample_rows.py, model_changes.py,
retention_queries.py, labels.py (labels of samples, per model), and records.py (the values);
EventStore, here, adds the events themselves.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from ..errors import StoreError
from .labels import Box, Label, LabelRows
from .model_changes import ModelChange, ModelChangeRows
from .outbox import OutboxRows
from .records import (
    DB_NAME,
    EVENT_COLUMNS,
    MEDIA_DIR,
    MEDIA_KINDS,
    Budget,
    EventRecord,
    OutboxItem,
    SampleRecord,
    StoreStats,
    events_of,
    is_disk_full,
    iso,
    new_id,
)
from .salvage import Damage, RowReader
from .sample_rows import SampleRows

__all__ = [
    "DB_NAME",
    "EVENT_COLUMNS",
    "MEDIA_DIR",
    "MEDIA_KINDS",
    "Box",
    "Budget",
    "EventRecord",
    "EventStore",
    "Label",
    "ModelChange",
    "OutboxItem",
    "SampleRecord",
    "StoreStats",
    "is_disk_full",
    "iso",
    "new_id",
]


class EventStore(LabelRows, SampleRows, ModelChangeRows, OutboxRows):
    """Events, their media, the outbox, samples, their labels, model changes: one SQLite file and a media folder."""

    def _write_event_media(self, event: EventRecord, media: Mapping[str, bytes]) -> EventRecord:
        for kind, data in media.items():
            name = event.media_name(kind)
            self.write_media(name, data)
            event = replace(event, **{kind: name})  # type: ignore[arg-type]
        return event

    def start_event(self, event: EventRecord, media: Mapping[str, bytes] | None = None) -> EventRecord:
        """Write its media, then the open record and an event-start outbox row, atomically.
        The media are skipped (the record still written) when they do not fit."""
        event, fitted = self._media_if_room(event, media or {})
        size = self._media_size(event.media_names())
        with self._transaction("recording an event start") as db:
            db.execute(f"INSERT INTO events({EVENT_COLUMNS}, media_bytes) VALUES "
                       "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", (*self._event_values(event), size))
            self._append_outbox(db, "event-start", event.id, event.to_json())
        self._open_ids.add(event.id)
        self._count_bytes(size)
        if fitted:
            self._wrote()
        return event

    def touch(self, event: EventRecord) -> None:
        """Refresh an open event's counters, so a crash closes it at its last frame."""
        with self._transaction("updating an event") as db:
            db.execute("UPDATE events SET last_at=?, peak=?, peak_at=?, frames=?, box=? WHERE id=?",
                       (event.last_at, event.peak, event.peak_at, event.frames,
                        json.dumps(event.box) if event.box else None, event.id))

    def end_event(self, event: EventRecord, media: Mapping[str, bytes] | None = None,
                  clip: Path | None = None) -> EventRecord | None:
        """Write the final media (the best frame, a clip file to adopt), then close the
        record and append an event-end outbox row, atomically. Media that do not fit leave
        the start's in place. None, with nothing kept, when the event was deleted while it
        was open: a deleted event stays deleted (no record, media or event-end comes back)."""
        if event.end is None:
            raise ValueError("end_event needs an end time")
        event, fitted = self._media_if_room(event, media or {})
        if clip is not None:
            size = clip.stat().st_size if clip.exists() else 0
            if size and self.room_for(size):
                name = event.media_name("clip")
                self.adopt_media(name, clip)
                event = replace(event, clip=name)
            else:
                clip.unlink(missing_ok=True)
        size = 0
        with self._transaction("recording an event end") as db:
            old = db.execute("SELECT media_bytes, snapshot, thumbnail, clip, frame FROM events WHERE id = ?",
                             (event.id,)).fetchone()
            deleted = old is None and event.id in self._open_ids  # its start was written, so it was deleted
            if not deleted:
                kept = dict(zip(MEDIA_KINDS, old[1:], strict=True)) if old else {}
                event = replace(event, **{k: n for k, n in kept.items() if n and getattr(event, k) is None})
                size = self._media_size(event.media_names())
                values = (*self._event_values(event), size)
                db.execute(f"INSERT OR REPLACE INTO events({EVENT_COLUMNS}, media_bytes) VALUES "
                           "(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)", values)
                self._append_outbox(db, "event-end", event.id, event.to_json())
        self._open_ids.discard(event.id)
        if deleted:
            self._unlink(event.media_names())
            return None
        self._count_bytes(size - (old[0] if old else 0))
        if fitted:
            self._wrote()
        return event

    def _media_if_room(self, event: EventRecord, media: Mapping[str, bytes]) -> tuple[EventRecord, bool]:
        """The event with its media written, and whether they fitted (the record is still
        worth keeping without its pictures)."""
        if not media:
            return event, True
        if not self.room_for(sum(len(d) for d in media.values())):
            self.stats.refused += 1
            self.stats.disk_full = True
            self.stats.last_error = "media skipped: over the budget or the free-space floor"
            return event, False
        try:
            return self._write_event_media(event, media), True
        except StoreError:  # counted by _guard
            return event, False

    @staticmethod
    def _event_values(e: EventRecord) -> tuple[Any, ...]:
        return (e.id, e.rule, e.camera, e.tag, e.start, e.end, e.last_at, e.peak, e.peak_at, e.frames,
                json.dumps(e.box) if e.box else None, e.snapshot, e.thumbnail, e.clip, e.frame, e.device)

    def get(self, event_id: str) -> EventRecord | None:
        found = events_of(self._read_all(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)))
        return found[0] if found else None

    def events(self, camera: str | None = None, tag: str | None = None, since: float | None = None,
               until: float | None = None, limit: int = 100, before: str | None = None,
               oldest_first: bool = False) -> list[EventRecord]:
        """Events by start time, newest first (or oldest first); `before` is the id the
        previous page ended with (ids sort by start time)."""
        where, args = [], []
        for clause, value in (("camera = ?", camera), ("tag = ?", tag), ("start >= ?", since),
                              ("start <= ?", until), ("id < ?" if not oldest_first else "id > ?", before)):
            if value is not None:
                where.append(clause)
                args.append(value)
        sql = f"SELECT {EVENT_COLUMNS} FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += f" ORDER BY id {'ASC' if oldest_first else 'DESC'} LIMIT ?"
        return events_of(self._read_all(sql, (*args, limit)))

    def readable_events(self, damage: Damage, since: float | None = None,
                        until: float | None = None) -> list[EventRecord]:
        """Every event in the range that can still be read, oldest first: rows on damaged
        pages and rows no event can be made of are left out and counted in `damage`."""
        bounds = [(clause, value) for clause, value in (("start >= ?", since), ("start <= ?", until))
                  if value is not None]
        with self.reader() as db:
            rows = RowReader(db, "events", EVENT_COLUMNS, damage).rows(
                " AND ".join(c for c, _ in bounds), tuple(v for _, v in bounds))
        return sorted(events_of(rows, damage), key=lambda e: e.id)

    def count(self) -> int:
        return self._read_all("SELECT COUNT(*) FROM events")[0][0]  # type: ignore[no-any-return]

    def has_camera(self, camera: str) -> bool:
        """Whether a stored event names `camera` (a camera no longer configured still has its events)."""
        return bool(self._read_all("SELECT 1 FROM events WHERE camera = ? LIMIT 1", (camera,)))

    def delete(self, event_id: str) -> bool:
        """Delete an event and its media; False if there was none."""
        event = self.get(event_id)
        if event is None:
            return False
        self._delete_events([event])
        return True

    def thumbnail_path(self, event_id: str) -> Path | None:
        """The event's thumbnail file, None when it has none (yet, or any more)."""
        event = self.get(event_id)
        if event is None or not event.thumbnail:
            return None
        return self.media_path(event.thumbnail)
