"""What a pull has written, kept in SQLite so that memory never holds a list of the project.

    state = PullState.open(out / ".pull" / "state.db")
    old = state.get("images", image_id)   # None, or the Record of a file written before
    state.put("images", record)           # the file is on disk before its row is written
    state.commit()                        # once a page
    for record in state.records("images", "tagged"):   # this run's, in the order seen
        ...

One row per image (`source` is "images" or "predictions": the two are listed apart and
their ids are not one space), with its file, SHA-256, size, tags and regions. Each run
gets a number; a row is stamped with the run that last saw it, so "seen in this run" is a
column, not a set in memory, and the layout files are streamed from the rows this run
saw. A run killed half-way loses at most its last page's rows: those files are fetched
again and their hashes written then.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS images (
    source TEXT NOT NULL, id TEXT NOT NULL, file TEXT NOT NULL, sha256 TEXT NOT NULL,
    width INTEGER NOT NULL, height INTEGER NOT NULL, "set" TEXT NOT NULL, body TEXT NOT NULL,
    run INTEGER NOT NULL, seq INTEGER NOT NULL, PRIMARY KEY (source, id));
CREATE INDEX IF NOT EXISTS by_run ON images (source, run, "set", seq);
"""
COLUMNS = 'file, sha256, width, height, "set", body, id'


@dataclass
class Record:
    """One image written."""

    id: str
    file: str  # relative to the dataset root
    sha256: str
    width: int
    height: int
    set: str  # "tagged", "negative", "untagged" or "predictions"
    tags: list[str] = field(default_factory=list)
    regions: list[list[Any]] = field(default_factory=list)
    metadata: dict[str, str] = field(default_factory=dict)
    extra: dict[str, Any] = field(default_factory=dict)  # a stored prediction: created, iteration, predictions

    def body(self) -> str:
        return json.dumps({"tags": self.tags, "regions": self.regions, "metadata": self.metadata,
                           "extra": self.extra}, allow_nan=False)

    @classmethod
    def of_row(cls, row: tuple[Any, ...]) -> Record:
        file, sha256, width, height, which, body, image_id = row
        parts = json.loads(body)
        return cls(image_id, file, sha256, width, height, which, parts["tags"], parts["regions"], parts["metadata"],
                   parts["extra"])


class PullState:
    """The rows of one dataset's pulls; used from one thread."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db
        self.run = int(db.execute("SELECT COALESCE(MAX(run), 0) + 1 FROM images").fetchone()[0])
        self.seq = 0

    @classmethod
    def open(cls, path: Path) -> PullState:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path)
        db.execute("PRAGMA journal_mode=WAL")
        db.executescript(SCHEMA)
        return cls(db)

    def get(self, source: str, image_id: str) -> tuple[Record, bool] | None:
        """The image's record and whether this run has seen it already."""
        row = self.db.execute(f"SELECT {COLUMNS}, run FROM images WHERE source = ? AND id = ?",
                              (source, image_id)).fetchone()
        return None if row is None else (Record.of_row(row[:-1]), row[-1] == self.run)

    def put(self, source: str, record: Record) -> None:
        """Write (or rewrite) a record, stamped as seen by this run."""
        self.seq += 1
        self.db.execute(
            'INSERT OR REPLACE INTO images (source, id, file, sha256, width, height, "set", body, run, seq) '
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (source, record.id, record.file, record.sha256, record.width, record.height, record.set, record.body(),
             self.run, self.seq))

    def commit(self) -> None:
        self.db.commit()

    def records(self, source: str, which: str) -> Iterator[Record]:
        """This run's records of one set, in the order they were seen; streamed from the file."""
        cursor = self.db.execute(f'SELECT {COLUMNS} FROM images WHERE source = ? AND run = ? AND "set" = ? '
                                 "ORDER BY seq", (source, self.run, which))
        for row in cursor:
            yield Record.of_row(row)

    def close(self) -> None:
        self.db.commit()
        self.db.close()
