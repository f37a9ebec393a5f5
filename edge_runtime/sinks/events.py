"""The events sink: feeds each result to the recorder (rules, evidence, the store).

Built when `events.rules` is set and the server opened the store. The recorder works on a
thread of its own behind a bounded queue (events.store.queue): a slow disk drops results
(counted in edge_events_dropped_results) instead of slowing the camera loop.
"""

from __future__ import annotations

from ..events.recorder import Recorder
from .context import SinkContext


def build(ctx: SinkContext) -> Recorder | None:
    if not ctx.settings.events.rules or ctx.store is None:
        return None
    recorder = Recorder(ctx.settings.events, ctx.store, publish=ctx.broadcaster.publish,
                        janitor=ctx.janitor)
    recorder.start()
    return recorder
