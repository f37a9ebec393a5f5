"""Reading what a damaged store still holds, a range of rowids at a time.

    damage = Damage()
    rows = RowReader(db, "events", EVENT_COLUMNS, damage).rows("start >= ?", (since,))
    damage.summary()      # "12 events rows could not be read", or "" when nothing was lost

Python's sqlite3 has no `.recover`. A damaged page makes the queries that touch it fail, and
only those: so a table is read in ranges of rowids, and a range that fails is halved until
the rows beside the damage are read and the rows on it are counted. The rowids come from one
of the table's indexes (a scan of an index never touches the table's pages), which also says
exactly how many rows were lost; when every index is damaged too, the rowids between the
lowest and the highest are tried, and each one that cannot be read counts as lost (there, a
gap cannot be told from a row, so the count is an upper bound). The reads themselves never
use an index (NOT INDEXED): a damaged index costs nothing.

The value checks below turn a column into what a record needs, or raise ValueError: a row
another program wrote, or one a damaged page garbled, is left out and counted instead of
ending the read.
"""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from ..errors import StoreError, first_line
from .times import LATEST_S

CHUNK = 256  # rowids per read
MAX_FAILED_READS = 100_000  # then the rest of a damaged stretch is counted lost without trying it
MAX_RANGES = 1 << 16  # without an index, the rowid span is read in at most this many ranges
EARLIEST_S = -62135596800.0  # 0001-01-01T00:00:00Z, the first second a datetime can show
# errors that say nothing about the file's pages (extended codes too: SQLITE_BUSY_RECOVERY, ...)
NOT_DAMAGE = ("SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_INTERRUPT", "SQLITE_NOMEM", "SQLITE_CANTOPEN",
              "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH")


@dataclass
class Damage:
    """What a read could not use, by table, for one line."""

    lost: dict[str, int] = field(default_factory=dict)  # rows there that could not be read
    bounded: set[str] = field(default_factory=set)  # tables whose lost count is an upper bound
    bad: dict[str, int] = field(default_factory=dict)  # rows read whose values make no record
    unreadable: list[str] = field(default_factory=list)  # "samples: no such table: samples"

    def __bool__(self) -> bool:
        return bool(self.lost or self.bad or self.unreadable)

    def add(self, counts: dict[str, int], table: str, n: int = 1) -> None:
        if n:
            counts[table] = counts.get(table, 0) + n

    def summary(self) -> str:
        """"12 events rows could not be read; 1 samples row holds values no record can have",
        or "" when nothing was lost."""
        parts = [f"{'up to ' if t in self.bounded else ''}{_rows(n, t)} could not be read"
                 for t, n in self.lost.items()]
        parts += [f"{_rows(n, t)} {'holds' if n == 1 else 'hold'} values no record can have"
                  for t, n in self.bad.items()]
        return "; ".join(parts + self.unreadable)


def _rows(n: int, table: str) -> str:
    return f"{n} {table} row{'s' if n != 1 else ''}"


class RowReader:
    """Every readable row of one table, damaged pages skipped and counted in `damage`."""

    def __init__(self, db: sqlite3.Connection, table: str, columns: str, damage: Damage) -> None:
        self.db, self.table, self.columns, self.damage = db, table, columns, damage

    def rows(self, where: str = "", args: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        """The rows that match `where`, in rowid order; [] (noted) when the table is gone.
        `db` is a connection for reading: writable_schema is turned on for it, as without it
        SQLite refuses a file shorter than its header says (truncated) as a whole."""
        try:
            self.db.execute("PRAGMA writable_schema=ON")
            self.db.execute(f"SELECT {self.columns} FROM {self.table} LIMIT 0")  # the schema only: no pages read
            keys, size, exact = self._rowids()
        except sqlite3.DatabaseError as exc:
            self._raise_unless_damage(exc)
            self.damage.unreadable.append(f"the {self.table} table cannot be read ({first_line(exc)})")
            return []
        if not exact:
            self.damage.bounded.add(self.table)
        # one row by `=`: a range steps past its last row, into the next page, which may be the damaged one
        span = f"SELECT {self.columns} FROM {self.table} NOT INDEXED WHERE rowid BETWEEN ? AND ?"
        one = f"SELECT {self.columns} FROM {self.table} NOT INDEXED WHERE rowid = ?"
        if where:
            span, one = (f"{sql} AND ({where})" for sql in (span, one))
        step = CHUNK if exact else max(CHUNK, -(-size // MAX_RANGES))
        todo = [(lo, min(lo + step, size)) for lo in reversed(range(0, size, step))]
        out: list[tuple[Any, ...]] = []
        failed = lost = 0
        while todo:
            lo, hi = todo.pop()  # positions in `keys`, hi excluded
            try:
                if hi - lo == 1:
                    out += self.db.execute(one, (keys[lo], *args)).fetchall()
                else:
                    out += self.db.execute(span, (keys[lo], keys[hi - 1], *args)).fetchall()
                continue
            except sqlite3.DatabaseError as exc:
                self._raise_unless_damage(exc)
            failed += 1
            if hi - lo == 1 or failed > MAX_FAILED_READS:
                lost += hi - lo
            else:
                mid = (lo + hi) // 2
                todo += [(mid, hi), (lo, mid)]
        self.damage.add(self.damage.lost, self.table, lost)
        return out

    def _rowids(self) -> tuple[Sequence[int], int, bool]:
        """The table's rowids, sorted, from the first index that reads whole (exact); else
        every rowid from the lowest to the highest (an upper bound). With their number, which
        for a span can pass what len() takes."""
        for _, name, _, _, partial in self.db.execute(f"PRAGMA index_list({self.table})").fetchall():
            if partial:
                continue
            quoted = name.replace('"', '""')
            try:
                rows = self.db.execute(f'SELECT rowid FROM {self.table} INDEXED BY "{quoted}"').fetchall()
            except sqlite3.DatabaseError as exc:
                self._raise_unless_damage(exc)
                continue
            return sorted(r[0] for r in rows), len(rows), True
        # one query each: together they scan the whole table, alone each reads one edge of it
        low, high = (self.db.execute(f"SELECT {edge}(rowid) FROM {self.table} NOT INDEXED").fetchone()[0]
                     for edge in ("MIN", "MAX"))
        if low is None:
            return [], 0, False
        return range(low, high + 1), high - low + 1, False

    def _raise_unless_damage(self, exc: sqlite3.DatabaseError) -> None:
        """A busy, interrupted or refused read is not damage: it says so instead of losing rows."""
        if str(getattr(exc, "sqlite_errorname", "")).startswith(NOT_DAMAGE):
            raise StoreError(f"reading {self.table}: {first_line(exc)}") from None


# ---- values: what a column must hold, or ValueError ------------------------------------------------


def text(value: Any) -> str:
    """Any value as text (bytes decoded, NULL empty): names and labels are shown, not trusted."""
    if value is None:
        return ""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


def key(value: Any) -> str:
    """An id: text, not empty."""
    if not isinstance(value, (str, bytes)) or not text(value):
        raise ValueError(f"not an id: {value!r:.40}")
    return text(value)


def number(value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"not a number: {value!r:.40}")
    return float(value)


def instant(value: Any) -> float:
    """Seconds since the epoch that a calendar can show."""
    seconds = number(value)
    if not EARLIEST_S <= seconds <= LATEST_S:
        raise ValueError(f"not a time: {value!r:.40}")
    return seconds


def count(value: Any) -> int:
    if number(value) != int(value) or value < 0:
        raise ValueError(f"not a count: {value!r:.40}")
    return int(value)


def name(value: Any) -> str | None:
    """A media name, or None for anything else (the record is kept without that file)."""
    return value if isinstance(value, str) and value else None


def json_object(value: Any) -> dict[str, Any] | None:
    """A JSON object, or None when the text is missing or is not one."""
    try:
        parsed = json.loads(value) if isinstance(value, (str, bytes)) and value else None
    except ValueError:  # JSONDecodeError, and UnicodeDecodeError for bytes
        return None
    return parsed if isinstance(parsed, dict) else None


def box(value: Any) -> dict[str, float] | None:
    """A bounding box {"left": ..., ...} of numbers, or None (the event is kept without it)."""
    parsed = json_object(value)
    if parsed is None or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in parsed.values()):
        return None
    return parsed
