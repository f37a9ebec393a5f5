"""Model changes: each change of a published name's active version, and each version
refused before it became active, kept in the event store and forwarded beside the events.

    change = ModelChange(name="shelf", project=None, old_version=2, new_version=3,
                         old_iteration="7f3c...", new_iteration="a91e...", reason="publish",
                         source="cli", at=time.time(), device="kiosk-3")
    change_id = store.record_model_change(change)   # the row and its outbox row, at once
    store.model_changes(limit=20)                    # newest first, ids filled in

The outbox row has kind "model-change" and carries `ModelChange.to_json()`, a payload of
its own (docs/model-change.schema.json) with a `schemaVersion`: the event schema requires a
rule, a camera and a tag, which a model change has none of. Names and iterations are stored
as given and only ever leave as JSON strings; they never name a file. The janitor keeps
the newest MAX_ROWS rows (retention.py); the outbox rows follow the outbox's own rules.
"""

from __future__ import annotations

import math
import sqlite3
from dataclasses import dataclass, replace
from typing import Any

from . import salvage
from .db import StoreCore
from .records import iso, log, new_id

KIND = "model-change"
PAYLOAD_SCHEMA_VERSION = 1
# publish, rollback (asked for), auto-rollback (the health gate), unpublish, refused: a
# version that failed to load, warm up, verify or its signature check, and never became active,
# and discard: a candidate trained on the device that was thrown away (the active one stays)
REASONS = ("publish", "rollback", "auto-rollback", "unpublish", "refused", "discard")
MAX_TEXT = 256  # characters of a name, project, iteration, source or device
MAX_DETAIL = 1000  # characters of the one-line detail; longer ones are cut
MAX_ROWS = 1000  # rows the janitor keeps (each is a few hundred bytes)
NEWEST_FIRST = "at DESC, rowid DESC"  # two changes in one millisecond: the later written first
COLUMNS = ("id, name, project, old_version, new_version, old_iteration, new_iteration, reason, detail, "
           "source, at, device")


@dataclass(frozen=True)
class ModelChange:
    name: str
    project: str | None
    old_version: int | None  # None: the name had no active version (a first publish)
    new_version: int | None  # None: none is active now (unpublish); the refused one for "refused"
    old_iteration: str
    new_iteration: str
    reason: str  # one of REASONS
    detail: str = ""  # one line: why (the refusal's reason, the health gate's finding)
    source: str = "cli"  # cli, http, incoming, pull, twin, ...
    at: float = 0.0  # seconds since the epoch
    device: str = ""
    id: str = ""  # a ULID, given by record_model_change

    def __post_init__(self) -> None:
        """ValueError (one line) for a change no record can hold; a detail of several lines
        keeps its first, cut to MAX_DETAIL characters."""
        if self.reason not in REASONS:
            raise ValueError(f"model change reason {self.reason!r}: one of {', '.join(REASONS)}")
        for what in ("old_version", "new_version"):
            value = getattr(self, what)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"model change {what} {value!r}: a version number (1 or more) or None")
        if isinstance(self.at, bool) or not isinstance(self.at, (int, float)) or not math.isfinite(self.at):
            raise ValueError(f"model change time {self.at!r}: seconds since the epoch")
        for what in ("name", "project", "old_iteration", "new_iteration", "source", "device", "id"):
            value = getattr(self, what)
            if value is None and what == "project":
                continue
            if not isinstance(value, str) or len(value) > MAX_TEXT:
                raise ValueError(f"model change {what}: text of at most {MAX_TEXT} characters")
        if not self.name:
            raise ValueError("model change name: empty")
        if not isinstance(self.detail, str):
            raise ValueError("model change detail: text")
        line = (self.detail.strip().splitlines() or [""])[0]
        if len(line) > MAX_DETAIL:
            line = line[:MAX_DETAIL - 3] + "..."
        object.__setattr__(self, "detail", line)

    def to_json(self) -> dict[str, Any]:
        """The forwarded payload (docs/model-change.schema.json), as the outbox carries it."""
        return {"type": KIND, "schemaVersion": PAYLOAD_SCHEMA_VERSION, "id": self.id, "name": self.name,
                "project": self.project, "oldVersion": self.old_version, "newVersion": self.new_version,
                "oldIteration": self.old_iteration, "newIteration": self.new_iteration, "reason": self.reason,
                "detail": self.detail, "source": self.source, "at": iso(self.at), "device": self.device}

    def values(self) -> tuple[Any, ...]:
        return (self.id, self.name, self.project, self.old_version, self.new_version, self.old_iteration,
                self.new_iteration, self.reason, self.detail, self.source, self.at, self.device)


def _version(value: Any) -> int | None:
    return None if value is None else salvage.count(value)


def row_to_change(row: tuple[Any, ...]) -> ModelChange:
    """ValueError for a row no change can be made of (another program's, a garbled page)."""
    id_, name, project, old_v, new_v, old_it, new_it, reason, detail, source, at, device = row
    t = salvage.text
    return ModelChange(id=salvage.key(id_), name=salvage.key(name), project=None if project is None else t(project),
                       old_version=_version(old_v), new_version=_version(new_v), old_iteration=t(old_it),
                       new_iteration=t(new_it), reason=t(reason), detail=t(detail), source=t(source),
                       at=salvage.instant(at), device=t(device))


def _missing(exc: sqlite3.OperationalError) -> bool:
    return str(exc).startswith("no such table")


class ModelChangeRows(StoreCore):
    def record_model_change(self, change: ModelChange) -> str:
        """Write the change and its outbox row in one transaction; its id. StoreError
        (DiskFullError for a full disk) if the store cannot take it: nothing is half-written."""
        change = replace(change, id=change.id or new_id(change.at))
        with self._transaction("recording a model change") as db:
            db.execute(f"INSERT INTO model_changes({COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", change.values())
            self._append_outbox(db, KIND, change.id, change.to_json())
        self._wrote()
        return change.id

    def model_changes(self, limit: int = 100, since: float | None = None) -> list[ModelChange]:
        """The newest `limit` changes (at or after `since`), newest first; [] for a store
        that predates them (read-only, or not yet migrated). A row no change can be made of
        is left out and logged."""
        sql = f"SELECT {COLUMNS} FROM model_changes"
        args: tuple[Any, ...] = ()
        if since is not None:
            sql, args = sql + " WHERE at >= ?", (since,)
        try:
            rows = self._read_all(sql + f" ORDER BY {NEWEST_FIRST} LIMIT ?", (*args, max(0, limit)))
        except sqlite3.OperationalError as exc:
            if _missing(exc):
                return []
            raise
        changes = []
        for row in rows:
            try:
                changes.append(row_to_change(row))
            except (ValueError, TypeError) as exc:
                log.warning("event store: a model_changes row is left out: %s", exc)
        return changes

    def trim_model_changes(self, keep: int = MAX_ROWS) -> int:
        """Delete all but the newest `keep` changes (their outbox rows stay until forwarded
        or expired); how many went."""
        try:
            stored = self._scalar("SELECT COUNT(*) FROM model_changes")
        except sqlite3.OperationalError as exc:
            if _missing(exc):  # a store the full disk kept at schema 1: nothing to trim
                return 0
            raise
        if stored <= keep:  # the usual case: no write at all
            return 0
        with self._transaction("trimming model changes") as db:
            return int(db.execute("DELETE FROM model_changes WHERE rowid NOT IN (SELECT rowid FROM "
                                  f"model_changes ORDER BY {NEWEST_FIRST} LIMIT ?)", (max(0, keep),)).rowcount)
