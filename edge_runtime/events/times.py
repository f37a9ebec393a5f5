"""Times as users write them: ISO 8601, seconds since the epoch, or an age such as 30m."""

from __future__ import annotations

import datetime as dt
import math
import re
import time

AGE = re.compile(r"^(\d+(?:\.\d+)?)\s*([smhdw])$")
UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_time(text: str, now: float | None = None) -> float:
    """Seconds since the epoch from "2026-05-01T12:00:00Z", "2026-05-01", "1777636800" or an
    age before now ("90s", "30m", "12h", "7d", "2w"); ValueError (one line) otherwise."""
    text = text.strip()
    age = AGE.match(text)
    if age:
        return _checked(text, (time.time() if now is None else now) - float(age.group(1)) * UNIT_S[age.group(2)])
    try:
        return _checked(text, float(text))
    except ValueError as exc:
        if "out of range" in str(exc):
            raise
    try:
        when = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ValueError(f"not a time: {text!r} (use ISO 8601, seconds since the epoch, or an age like 30m)") \
            from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.timezone.utc)
    return when.timestamp()


LATEST_S = 253402300799.0  # 9999-12-31T23:59:59Z, the last second a datetime can show


def _checked(text: str, seconds: float) -> float:
    """nan, inf and times no calendar can show are refused like any other bad time."""
    if not (math.isfinite(seconds) and -LATEST_S <= seconds <= LATEST_S):
        raise ValueError(f"not a time: {text[:64]!r} is out of range (use ISO 8601, seconds since the epoch, "
                         "or an age like 30m)")
    return seconds
