"""The sink seam: a callable that takes each FrameResult, with an optional lifecycle.

    class MySink:
        def __call__(self, result: FrameResult) -> None: ...
        def close(self) -> None: ...          # optional: release files, sockets, threads

A sink must be quick: it runs on the pipeline's publisher thread. Work that can block (disk
sync, network) belongs on a thread of the sink's own, fed by a bounded queue.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping

from ..types import FrameResult

log = logging.getLogger(__name__)
Sink = Callable[[FrameResult], None]
LOG_EVERY_S = 30.0  # a sink failing on every frame logs once per this many seconds


class MultiSink:
    """Calls every sink in turn; a failing sink is logged (rate-limited) and counted, and the
    others still run.

        sink = MultiSink({"latest": latest, "log": jsonl})
        sink(result)
        sink.close()      # closes every sink that has a close()
    """

    def __init__(self, sinks: Mapping[str, Sink], on_error: Callable[[str], None] | None = None) -> None:
        self.sinks = dict(sinks)
        self.errors: Counter[str] = Counter()
        self._on_error = on_error
        self._logged: dict[str, float] = {}

    def __call__(self, result: FrameResult) -> None:
        for name, sink in self.sinks.items():
            try:
                sink(result)
            except Exception as exc:  # one sink's failure must never stop the others
                self.errors[name] += 1
                if self._on_error:
                    self._on_error(name)
                now = time.monotonic()
                if now - self._logged.get(name, -LOG_EVERY_S) >= LOG_EVERY_S:
                    self._logged[name] = now
                    log.error("sink %s failed (%d so far): %s", name, self.errors[name], exc)

    def close(self) -> None:
        """Close every sink that holds a resource, in reverse order of building."""
        for name, sink in reversed(list(self.sinks.items())):
            close = getattr(sink, "close", None)
            if close is None:
                continue
            try:
                close()
            except Exception as exc:  # closing one must not keep the others open
                log.error("sink %s: close failed: %s", name, exc)
