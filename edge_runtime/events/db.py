"""The event store's SQLite core: opening (and recovering after a crash), the one writer
connection behind its lock, readers of their own, transactions that turn a full disk into
DiskFullError, and compaction. The other parts of the store build on it (store.py).
"""

from __future__ import annotations

import contextlib
import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any, NoReturn, TypeVar

from ..errors import DiskFullError, StoreError
from .records import (
    DB_NAME,
    EVENT_COLUMNS,
    MEDIA_DIR,
    SCHEMA,
    SCHEMA_VERSION,
    WAL_PAGES,
    Budget,
    StoreStats,
    events_of,
    is_disk_full,
    log,
)

T = TypeVar("T", bound="StoreCore")


class StoreCore:
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

    @classmethod
    def open(cls: type[T], data_dir: Path, budget: Budget | None = None) -> T:
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
            if version != SCHEMA_VERSION:  # a current store opens without writing (a full disk)
                cls._migrate(db, version, data_dir)
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

    @staticmethod
    def _migrate(db: sqlite3.Connection, version: int, data_dir: Path) -> None:
        """Create what is missing (every CREATE is IF NOT EXISTS, so an older store gains
        the new tables and keeps its rows), in one transaction. An older store on a full
        disk opens as it is: what it has works, the new tables wait for the next open."""
        try:
            db.execute("BEGIN IMMEDIATE")
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    db.execute(statement)
            db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")
            db.execute("COMMIT")
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            if version == 0 or not is_disk_full(exc):
                raise
            log.warning("event store %s: no space to add the tables of schema %d; it opens at schema %d, "
                        "and model changes are not recorded until it can be written", data_dir, SCHEMA_VERSION,
                        version)

    @classmethod
    def open_readonly(cls: type[T], data_dir: Path) -> T:
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
            for event in events_of(rows):
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

    def compact(self) -> None:
        """Give freed database pages back to the disk."""
        with self._lock, contextlib.suppress(sqlite3.Error):
            self._db.executescript("PRAGMA incremental_vacuum;")  # execute() would free one page only
            self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")

    def integrity_check(self) -> str:
        return str(self._read_all("PRAGMA integrity_check")[0][0])

    @staticmethod
    def _append_outbox(db: sqlite3.Connection, kind: str, event_id: str, payload: dict[str, Any]) -> int:
        cur = db.execute("INSERT INTO outbox(kind, event_id, created, payload) VALUES (?,?,?,?)",
                         (kind, event_id, time.time(), json.dumps(payload, separators=(",", ":"))))
        return int(cur.lastrowid or 0)
