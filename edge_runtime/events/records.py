"""What the event store keeps, as Python values: events, outbox items, samples, the budget
and the counters, and the conversions from rows. No I/O but the directory fsync.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import math
import os
import sqlite3
import time
from dataclasses import dataclass, field
from typing import Any

from ..types import iso_ms
from . import salvage
from .salvage import Damage

log = logging.getLogger(__name__)
DB_NAME = "events.db"
MEDIA_DIR = "media"
SCHEMA_VERSION = 3  # 2: model_changes; 3: labels
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
CREATE TABLE IF NOT EXISTS model_changes(
    id TEXT PRIMARY KEY, name TEXT NOT NULL, project TEXT, old_version INTEGER, new_version INTEGER,
    old_iteration TEXT NOT NULL, new_iteration TEXT NOT NULL, reason TEXT NOT NULL, detail TEXT NOT NULL,
    source TEXT NOT NULL, at REAL NOT NULL, device TEXT NOT NULL);
CREATE INDEX IF NOT EXISTS model_changes_at ON model_changes(at);
CREATE TABLE IF NOT EXISTS labels(
    sample_id TEXT NOT NULL, model TEXT NOT NULL, kind TEXT NOT NULL, tags TEXT NOT NULL, boxes TEXT NOT NULL,
    labelled_at REAL NOT NULL, revision INTEGER NOT NULL, PRIMARY KEY(sample_id, model));
CREATE INDEX IF NOT EXISTS labels_model ON labels(model, labelled_at);
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
    """Milliseconds, cut down, never rounded up: an event's own start given back as --since
    or ?since= must find it (rounding to the microsecond first could carry into the next ms)."""
    if ts is None:
        return None
    ms = math.floor(ts * 1000)
    while ms / 1000 > ts:  # ts * 1000 itself can round up
        ms -= 1
    return iso_ms(dt.datetime.fromtimestamp(ms / 1000, dt.timezone.utc))


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
    kind: str  # "event-start" | "event-end" | "result" | "model-change"
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


def row_to_event(row: sqlite3.Row | tuple[Any, ...]) -> EventRecord:
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


def events_of(rows: list[tuple[Any, ...]], damage: Damage | None = None) -> list[EventRecord]:
    """The rows that make events; the others are left out (counted in `damage`, or logged)."""
    events = []
    for row in rows:
        try:
            events.append(row_to_event(row))
        except (ValueError, TypeError) as exc:
            if damage is not None:
                damage.add(damage.bad, "events")
            else:
                log.warning("event store: an events row is left out: %s", exc)
    return events


def samples_of(rows: list[tuple[Any, ...]], damage: Damage | None = None) -> list[SampleRecord]:
    """As `events_of`, for rows of SAMPLE_COLUMNS; a prediction that is not JSON reads as {}."""
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

