"""Where a photo was taken (EXIF GPS, DJI XMP) and where a pixel of it lies on the ground.

    geo = read_geo(jpeg_bytes)             # ImageGeo, or None without GPS
    lat, lon, how = locate(geo, x, y, width, height)   # how: "ground" or "image"

The ground projection is for a nadir camera (gimbal pitch within NADIR_TOLERANCE of
-90 degrees) over flat ground at the take-off height:

    GSD = altitude x 36 / (f35 x image width)          metres per pixel
    u = (x - W/2) x GSD to the right,  v = (H/2 - y) x GSD forward
    east = u cos t + v sin t,  north = -u sin t + v cos t   (t: yaw, clockwise from north)

and the metres are added to the image position on the WGS84 ellipsoid with the local
radii of curvature (a flat-earth step, exact to millimetres over a photo's footprint).

Every value read is checked (checks.py): one that is not a finite number within its
bounds is dropped and named in `ImageGeo.problems`, and a projection that leaves the
globe or lands over MAX_GROUND_OFFSET away gives the image position instead.
"""

from __future__ import annotations

import datetime as dt
import io
import math
import re
from dataclasses import dataclass
from typing import Any

from .checks import (
    ALTITUDE,
    FOCAL_LENGTH_35MM,
    MAX_GROUND_OFFSET,
    PITCH,
    ROLL,
    YAW,
    Bound,
    moment_problem,
    number,
    position_problem,
    wrap_longitude,
)

NADIR_TOLERANCE = 10.0  # degrees from straight down
WGS84_A = 6378137.0
WGS84_E2 = 6.69437999014e-3
GPS_IFD, EXIF_IFD = 0x8825, 0x8769
DATETIME_ORIGINAL, FOCAL_35MM = 0x9003, 0xA405
XMP_START, XMP_END = b"<x:xmpmeta", b"</x:xmpmeta>"
XMP_SEARCH = 1 << 20  # bytes from the start: headers only, never a 20 MB image body


@dataclass(frozen=True)
class ImageGeo:
    lat: float
    lon: float
    alt: float | None = None  # metres above sea level (EXIF)
    time: str | None = None  # ISO 8601
    relative_alt: float | None = None  # metres above take-off (DJI XMP)
    pitch: float | None = None  # gimbal pitch, -90 is straight down
    yaw: float | None = None  # degrees clockwise from north
    f35: float | None = None  # focal length in 35 mm film terms
    roll: float | None = None  # gimbal roll (read and checked; the nadir projection ignores it)
    problems: tuple[str, ...] = ()  # values found but dropped: not finite, or out of range

    @property
    def projectable(self) -> bool:
        values = (self.relative_alt, self.pitch, self.yaw, self.f35)
        if any(v is None or not math.isfinite(v) for v in values):
            return False
        assert self.relative_alt is not None and self.pitch is not None and self.f35 is not None
        return self.relative_alt > 0 and abs(self.pitch + 90.0) <= NADIR_TOLERANCE and self.f35 > 0


def offset(lat: float, lon: float, east: float, north: float) -> tuple[float, float]:
    """(lat, lon) moved by metres east and north, using the ellipsoid's radii at `lat`."""
    phi = math.radians(lat)
    s = 1.0 - WGS84_E2 * math.sin(phi) ** 2
    meridian = WGS84_A * (1.0 - WGS84_E2) / s**1.5
    normal = WGS84_A / math.sqrt(s)
    return lat + math.degrees(north / meridian), lon + math.degrees(east / (normal * math.cos(phi)))


def ground_offset(geo: ImageGeo, x: float, y: float, width: int, height: int) -> tuple[float, float]:
    """Metres (east, north) from the image position to pixel (x, y), by the formulas above."""
    assert geo.relative_alt is not None and geo.f35 is not None and geo.yaw is not None
    gsd = geo.relative_alt * 36.0 / (geo.f35 * width)
    u, v = (x - width / 2) * gsd, (height / 2 - y) * gsd
    t = math.radians(geo.yaw)
    return u * math.cos(t) + v * math.sin(t), -u * math.sin(t) + v * math.cos(t)


def locate(geo: ImageGeo, x: float, y: float, width: int, height: int) -> tuple[float, float, str]:
    """(lat, lon, method) of pixel (x, y): projected to the ground when the image allows it
    and the result is a position on the globe within MAX_GROUND_OFFSET of the image's;
    the image position otherwise (`geo.projectable` and "image" together: it failed)."""
    if not geo.projectable:
        return geo.lat, geo.lon, "image"
    east, north = ground_offset(geo, x, y, width, height)
    if not math.hypot(east, north) <= MAX_GROUND_OFFSET:  # NaN fails too
        return geo.lat, geo.lon, "image"
    lat, lon = offset(geo.lat, geo.lon, east, north)
    if not math.isfinite(lon) or position_problem(lat, lon := wrap_longitude(lon)):
        return geo.lat, geo.lon, "image"
    return lat, lon, "ground"


def _ratio(value: Any) -> float:  # PIL gives NaN for a zero denominator
    if isinstance(value, tuple) and len(value) == 2:  # (numerator, denominator)
        return float(value[0]) / float(value[1]) if value[1] else 0.0
    return float(value)


def _dms(value: Any, ref: Any, negative: str) -> float:
    d, m, s = (_ratio(v) for v in value)
    degrees = d + m / 60.0 + s / 3600.0
    ref = ref.decode() if isinstance(ref, bytes) else str(ref or "")
    return -degrees if ref.strip().upper().startswith(negative) else degrees


def _exif_time(gps: dict[int, Any], exif: dict[int, Any]) -> dt.datetime | None:
    """GPS date and time (UTC), else DateTimeOriginal (camera local time: no zone is stated)."""
    date, stamp = gps.get(29), gps.get(7)
    if date and stamp:
        try:
            h, m, s = (_ratio(v) for v in stamp)
            day = dt.datetime.strptime(str(date).strip("\x00"), "%Y:%m:%d")
            return day.replace(tzinfo=dt.timezone.utc) + dt.timedelta(hours=h, minutes=m, seconds=s)
        except (ValueError, TypeError, OverflowError, ZeroDivisionError):  # NaN or huge stamps
            pass
    original = exif.get(DATETIME_ORIGINAL)
    if original:
        try:
            return dt.datetime.strptime(str(original).strip("\x00"), "%Y:%m:%d %H:%M:%S")
        except ValueError:
            return None
    return None


def _xmp_text(packet: str, name: str) -> str | None:
    """`drone-dji:NAME="+1.5"` (attribute) or `<drone-dji:NAME>1.5</...>` (element)."""
    match = re.search(rf'drone-dji:{name}\s*=\s*"([^"]*)"', packet) or \
        re.search(rf"<drone-dji:{name}>([^<]*)<", packet)
    return match[1] if match else None


def _xmp_value(packet: str, name: str) -> float | None:
    text = _xmp_text(packet, name)
    try:
        return None if text is None else float(text)
    except ValueError:
        return None


def read_xmp(data: bytes) -> str:
    """The XMP packet of a JPEG (it sits in an APP1 segment near the start), or ''."""
    head = data[:XMP_SEARCH]
    start = head.find(XMP_START)
    end = head.find(XMP_END, start)
    return head[start:end + len(XMP_END)].decode("utf-8", "replace") if start >= 0 and end > start else ""


NO_GPS = "no GPS position in its EXIF"


def read_geo(data: bytes) -> ImageGeo | None:
    """The position and camera attitude in an image file's metadata; None without GPS."""
    geo = geotags(data)
    return geo if isinstance(geo, ImageGeo) else None


def geotags(data: bytes) -> ImageGeo | str:
    """The position and camera attitude in an image file's metadata, or why it has no position.

    A value other than the position that is not a finite number within its bounds is
    dropped and named in `problems`; the photo then keeps its image position.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:  # reads the headers only, not the pixels
            exif = image.getexif()
            gps = dict(exif.get_ifd(GPS_IFD))
            camera = dict(exif.get_ifd(EXIF_IFD))
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError):
        return NO_GPS
    if 2 not in gps or 4 not in gps:
        return NO_GPS
    try:
        lat = _dms(gps[2], gps.get(1), "S")
        lon = _dms(gps[4], gps.get(3), "W")
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        return NO_GPS
    if lat == 0 and lon == 0:
        return NO_GPS  # no fix: cameras write zeros
    if why := position_problem(lat, lon):
        return f"GPS {why}"
    problems: list[str] = []

    def checked(value: Any, bound: Bound, name: str) -> float | None:
        if value is None:
            return None
        try:
            as_float = float(value)
        except (TypeError, ValueError, OverflowError, ZeroDivisionError):
            problems.append(f"{name} {str(value)[:40]!r} is not a number")
            return None
        if why := bound.check(as_float, name):
            problems.append(why)
            return None
        return as_float

    def xmp(name: str, bound: Bound) -> float | None:
        value, why = number(_xmp_text(packet, name), bound, name)
        if why:
            problems.append(why)
        return value

    try:
        raw_alt: Any = _ratio(gps[6]) * (-1 if gps.get(5) in (1, b"\x01") else 1) if 6 in gps else None
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raw_alt = "unreadable"
    alt = checked(raw_alt, ALTITUDE, "GPS altitude")
    f35 = camera.get(FOCAL_35MM)
    packet = read_xmp(data)
    gimbal_yaw = _xmp_text(packet, "GimbalYawDegree")
    # A gimbal yaw that is there but bad is not replaced by the aircraft's: the two can differ.
    yaw = xmp("GimbalYawDegree", YAW) if gimbal_yaw and gimbal_yaw.strip() else xmp("FlightYawDegree", YAW)
    moment = _exif_time(gps, camera)
    if moment is not None and (why := moment_problem(moment)):
        problems.append(why)
        moment = None
    return ImageGeo(
        lat=lat, lon=lon, alt=alt, time=moment.isoformat().replace("+00:00", "Z") if moment else None,
        relative_alt=xmp("RelativeAltitude", ALTITUDE),
        pitch=xmp("GimbalPitchDegree", PITCH),
        yaw=yaw,
        f35=checked(f35, FOCAL_LENGTH_35MM, "FocalLengthIn35mmFilm") if f35 else None,  # 0: unknown
        roll=xmp("GimbalRollDegree", ROLL),
        problems=tuple(problems),
    )
