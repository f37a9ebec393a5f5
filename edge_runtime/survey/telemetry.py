"""Flight tracks for videos: DJI SRT (both styles), GPX and CSV, interpolated per frame.

    track = read_track(Path("DJI_0001.SRT"))
    lat, lon, alt, when = track.at(12.5)        # seconds from the start of the video
    track.problems                              # ("3 of 900 track points skipped (first at ...)",)

Times in an SRT are the video's own. A GPX track, and a CSV whose times are dates, are
taken to start with the video (their first point is second 0); a CSV whose times are
plain numbers gives seconds from the start of the video.

Files are read as a stream (a GPX file through expat, 1 MB at a time) into float64
columns, 32 bytes a point: a 1,000,000-point GPX track costs tens of megabytes, not one
Python object per value. A point whose position, altitude or time is missing, not a
number or out of range (checks.py) is skipped and counted. GPX entity declarations are
refused outright, so no document can expand one (billion laughs) or name a file to read.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import math
import re
import xml.parsers.expat as expat
from array import array
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TextIO

import numpy as np

from ..errors import ConfigError
from .checks import ALTITUDE, LATITUDE, LONGITUDE, SECONDS, moment_problem, number

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SRT_TIME = re.compile(r"(?<!\d)(\d{1,6}):(\d{1,2}):(\d{1,2})[,.](\d{1,9})\s*-->")  # bounded: int() refuses 4300 digits
_DATE = re.compile(r"(\d{4})[-.](\d{2})[-.](\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)")
_BRACKET = {  # newer DJI: [latitude: 47.1] [longitude: 8.1] [rel_alt: 50.0 abs_alt: 480.0]
    "lat": re.compile(rf"latitude\s*:\s*({_NUMBER})"),
    "lon": re.compile(rf"long?t?itude\s*:\s*({_NUMBER})"),  # some firmware writes "longtitude"
    "alt": re.compile(rf"rel_alt\s*:\s*({_NUMBER})"),
}
_GPS = re.compile(rf"GPS\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(?:,\s*({_NUMBER}))?\s*\)")  # older: lon, lat, alt
_BAROMETER = re.compile(rf"BAROMETER\s*:\s*({_NUMBER})")
CHUNK = 1 << 20  # bytes of GPX fed to expat at a time
MAX_BLOCK = 1 << 16  # characters of one SRT subtitle; the rest of a longer one is ignored
MAX_TEXT = 256  # characters kept of a GPX <time> or <ele>: longer is not a time or a height
UTC = dt.timezone.utc


@dataclass(frozen=True)
class Track:
    seconds: np.ndarray  # from the start of the video, increasing
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray  # NaN where unknown
    start: dt.datetime | None = None  # the wall-clock time of second 0, when the file says
    problems: tuple[str, ...] = ()  # what was skipped while reading, one line each (the file is not named)

    def at(self, t: float) -> tuple[float, float, float | None, str | None]:
        """(lat, lon, alt, ISO time) at `t` seconds, interpolated linearly (held at the ends)."""
        alt = float(np.interp(t, self.seconds, self.alt))
        try:
            when = (self.start + dt.timedelta(seconds=t)).isoformat() if self.start else None
        except (OverflowError, ValueError):  # a frame time past the calendar
            when = None
        return (float(np.interp(t, self.seconds, self.lat)), float(np.interp(t, self.seconds, self.lon)),
                None if math.isnan(alt) else alt, when)


class _Points:
    """Track points gathered as float64 columns, and a count of those skipped."""

    def __init__(self, source: Path) -> None:
        self.source = source
        self.t, self.lat, self.lon, self.alt = array("d"), array("d"), array("d"), array("d")
        self.skipped = 0
        self.first_skip = ""
        self.problems: list[str] = []

    def skip(self, where: str, why: str) -> None:
        self.skipped += 1
        if not self.first_skip:
            self.first_skip = f"{where}: {why}"

    def add(self, where: str, t: float, lat: str | None, lon: str | None, alt: str | None) -> bool:
        """One point from its texts (True), or a skip naming the first value that is wrong."""
        values = []
        for text, bound in ((lat, LATITUDE), (lon, LONGITUDE), (alt, ALTITUDE)):
            value, why = number(text, bound)
            if why or (value is None and bound is not ALTITUDE):
                self.skip(where, why or f"no {bound.name}")
                return False
            values.append(math.nan if value is None else value)
        if why := SECONDS.check(t):
            self.skip(where, why)
            return False
        self.t.append(t)
        self.lat.append(values[0])
        self.lon.append(values[1])
        self.alt.append(values[2])
        return True

    def track(self, start: dt.datetime | None, shift: float = 0.0) -> Track:
        """The points in time order, `shift` seconds subtracted; ConfigError if there are none."""
        problems = list(self.problems)
        if self.skipped:
            total = self.skipped + len(self.t)
            problems.append(f"{self.skipped} of {total} track points skipped (first at {self.first_skip})")
        if not self.t:
            detail = f" ({self.skipped} track points skipped; first at {self.first_skip})" if self.skipped else ""
            raise ConfigError(f"telemetry {self.source.name}: no positions found{detail}")
        seconds = np.frombuffer(self.t, np.float64) - shift
        lat, lon, alt = (np.frombuffer(c, np.float64) for c in (self.lat, self.lon, self.alt))
        if (np.diff(seconds) < 0).any():  # most files are in time order already: no copies then
            order = np.argsort(seconds, kind="stable")
            seconds, lat, lon, alt = seconds[order], lat[order], lon[order], alt[order]
        return Track(seconds, lat, lon, alt, start=start, problems=tuple(problems))


def _date(text: str) -> dt.datetime | None:
    match = _DATE.search(text)
    if not match:
        return None
    y, mo, d, h, mi = (int(v) for v in match.groups()[:5])
    sec = float(match[6])
    try:
        return dt.datetime(y, mo, d, h, mi, int(sec), round((sec % 1) * 1e6) % 1000000)
    except ValueError:  # month 13, second 61: not a date
        return None


def _blocks(lines: Iterable[str]) -> Iterator[str]:
    """SRT subtitles: the text between blank lines, each cut at MAX_BLOCK characters."""
    block: list[str] = []
    size = 0
    for line in lines:
        if not line.strip():
            if block:
                yield "".join(block)
            block, size = [], 0
        elif size < MAX_BLOCK:
            block.append(line)
            size += len(line)
    if block:
        yield "".join(block)


def _read_srt(lines: Iterable[str], source: Path) -> Track:
    points = _Points(source)
    start: dt.datetime | None = None
    dated = False  # the first point's date has been looked at
    for number_, block in enumerate(_blocks(lines), start=1):
        clock = _SRT_TIME.search(block)
        if not clock:
            continue
        h, m, s, ms = clock.groups()
        t = int(h) * 3600 + int(m) * 60 + int(s) + int(ms) / 10 ** len(ms)
        body = re.sub(r"<[^>]*>", " ", block[clock.end():])
        lat = _BRACKET["lat"].search(body)
        lon = _BRACKET["lon"].search(body)
        if lat and lon:
            alt = _BRACKET["alt"].search(body)
            texts = (lat[1], lon[1], alt[1] if alt else None)
        elif gps := _GPS.search(body):
            barometer = _BAROMETER.search(body)
            texts = (gps[2], gps[1], barometer[1] if barometer else gps[3])
        else:
            continue
        if float(texts[0]) == 0 and float(texts[1]) == 0:
            continue  # no GPS fix yet
        if points.add(f"subtitle {number_}", t, *texts) and not dated and \
                (when := _date(body.split("HOME", 1)[-1] if "GPS" in body else body)):
            dated = True
            if why := moment_problem(when):
                points.problems.append(f"subtitle {number_}: {why}; its frames have no time")
            else:
                start = when - dt.timedelta(seconds=t)
    return points.track(start)


def parse_srt(text: str, source: Path) -> Track:
    return _read_srt(io.StringIO(text), source)


def _iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def _epoch(when: dt.datetime) -> float:
    return (when if when.tzinfo else when.replace(tzinfo=UTC)).timestamp()


class _Gpx:
    """expat handlers for <trkpt lat lon><ele/><time/></trkpt>; nothing else is kept."""

    def __init__(self, source: Path) -> None:
        self.points = _Points(source)
        self.parser = expat.ParserCreate()
        self.parser.buffer_text = True
        self.parser.StartElementHandler = self.start
        self.parser.EndElementHandler = self.end
        self.parser.CharacterDataHandler = self.data
        self.parser.EntityDeclHandler = self.entity
        self.depth = 0
        self.point_depth = 0  # 0: not inside a track point
        self.attrs: dict[str, str] = {}
        self.line = 0
        self.field = ""
        self.text: list[str] = []
        self.size = 0
        self.children: dict[str, str] = {}
        self.first: dt.datetime | None = None  # the earliest time kept
        self.first_stamp = math.inf
        self.zoned = False

    def entity(self, name: str, *_: object) -> None:
        raise ConfigError(f"telemetry {self.points.source.name}: not valid GPX "
                          f"(entity declarations are not allowed: {name!r})")

    def start(self, name: str, attrs: dict[str, str]) -> None:
        self.depth += 1
        local = name.rpartition(":")[2]
        if not self.point_depth:
            if local == "trkpt":
                self.point_depth, self.attrs, self.children = self.depth, attrs, {}
                self.line = self.parser.CurrentLineNumber
        elif self.depth == self.point_depth + 1 and local in ("ele", "time"):
            self.field, self.text, self.size = local, [], 0

    def data(self, text: str) -> None:
        if self.field and self.size < MAX_TEXT:
            self.text.append(text)
            self.size += len(text)

    def end(self, name: str) -> None:
        if self.field and self.depth == self.point_depth + 1:
            self.children[self.field] = "".join(self.text)[:MAX_TEXT]
            self.field = ""
        elif self.point_depth and self.depth == self.point_depth:
            self.point_depth = 0
            self.point()
        self.depth -= 1

    def point(self) -> None:
        where = f"line {self.line}"
        text = self.children.get("time", "").strip()
        if not text:
            return self.points.skip(where, "no <time>")
        try:
            when = _iso(text)
        except ValueError:
            return self.points.skip(where, f"time {text[:40]!r} is not an ISO 8601 date")
        if why := moment_problem(when):
            return self.points.skip(where, why)
        stamp = _epoch(when)  # seconds since 1970 until all are read
        if self.points.add(where, stamp, self.attrs.get("lat"), self.attrs.get("lon"), self.children.get("ele")):
            self.zoned = self.zoned or when.tzinfo is not None
            if stamp < self.first_stamp:
                self.first, self.first_stamp = when, stamp

    def feed(self, chunks: Iterable[bytes | str]) -> Track:
        try:
            for chunk in chunks:
                self.parser.Parse(chunk, False)
            self.parser.Parse(b"", True)
        except expat.ExpatError as exc:
            raise ConfigError(f"telemetry {self.points.source.name}: not valid GPX ({exc})") from exc
        first = self.first
        if first is not None and self.zoned and first.tzinfo is None:  # GPX times are UTC; some tools leave out the Z
            first = first.replace(tzinfo=UTC)
        return self.points.track(first, shift=self.first_stamp if first else 0.0)


def parse_gpx(text: str, source: Path) -> Track:
    return _Gpx(source).feed([text])


def _csv_time(text: str) -> float | dt.datetime:
    """Plain seconds, or a date; ValueError naming the text otherwise."""
    try:
        return float(text)
    except ValueError:
        pass
    try:
        return _iso(text)
    except ValueError:
        raise ValueError(f"time {text[:40]!r} is neither seconds nor an ISO 8601 date") from None


def _read_csv(handle: TextIO, source: Path) -> Track:
    reader = csv.reader(handle)
    try:
        header = [c.strip().lower() for c in next(reader, [])]
        if not {"time", "lat", "lon"} <= set(header):
            raise ConfigError(f"telemetry {source.name}: expected a header time,lat,lon[,alt]")
        at = {name: header.index(name) for name in ("time", "lat", "lon", "alt") if name in header}
        points = _Points(source)
        kinds: set[str] = set()
        first: dt.datetime | None = None  # the earliest date kept
        first_stamp = math.inf
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            where = f"line {reader.line_num}"
            if len(row) <= max(at[n] for n in ("time", "lat", "lon")):
                points.skip(where, f"{len(row)} values, fewer than the header's")
                continue
            try:
                when = _csv_time(row[at["time"]])
            except ValueError as exc:
                points.skip(where, str(exc))
                continue
            if isinstance(when, dt.datetime):
                if why := moment_problem(when):
                    points.skip(where, why)
                    continue
                kind, stamp = ("zoned" if when.tzinfo else "naive"), _epoch(when)
            else:
                kind, stamp = "seconds", when
            alt = row[at["alt"]] if "alt" in at and len(row) > at["alt"] else None
            if not points.add(where, stamp, row[at["lat"]], row[at["lon"]], alt):
                continue
            kinds.add(kind)
            if "seconds" in kinds and len(kinds) > 1:
                raise ConfigError(f"telemetry {source.name}: times mix dates and plain seconds")
            if len(kinds) > 1:
                raise ConfigError(f"telemetry {source.name}: some times have a time zone and some do not")
            if isinstance(when, dt.datetime) and stamp < first_stamp:
                first, first_stamp = when, stamp
    except csv.Error as exc:
        raise ConfigError(f"telemetry {source.name}, line {reader.line_num}: {exc}") from exc
    return points.track(first, shift=first_stamp if first else 0.0)


def parse_csv(text: str, source: Path) -> Track:
    return _read_csv(io.StringIO(text, newline=""), source)


def _chunks(handle: io.BufferedReader) -> Iterator[bytes]:
    while chunk := handle.read(CHUNK):
        yield chunk


def read_track(path: Path) -> Track:
    """A track from a .srt, .gpx or .csv file; ConfigError naming the file otherwise."""
    suffix = path.suffix.lower()
    if suffix not in (".srt", ".gpx", ".csv"):
        raise ConfigError(f"telemetry {path.name}: expected a .srt, .gpx or .csv file")
    try:
        if path.exists() and not path.is_file():
            raise ConfigError(f"telemetry {path}: not a regular file")
        if suffix == ".gpx":
            with path.open("rb") as binary:
                return _Gpx(path).feed(_chunks(binary))
        with path.open(encoding="utf-8-sig", errors="replace", newline="") as handle:
            return _read_srt(handle, path) if suffix == ".srt" else _read_csv(handle, path)
    except OSError as exc:
        raise ConfigError(f"telemetry {path}: {exc.strerror or exc}") from exc


def beside(video: Path) -> Path | None:
    """The DJI SRT file next to a video (DJI_0001.MP4 -> DJI_0001.SRT), if there is one."""
    for suffix in (".SRT", ".srt"):
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
