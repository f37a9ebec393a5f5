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
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import json
import logging
import math
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, NoReturn

from ..errors import DiskFullError, StoreError
from ..types import iso_ms
from . import salvage
from .salvage import Damage, RowReader

log = logging.getLogger(__name__)
DB_NAME = "events.db"
MEDIA_DIR = "media"
SCHEMA_VERSION = 1
WAL_PAGES = 256
CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
FULL_ERRNOS = {errno.ENOSPC, errno.EDQUOT}
MEDIA_KINDS = ("snapshot", "thumbnail", "clip", "frame")
SUFFIX = {"snapshot": ".jpg", "thumbnail": "-thumb.jpg", "clip": ".mp4", "frame": "-frame.jpg"}

SCHEMA = """
CREATE TABLE IF NOT EXISTS events(
    id TEXT PRIMARY KEY, rule TEXT NOT NULL, camera TEXT NOT NULL, tag TEXT NOT NULL,
    start REAL NOT NULL, end_at REAL, last_at REAL NOT NULL,
    peak REAL NOT NULL, peak_at REAL NOT NULL, frames INTEGER NOT NULL, box TEXT,
    snapshot TEXT, thumbnail TEXT, clip TEXT, frame TEXT, media_bytes INTEGER NOT NULL DEFAULT 0,
    device TEXT NOT NULL DEFAULT '');
CREATE INDEX IF NOT EXISTS events_start ON events(start);
CREATE TABLE IF NOT EXISTS outbox(
    seq INTEGER PRIMARY KEY AUTOINCREMENT, kind TEXT NOT NULL, event_id TEXT NOT NULL,
    created REAL NOT NULL, payload TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS outbox_event ON outbox(event_id);
CREATE TABLE IF NOT EXISTS cursors(name TEXT PRIMARY KEY, seq INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS samples(
    id TEXT PRIMARY KEY, sampler TEXT NOT NULL, camera TEXT NOT NULL, taken_at REAL NOT NULL,
    image TEXT NOT NULL, prediction TEXT NOT NULL, bytes INTEGER NOT NULL);
CREATE INDEX IF NOT EXISTS samples_taken ON samples(taken_at);
"""
EVENT_COLUMNS = ("id, rule, camera, tag, start, end_at, last_at, peak, peak_at, frames, box, "
                 "snapshot, thumbnail, clip, frame, device")
SAMPLE_COLUMNS = "id, sampler, camera, taken_at, image, prediction"


def new_id(at: float | None = None) -> str:
    """A ULID: 48 bits of milliseconds then 80 random bits, 26 Crockford base-32 characters.
    Sorting ids sorts by time; the random part keeps them unique across restarts."""
    ms = int((time.time() if at is None else at) * 1000) & ((1 << 48) - 1)
    value = (ms << 80) | int.from_bytes(os.urandom(10), "big")
    return "".join(CROCKFORD[(value >> (5 * i)) & 31] for i in range(25, -1, -1))


def iso(ts: float | None) -> str | None:
    return None if ts is None else iso_ms(dt.datetime.fromtimestamp(ts, dt.timezone.utc))


def is_disk_full(exc: BaseException) -> bool:
    if isinstance(exc, OSError) and exc.errno in FULL_ERRNOS:
        return True
    return isinstance(exc, sqlite3.OperationalError) and "disk is full" in str(exc)


@dataclass(frozen=True)
class Budget:
    """What retention keeps: bytes of records and media, age, and free space on the disk."""

    max_bytes: int = 1024 << 20
    max_age_s: float | None = None
    min_free_bytes: int = 64 << 20


@dataclass(frozen=True)
class EventRecord:
    id: str
    rule: str
    camera: str
    tag: str
    start: float  # wall clock, seconds since the epoch
    end: float | None
    last_at: float  # the newest frame counted in the event
    peak: float
    peak_at: float
    frames: int
    box: dict[str, float] | None = None
    snapshot: str | None = None  # media names (store.media_path resolves them)
    thumbnail: str | None = None
    clip: str | None = None
    frame: str | None = None  # the best frame without drawings (events.keep_frames), for datasets
    device: str = ""

    def to_json(self) -> dict[str, Any]:
        """The event's JSON, as GET /api/events/{id} answers and the outbox carries it."""
        base = f"/api/events/{self.id}"
        return {
            "id": self.id, "rule": self.rule, "camera": self.camera, "tag": self.tag,
            "start": iso(self.start), "end": iso(self.end),
            "peakProbability": round(self.peak, 6), "peakAt": iso(self.peak_at), "frames": self.frames,
            "box": self.box,
            "snapshot": f"{base}/snapshot.jpg" if self.snapshot else None,
            "thumbnail": f"{base}/thumbnail.jpg" if self.thumbnail else None,
            "clip": f"{base}/clip.mp4" if self.clip else None,
            "device": self.device,
        }

    def media_names(self) -> list[str | None]:
        return [self.snapshot, self.thumbnail, self.clip, self.frame]

    def media_name(self, kind: str) -> str:
        day = dt.datetime.fromtimestamp(self.start, dt.timezone.utc).strftime("%Y-%m-%d")
        return f"events/{day}/{self.id}{SUFFIX[kind]}"


@dataclass(frozen=True)
class OutboxItem:
    seq: int  # strictly increasing, never reused
    kind: str  # "event-start" | "event-end" | "result"
    event_id: str  # the idempotency key
    created: float  # wall clock
    payload: dict[str, Any]


@dataclass(frozen=True)
class SampleRecord:
    id: str
    sampler: str
    camera: str
    taken_at: float
    image: str  # media name
    prediction: dict[str, Any]


@dataclass
class StoreStats:
    """Counters for /readyz and /metrics."""

    disk_full: bool = False
    last_error: str | None = None
    refused: int = 0  # writes refused for lack of space (events, media or samples)
    evicted_media: int = 0
    evicted_records: int = 0
    recovered: int = 0  # open events closed at startup
    started: int = 0  # counted by the recorder
    ended: int = 0
    dropped_results: int = 0  # results the recorder had no time for (its queue was full)
    errors: dict[str, int] = field(default_factory=dict)


def _row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> EventRecord:
    """ValueError for a row no event can be made of (a damaged store, another program's
    rows); a box or media name that makes no sense is dropped and the event kept."""
    (id_, rule, camera, tag, start, end, last_at, peak, peak_at, frames, box,
     snapshot, thumbnail, clip, frame, device) = row
    v = salvage
    return EventRecord(id=v.key(id_), rule=v.text(rule), camera=v.text(camera), tag=v.text(tag),
                       start=v.instant(start), end=None if end is None else v.instant(end),
                       last_at=v.instant(last_at), peak=v.number(peak), peak_at=v.instant(peak_at),
                       frames=v.count(frames), box=v.box(box), snapshot=v.name(snapshot),
                       thumbnail=v.name(thumbnail), clip=v.name(clip), frame=v.name(frame), device=v.text(device))


def _events_of(rows: list[tuple[Any, ...]], damage: Damage | None = None) -> list[EventRecord]:
    """The rows that make events; the others are left out (counted in `damage`, or logged)."""
    events = []
    for row in rows:
        try:
            events.append(_row_to_event(row))
        except (ValueError, TypeError) as exc:
            if damage is not None:
                damage.add(damage.bad, "events")
            else:
                log.warning("event store: an events row is left out: %s", exc)
    return events


def _samples_of(rows: list[tuple[Any, ...]], damage: Damage | None = None) -> list[SampleRecord]:
    """As `_events_of`, for rows of SAMPLE_COLUMNS; a prediction that is not JSON reads as {}."""
    samples = []
    for sample_id, sampler, camera, taken_at, image, prediction in rows:
        try:
            samples.append(SampleRecord(
                id=salvage.key(sample_id), sampler=salvage.text(sampler), camera=salvage.text(camera),
                taken_at=salvage.instant(taken_at), image=salvage.key(image),
                prediction=salvage.json_object(prediction) or {}))
        except ValueError as exc:
            if damage is not None:
                damage.add(damage.bad, "samples")
            else:
                log.warning("event store: a samples row is left out: %s", exc)
    return samples


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EventStore:
    def __init__(self, data_dir: Path, db: sqlite3.Connection, budget: Budget) -> None:
        self.data_dir = data_dir
        self.media_dir = data_dir / MEDIA_DIR
        self.budget = budget
        self.stats = StoreStats()
        self._db = db
        self._lock = threading.RLock()
        self._closed = False
        self._open_ids: set[str] = set()  # events this store started that have not ended
        try:
            self._media_bytes = self._scalar(
                "SELECT (SELECT COALESCE(SUM(media_bytes), 0) FROM events) + "
                "(SELECT COALESCE(SUM(bytes), 0) FROM samples)")
        except sqlite3.DatabaseError:  # a damaged store still opens, to read what is left
            self._media_bytes = 0

    # ---- opening and closing -------------------------------------------------------------

    @classmethod
    def open(cls, data_dir: Path, budget: Budget | None = None) -> EventStore:
        """Create or migrate the store; close events a crash left open; clear half-written
        media. StoreError (one line, naming the folder) if it cannot be used."""
        data_dir = Path(data_dir)
        try:
            (data_dir / MEDIA_DIR).mkdir(parents=True, exist_ok=True)
            db = sqlite3.connect(data_dir / DB_NAME, isolation_level=None, check_same_thread=False, timeout=30)
            version = db.execute("PRAGMA user_version").fetchone()[0]
            if version > SCHEMA_VERSION:
                db.close()
                raise StoreError(f"{data_dir / DB_NAME}: written by a newer edge-runtime (schema {version})")
            if version == 0:
                db.execute("PRAGMA auto_vacuum=INCREMENTAL")  # only takes effect before the first table
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=FULL")
            db.execute(f"PRAGMA wal_autocheckpoint={WAL_PAGES}")  # keep the WAL small: it counts
            db.execute(f"PRAGMA journal_size_limit={WAL_PAGES * 4096}")
            if version != SCHEMA_VERSION:  # an existing store opens without writing (a full disk)
                db.executescript(SCHEMA)
                db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"event store {data_dir}: {exc}") from None
        except OSError as exc:
            raise StoreError(f"event store {data_dir}: {exc.strerror or exc}") from None
        store = cls(data_dir, db, budget or Budget())
        try:
            store._recover()
        except StoreError as exc:  # a full disk: serve anyway; the next open tries again
            log.error("%s; open events stay open until the store can be written", exc)
        except sqlite3.DatabaseError as exc:  # a damaged page: `events export` still reads the rest
            store.close()
            raise StoreError(f"event store {data_dir}: {exc} (`edge-runtime events export` copies what "
                             "can still be read)") from None
        return store

    @classmethod
    def open_readonly(cls, data_dir: Path) -> EventStore:
        """For reading while another process records: no recovery, no writes."""
        path = Path(data_dir) / DB_NAME
        if not path.is_file():
            raise StoreError(f"no event store in {data_dir} ({DB_NAME} not found)")
        try:
            db = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False,
                                 isolation_level=None, timeout=30)
            db.execute("PRAGMA writable_schema=ON")  # a truncated file opens (read-only: nothing is written)
            db.execute(f"SELECT {EVENT_COLUMNS} FROM events LIMIT 0")  # the schema only: damaged pages are read later
        except sqlite3.DatabaseError as exc:
            if str(exc).startswith("no such"):  # another program's events.db: no such table, no such column
                raise StoreError(f"{path}: not an edge-runtime event store ({exc})") from None
            raise StoreError(f"event store {data_dir}: {exc}") from None
        return cls(Path(data_dir), db, Budget())

    def close(self) -> None:
        with self._lock:
            if not self._closed:
                self._closed = True
                with contextlib.suppress(sqlite3.Error):
                    self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                self._db.close()

    def _recover(self) -> None:
        """Close what a crash left open, and delete media no record names."""
        with self._transaction() as db:
            rows = db.execute(f"SELECT {EVENT_COLUMNS} FROM events WHERE end_at IS NULL").fetchall()
            for event in _events_of(rows):
                ended = replace(event, end=event.last_at)
                db.execute("UPDATE events SET end_at = last_at WHERE id = ?", (event.id,))
                self._append_outbox(db, "event-end", ended.id, ended.to_json())
        self.stats.recovered = len(rows)
        named = {name for row in self._read_all(
            "SELECT snapshot, thumbnail, clip, frame FROM events UNION ALL SELECT image, NULL, NULL, NULL FROM samples")
            for name in row if name}
        for path in self.media_dir.rglob("*"):
            if path.is_file() and (path.name.endswith(".tmp") or
                                   path.relative_to(self.media_dir).as_posix() not in named):
                path.unlink(missing_ok=True)

    # ---- connections -----------------------------------------------------------------------

    @contextlib.contextmanager
    def reader(self) -> Iterator[sqlite3.Connection]:
        """A connection of the caller's own for reading (WAL: never blocked by the writer)."""
        db = sqlite3.connect(self.data_dir / DB_NAME, isolation_level=None, timeout=30)
        try:
            db.execute("PRAGMA query_only=ON")
            yield db
        finally:
            db.close()

    @contextlib.contextmanager
    def _transaction(self, what: str = "writing") -> Iterator[sqlite3.Connection]:
        """One write transaction; SQLite's errors leave as StoreError (DiskFullError when the
        disk is full), counted under `what`."""
        with self._lock:
            if self._closed:
                raise StoreError(f"event store {self.data_dir} is closed")
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    yield self._db
                except BaseException:
                    with contextlib.suppress(sqlite3.Error):
                        self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                with contextlib.suppress(sqlite3.Error):
                    if self._db.in_transaction:
                        self._db.execute("ROLLBACK")
                self._guard(what, exc)

    def _scalar(self, sql: str, args: tuple[Any, ...] = ()) -> int:
        with self._lock:
            value = self._db.execute(sql, args).fetchone()[0]
        return int(value or 0)

    def _read_all(self, sql: str, args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with self.reader() as db:
            return db.execute(sql, args).fetchall()

    # ---- space ---------------------------------------------------------------------------

    def usage_bytes(self) -> int:
        """Media plus the database files: what the budget counts."""
        total = self._media_bytes
        for suffix in ("", "-wal", "-shm"):
            with contextlib.suppress(OSError):
                total += (self.data_dir / (DB_NAME + suffix)).stat().st_size
        return total

    def _count_bytes(self, delta: int) -> None:
        with self._lock:
            self._media_bytes += delta

    def over_budget(self, extra: int = 0) -> bool:
        """Over max_bytes (what deleting records helps with, unlike a disk full of other files)."""
        return self.usage_bytes() + extra > self.budget.max_bytes

    def free_bytes(self) -> int:
        try:
            return shutil.disk_usage(self.data_dir).free
        except OSError:
            return 0

    def _guard(self, what: str, exc: BaseException) -> NoReturn:
        """Note a failed write: a full disk becomes DiskFullError, anything else StoreError."""
        self.stats.last_error = f"{what}: {exc}"
        self.stats.errors[what] = self.stats.errors.get(what, 0) + 1
        if is_disk_full(exc):
            self.stats.disk_full = True
            self.stats.refused += 1
            raise DiskFullError(f"event store {self.data_dir}: no space left ({what})") from None
        raise StoreError(f"event store {self.data_dir}: {what}: {exc}") from None

    def _wrote(self) -> None:
        self.stats.disk_full = False

    def room_for(self, size: int) -> bool:
        """Whether `size` more bytes fit the budget and the free-space floor."""
        return (self.usage_bytes() + size <= self.budget.max_bytes
                and self.free_bytes() - size >= self.budget.min_free_bytes)

    # ---- media -----------------------------------------------------------------------------

    def media_path(self, relative: str) -> Path:
        """The file a stored media name refers to; StoreError for names that leave media/."""
        root = self.media_dir.resolve()
        path = (root / relative).resolve()
        if not relative or root not in path.parents:
            raise StoreError(f"not a media name: {relative!r}")
        return path

    def write_media(self, name: str, data: bytes) -> int:
        """Write a media file durably (temp name, fsync, rename, fsync folder); its size.
        DiskFullError when there is no room (nothing is left behind)."""
        path = self.media_path(name)
        tmp = path.with_name(path.name + ".tmp")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
            _fsync_dir(path.parent)
        except OSError as exc:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            self._guard(f"writing {name}", exc)
        return len(data)

    def adopt_media(self, name: str, written: Path) -> int:
        """Move a finished file (e.g. a clip a VideoWriter wrote) into media/ durably."""
        path = self.media_path(name)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with open(written, "rb+") as f:
                os.fsync(f.fileno())
            os.replace(written, path)
            _fsync_dir(path.parent)
            return path.stat().st_size
        except OSError as exc:
            with contextlib.suppress(OSError):
                written.unlink(missing_ok=True)
            self._guard(f"writing {name}", exc)

    def thumbnail_path(self, event_id: str) -> Path | None:
        """The event's thumbnail file, None when it has none (yet, or any more)."""
        event = self.get(event_id)
        if event is None or not event.thumbnail:
            return None
        return self.media_path(event.thumbnail)

    def scratch_path(self, suffix: str) -> Path:
        """A temporary file name inside media/ (removed at the next open if left behind)."""
        return self.media_dir / f"{new_id()}.part{suffix}"

    def _media_size(self, names: list[str | None]) -> int:
        total = 0
        for name in names:
            if name:
                with contextlib.suppress(OSError, StoreError):
                    total += self.media_path(name).stat().st_size
        return total

    def _write_event_media(self, event: EventRecord, media: Mapping[str, bytes]) -> EventRecord:
        for kind, data in media.items():
            name = event.media_name(kind)
            self.write_media(name, data)
            event = replace(event, **{kind: name})  # type: ignore[arg-type]
        return event

    # ---- events ------------------------------------------------------------------------------

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
        found = _events_of(self._read_all(f"SELECT {EVENT_COLUMNS} FROM events WHERE id = ?", (event_id,)))
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
        return _events_of(self._read_all(sql, (*args, limit)))

    def readable_events(self, damage: Damage, since: float | None = None,
                        until: float | None = None) -> list[EventRecord]:
        """Every event in the range that can still be read, oldest first: rows on damaged
        pages and rows no event can be made of are left out and counted in `damage`."""
        bounds = [(clause, value) for clause, value in (("start >= ?", since), ("start <= ?", until))
                  if value is not None]
        with self.reader() as db:
            rows = RowReader(db, "events", EVENT_COLUMNS, damage).rows(
                " AND ".join(c for c, _ in bounds), tuple(v for _, v in bounds))
        return sorted(_events_of(rows, damage), key=lambda e: e.id)

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

    # ---- retention primitives (retention.py decides) --------------------------------------------

    def oldest_with_media(self, limit: int = 20) -> list[tuple[str, str, float]]:
        """(kind "event"|"sample", id, time) of the oldest rows that still have media files."""
        rows = self._read_all(
            "SELECT 'event', id, start FROM events WHERE media_bytes > 0 AND end_at IS NOT NULL "
            "UNION ALL SELECT 'sample', id, taken_at FROM samples ORDER BY 3 LIMIT ?", (limit,))
        return [(str(k), str(i), float(t)) for k, i, t in rows]

    def drop_media(self, kind: str, item_id: str) -> int:
        """Delete the media of one event (keeping its record) or one sample; bytes freed."""
        if kind == "sample":
            rows = self._read_all("SELECT image, bytes FROM samples WHERE id = ?", (item_id,))
            with self._transaction() as db:
                db.execute("DELETE FROM samples WHERE id = ?", (item_id,))
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
        events = _events_of(self._read_all(sql + " ORDER BY start LIMIT ?", (*args, count)))
        self._delete_events(events)
        self.stats.evicted_records += len(events)
        return len(events)

    def delete_samples_before(self, when: float) -> int:
        rows = self._read_all("SELECT id FROM samples WHERE taken_at < ?", (when,))
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

    def _unlink(self, names: list[str | None]) -> None:
        for name in names:
            if name:
                with contextlib.suppress(OSError, StoreError):
                    self.media_path(name).unlink(missing_ok=True)

    def compact(self) -> None:
        """Give freed database pages back to the disk."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    # ---- outbox and cursors ----------------------------------------------------------------------

    @staticmethod
    def _append_outbox(db: sqlite3.Connection, kind: str, event_id: str, payload: dict[str, Any]) -> int:
        cur = db.execute("INSERT INTO outbox(kind, event_id, created, payload) VALUES (?,?,?,?)",
                         (kind, event_id, time.time(), json.dumps(payload, separators=(",", ":"))))
        return int(cur.lastrowid or 0)

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

    # ---- samples -------------------------------------------------------------------------------

    def add_sample(self, sampler: str, camera: str, taken_at: float, jpeg: bytes,
                   prediction: dict[str, Any]) -> str | None:
        """Keep a frame for labelling; its id, or None when the budget or the disk refuses it
        (samples never push events out)."""
        if not self.room_for(len(jpeg)):
            self.stats.refused += 1
            return None
        sample_id = new_id(taken_at)
        day = dt.datetime.fromtimestamp(taken_at, dt.timezone.utc).strftime("%Y-%m-%d")
        name = f"samples/{day}/{sample_id}.jpg"
        try:
            size = self.write_media(name, jpeg)
            with self._transaction("saving a sample") as db:
                db.execute("INSERT INTO samples(id, sampler, camera, taken_at, image, prediction, bytes) "
                           "VALUES (?,?,?,?,?,?,?)",
                           (sample_id, sampler, camera, taken_at, name, json.dumps(prediction), size))
        except DiskFullError:
            self._unlink([name])
            return None
        self._count_bytes(size)
        self._wrote()
        return sample_id

    def samples(self, since: float | None = None, until: float | None = None) -> list[SampleRecord]:
        rows = self._read_all(
            "SELECT id, sampler, camera, taken_at, image, prediction FROM samples "
            "WHERE taken_at >= ? AND taken_at <= ? ORDER BY taken_at",
            (since if since is not None else float("-inf"), until if until is not None else float("inf")))
        return _samples_of(rows)

    def readable_samples(self, damage: Damage, since: float | None = None,
                         until: float | None = None) -> list[SampleRecord]:
        """As `readable_events`, for the samples: what can still be read, oldest first."""
        with self.reader() as db:
            rows = RowReader(db, "samples", SAMPLE_COLUMNS, damage).rows(
                "taken_at >= ? AND taken_at <= ?", (-math.inf if since is None else since,
                                                    math.inf if until is None else until))
        return sorted(_samples_of(rows, damage), key=lambda s: (s.taken_at, s.id))

    # ---- health ---------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        """For /readyz details: whether recording works, and the space it has."""
        s = self.stats
        return {"ok": not s.disk_full, "diskFull": s.disk_full, "usedBytes": self.usage_bytes(),
                "budgetBytes": self.budget.max_bytes, "freeBytes": self.free_bytes(),
                "minFreeBytes": self.budget.min_free_bytes, "refused": s.refused, "lastError": s.last_error}

    def integrity_check(self) -> str:
        return str(self._read_all("PRAGMA integrity_check")[0][0])
