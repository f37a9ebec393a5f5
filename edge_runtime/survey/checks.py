"""What a plausible position, attitude and time is: every telemetry value passes here.

    why = LATITUDE.check(999.0)      # "latitude 999 is out of range (-90 to 90)", or None
    lon = wrap_longitude(180.5)      # -179.5: a projection may cross the antimeridian

A value that fails is never written: the photo or track point that carried it keeps the
position it has without it (the image position, or none), and the reason is reported.
Sensor sizes are not read: FocalLengthIn35mmFilm already folds the sensor into the focal
length, so it is the one optical value the projection takes.
"""

from __future__ import annotations

import datetime as dt
import math
from dataclasses import dataclass


@dataclass(frozen=True)
class Bound:
    name: str
    low: float
    high: float
    unit: str = ""

    def check(self, value: float, name: str | None = None) -> str | None:
        """None when `value` is a finite number within the bounds, else why not (one phrase)."""
        label = name or self.name
        if not math.isfinite(value):
            return f"{label} {value} is not a finite number"
        if not self.low <= value <= self.high:
            return f"{label} {value:g} is out of range ({self.low:g} to {self.high:g}{self.unit})"
        return None


LATITUDE = Bound("latitude", -90.0, 90.0)
LONGITUDE = Bound("longitude", -180.0, 180.0)
ALTITUDE = Bound("altitude", -1000.0, 10000.0, " m")  # the Dead Sea to well above any drone's ceiling
PITCH = Bound("pitch", -180.0, 180.0)
YAW = Bound("yaw", -360.0, 360.0)  # DJI writes -180 to 180; some tools 0 to 360
ROLL = Bound("roll", -180.0, 180.0)
FOCAL_LENGTH_35MM = Bound("focal length in 35 mm film", 1.0, 5000.0, " mm")
SECONDS = Bound("time", -1e10, 1e10, " s")  # about 300 years either way
MAX_GROUND_OFFSET = 100_000.0  # metres from the image centre: a projection beyond this is an error


# Wall-clock times a photo or track may carry: from the GPS epoch to well past any flight.
EARLIEST = dt.datetime(1980, 1, 6, tzinfo=dt.timezone.utc)
LATEST = dt.datetime(2200, 1, 1, tzinfo=dt.timezone.utc)


def moment_problem(when: dt.datetime) -> str | None:
    """Why a wall-clock time is not one a flight was recorded at, or None (naive: taken as UTC)."""
    zoned = when if when.tzinfo else when.replace(tzinfo=dt.timezone.utc)
    if not EARLIEST <= zoned <= LATEST:
        return f"time {when.isoformat()} is out of range ({EARLIEST.year} to {LATEST.year})"
    return None


def position_problem(lat: float, lon: float) -> str | None:
    """Why (lat, lon) is not a position on the Earth, or None when it is one."""
    return LATITUDE.check(lat) or LONGITUDE.check(lon)


def wrap_longitude(lon: float) -> float:
    """`lon` brought into -180..180 (a finite value only)."""
    return lon if -180.0 <= lon <= 180.0 else (lon + 180.0) % 360.0 - 180.0


def number(text: str | None, bound: Bound, name: str | None = None) -> tuple[float | None, str | None]:
    """(value, None) for text that holds a number within `bound`, (None, why) otherwise;
    (None, None) for no text at all (a value that is absent is not a problem)."""
    if text is None or not text.strip():
        return None, None
    try:
        value = float(text)
    except ValueError:
        return None, f"{name or bound.name} {text.strip()[:40]!r} is not a number"
    why = bound.check(value, name)
    return (None, why) if why else (value, None)
