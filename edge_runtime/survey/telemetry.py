"""Flight tracks for videos: DJI SRT (both styles), GPX and CSV, interpolated per frame.

    track = read_track(Path("DJI_0001.SRT"))
    lat, lon, alt, when = track.at(12.5)        # seconds from the start of the video

Times in an SRT are the video's own. A GPX track, and a CSV whose times are dates, are
taken to start with the video (their first point is second 0); a CSV whose times are
plain numbers gives seconds from the start of the video.
"""

from __future__ import annotations

import csv
import datetime as dt
import math
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import ConfigError

_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_SRT_TIME = re.compile(r"(\d+):(\d+):(\d+)[,.](\d+)\s*-->")
_DATE = re.compile(r"(\d{4})[-.](\d{2})[-.](\d{2})[ T](\d{2}):(\d{2}):(\d{2}(?:\.\d+)?)")
_BRACKET = {  # newer DJI: [latitude: 47.1] [longitude: 8.1] [rel_alt: 50.0 abs_alt: 480.0]
    "lat": re.compile(rf"latitude\s*:\s*({_NUMBER})"),
    "lon": re.compile(rf"long?t?itude\s*:\s*({_NUMBER})"),  # some firmware writes "longtitude"
    "alt": re.compile(rf"rel_alt\s*:\s*({_NUMBER})"),
}
_GPS = re.compile(rf"GPS\s*\(\s*({_NUMBER})\s*,\s*({_NUMBER})\s*(?:,\s*({_NUMBER}))?\s*\)")  # older: lon, lat, alt
_BAROMETER = re.compile(rf"BAROMETER\s*:\s*({_NUMBER})")


@dataclass(frozen=True)
class Track:
    seconds: np.ndarray  # from the start of the video, increasing
    lat: np.ndarray
    lon: np.ndarray
    alt: np.ndarray  # NaN where unknown
    start: dt.datetime | None = None  # the wall-clock time of second 0, when the file says

    def at(self, t: float) -> tuple[float, float, float | None, str | None]:
        """(lat, lon, alt, ISO time) at `t` seconds, interpolated linearly (held at the ends)."""
        alt = float(np.interp(t, self.seconds, self.alt))
        when = (self.start + dt.timedelta(seconds=t)).isoformat() if self.start else None
        return (float(np.interp(t, self.seconds, self.lat)), float(np.interp(t, self.seconds, self.lon)),
                None if math.isnan(alt) else alt, when)


def _track(points: list[tuple[float, float, float, float]], source: Path, start: dt.datetime | None) -> Track:
    if not points:
        raise ConfigError(f"telemetry {source.name}: no positions found")
    points.sort(key=lambda p: p[0])
    t, lat, lon, alt = (np.array(column, np.float64) for column in zip(*points, strict=True))
    return Track(t, lat, lon, alt, start)


def _date(text: str) -> dt.datetime | None:
    match = _DATE.search(text)
    if not match:
        return None
    y, mo, d, h, mi = (int(v) for v in match.groups()[:5])
    sec = float(match[6])
    return dt.datetime(y, mo, d, h, mi, int(sec), round((sec % 1) * 1e6) % 1000000)


def parse_srt(text: str, source: Path) -> Track:
    points: list[tuple[float, float, float, float]] = []
    start: dt.datetime | None = None
    for block in re.split(r"\n\s*\n", text.replace("\r\n", "\n")):
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
            point = (t, float(lat[1]), float(lon[1]), float(alt[1]) if alt else math.nan)
        elif gps := _GPS.search(body):
            barometer = _BAROMETER.search(body)
            alt_text = barometer[1] if barometer else gps[3]
            point = (t, float(gps[2]), float(gps[1]), float(alt_text) if alt_text else math.nan)
        else:
            continue
        if point[1] == 0 and point[2] == 0:
            continue  # no GPS fix yet
        points.append(point)
        if start is None and (when := _date(body.split("HOME", 1)[-1] if "GPS" in body else body)):
            start = when - dt.timedelta(seconds=t)
    return _track(points, source, start)


def _iso(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.strip().replace("Z", "+00:00"))


def parse_gpx(text: str, source: Path) -> Track:
    try:
        root = ET.fromstring(text)
    except ET.ParseError as exc:
        raise ConfigError(f"telemetry {source.name}: not valid GPX ({exc})") from exc
    raw: list[tuple[dt.datetime, float, float, float]] = []
    for point in root.iter():
        if not point.tag.endswith("trkpt"):
            continue
        children = {child.tag.rsplit("}", 1)[-1]: (child.text or "") for child in point}
        if "time" not in children:
            raise ConfigError(f"telemetry {source.name}: a track point has no <time>")
        ele = children.get("ele")
        raw.append((_iso(children["time"]), float(point.attrib["lat"]), float(point.attrib["lon"]),
                    float(ele) if ele else math.nan))
    if not raw:
        return _track([], source, None)
    first = min(p[0] for p in raw)
    return _track([((w - first).total_seconds(), a, o, e) for w, a, o, e in raw], source, first)


def _seconds(when: float | dt.datetime, first: dt.datetime | None) -> float:
    return (when - first).total_seconds() if isinstance(when, dt.datetime) and first else float(when)  # type: ignore[arg-type]


def parse_csv(text: str, source: Path) -> Track:
    rows = list(csv.DictReader(text.splitlines()))
    columns = set(rows[0]) if rows else set()
    if not {"time", "lat", "lon"} <= {c.strip().lower() for c in columns if c}:
        raise ConfigError(f"telemetry {source.name}: expected a header time,lat,lon[,alt]")
    raw = []
    for number, row in enumerate(rows, start=2):
        row = {k.strip().lower(): (v or "").strip() for k, v in row.items() if k}
        try:
            when: float | dt.datetime = float(row["time"]) if re.fullmatch(_NUMBER, row["time"]) \
                else _iso(row["time"])
            raw.append((when, float(row["lat"]), float(row["lon"]), float(row["alt"]) if row.get("alt") else math.nan))
        except ValueError as exc:
            raise ConfigError(f"telemetry {source.name}, line {number}: {exc}") from exc
    stamps = [r[0] for r in raw if isinstance(r[0], dt.datetime)]
    if stamps and len(stamps) != len(raw):
        raise ConfigError(f"telemetry {source.name}: times mix dates and plain seconds")
    try:
        first = min(stamps) if stamps else None
    except TypeError as exc:  # naive and zoned times cannot be compared
        raise ConfigError(f"telemetry {source.name}: some times have a time zone and some do not") from exc
    points = [(_seconds(w, first), a, o, e) for w, a, o, e in raw]
    return _track(points, source, first)


def read_track(path: Path) -> Track:
    """A track from a .srt, .gpx or .csv file; ConfigError naming the file otherwise."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise ConfigError(f"telemetry {path}: {exc.strerror or exc}") from exc
    parsers = {".srt": parse_srt, ".gpx": parse_gpx, ".csv": parse_csv}
    parser = parsers.get(path.suffix.lower())
    if parser is None:
        raise ConfigError(f"telemetry {path.name}: expected a .srt, .gpx or .csv file")
    return parser(text, path)


def beside(video: Path) -> Path | None:
    """The DJI SRT file next to a video (DJI_0001.MP4 -> DJI_0001.SRT), if there is one."""
    for suffix in (".SRT", ".srt"):
        candidate = video.with_suffix(suffix)
        if candidate.is_file():
            return candidate
    return None
