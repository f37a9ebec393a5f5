"""Logging for every command: one handler on the root logger, installed once.

    configure(logging.INFO)

Three guards sit on that handler, so they cover every logger, uvicorn's and asyncio's too:

- `SafeFormatter` escapes control characters in each message (a request path with `%0a`
  cannot forge a log line) and marks each line of a traceback with "| ", so only a record's
  first line starts at the margin.
- `ExpectedFailures` keeps failures a loaded server meets by design (accept() out of file
  descriptors) to one line, without a traceback.
- `RepeatLimiter` lets through at most `burst` warnings or errors of one kind (logger and
  message template) per `window_s`, then one line saying how many it held back. A flood of
  identical failures, such as `accept()` running out of file descriptors, stays a few lines.
"""

from __future__ import annotations

import logging
import re
import sys
import threading
import time
from collections.abc import Callable
from typing import ClassVar

FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\u2028\u2029]")
_HANDLER_NAME = "edge_runtime"


def escape(text: str) -> str:
    """Control characters (newlines included) as visible escapes: 'a\\nb' -> 'a\\\\x0ab'."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}" if ord(m.group()) < 0x100
                        else f"\\u{ord(m.group()):04x}", text)


class SafeFormatter(logging.Formatter):
    def formatMessage(self, record: logging.LogRecord) -> str:
        saved = record.message
        record.message = escape(saved)
        try:
            return super().formatMessage(record)
        finally:
            record.message = saved

    def formatException(self, ei: logging._SysExcInfoType) -> str:
        return self._mark(super().formatException(ei))

    def formatStack(self, stack_info: str) -> str:
        return self._mark(super().formatStack(stack_info))

    @staticmethod
    def _mark(text: str) -> str:
        return "\n".join("| " + escape(line) for line in text.splitlines())


class RepeatLimiter(logging.Filter):
    """At most `burst` records of one kind per window, for WARNING and above."""

    def __init__(self, burst: int = 5, window_s: float = 60.0, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__()
        self.burst, self.window_s, self.clock = burst, window_s, clock
        self._seen: dict[tuple[str, str], tuple[float, int]] = {}
        self._lock = threading.Lock()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        key = (record.name, str(record.msg))
        now = self.clock()
        with self._lock:
            start, count = self._seen.get(key, (now, 0))
            if now - start >= self.window_s:
                held = count - self.burst - 1
                start, count = now, 0
                if held > 0:
                    record.msg = f"{record.msg} (and {held} more like it in the last {self.window_s:.0f} s)"
            count += 1
            self._seen[key] = (start, count)
            if len(self._seen) > 1000:  # many distinct templates: forget the oldest windows
                for old in sorted(self._seen, key=lambda k: self._seen[k][0])[:500]:
                    del self._seen[old]
        if count == self.burst + 1:
            record.msg = f"{record.msg} (repeated; holding back more like it for {self.window_s:.0f} s)"
        return count <= self.burst + 1


class ExpectedFailures(logging.Filter):
    """Failures a loaded server meets by design keep one line, without a traceback: a client
    flood that exhausts file descriptors makes asyncio's accept() fail until connections
    close, which is an event to count, not a bug to debug."""

    PREFIXES: ClassVar[dict[str, tuple[str, ...]]] = {"asyncio": ("socket.accept() out of system resource",)}

    def filter(self, record: logging.LogRecord) -> bool:
        prefixes = self.PREFIXES.get(record.name)
        if prefixes and str(record.msg).startswith(prefixes) and record.exc_info:
            error = record.exc_info[1]
            record.msg = f"{str(record.msg).splitlines()[0]}: {error}"
            record.args, record.exc_info, record.exc_text = None, None, None
        return True


def configure(level: int, stream: object = None) -> logging.Handler:
    """Install the guarded handler on the root logger (again: only the level changes)."""
    root = logging.getLogger()
    root.setLevel(level)
    for existing in root.handlers:
        if existing.get_name() == _HANDLER_NAME:
            return existing
    handler = logging.StreamHandler(stream or sys.stderr)  # type: ignore[arg-type]
    handler.set_name(_HANDLER_NAME)
    handler.setFormatter(SafeFormatter(FORMAT))
    handler.addFilter(ExpectedFailures())
    handler.addFilter(RepeatLimiter())
    root.addHandler(handler)
    return handler
