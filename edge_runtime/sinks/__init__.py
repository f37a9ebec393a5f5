"""Where results go: one file per sink, built from settings by `build_sinks`.

    sinks = build_sinks(settings, iteration=predictor.iteration, on_error=count)
    pipeline = Pipeline(predictor, cameras, sinks.all)
    ...
    sinks.all.close()

Every sink is a callable taking a FrameResult (sinks/base.py). The three the server always
needs (newest results, the SSE broadcaster, annotated frames) are built here; the others
are optional and built by the `build(ctx)` function of their module, listed in BUILDERS.
Adding a sink is one file with a `build`, one config model and one line in BUILDERS.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ..config import Settings
from ..events.retention import Janitor
from ..events.store import EventStore
from . import events, jsonl, results, samples
from .base import MultiSink, Sink
from .broadcast import EventBroadcaster, Subscription
from .context import SinkContext
from .frames import AnnotatedFrames
from .jsonl import JsonlLog
from .latest import LatestResults

__all__ = ["AnnotatedFrames", "EventBroadcaster", "JsonlLog", "LatestResults", "MultiSink", "Sink", "SinkContext",
           "Sinks", "Subscription", "build_sinks"]

# name -> builder; a builder returns None when its settings leave the sink off
BUILDERS: dict[str, Callable[[SinkContext], Sink | None]] = {
    "jsonl": jsonl.build,
    "events_store": events.build,
    "samples": samples.build,
    "forward_results": results.build,
}


@dataclass
class Sinks:
    latest: LatestResults
    broadcaster: EventBroadcaster
    frames: AnnotatedFrames
    all: MultiSink


def build_sinks(settings: Settings, iteration: str = "", on_error: Callable[[str], None] | None = None,
                store: EventStore | None = None, janitor: Janitor | None = None) -> Sinks:
    """The server's sinks, in publishing order; ConfigError (one line) if one cannot start."""
    ctx = SinkContext(settings=settings, project=settings.server.project, iteration=iteration,
                      broadcaster=EventBroadcaster(settings.server.project, iteration), store=store,
                      janitor=janitor)
    latest, frames = LatestResults(), AnnotatedFrames()
    chosen: dict[str, Sink] = {"latest": latest, "events": ctx.broadcaster, "frames": frames}
    try:
        for name, build in BUILDERS.items():
            sink = build(ctx)
            if sink is not None:
                chosen[name] = sink
    except Exception:
        MultiSink(chosen).close()  # release what was opened before the failing one
        raise
    return Sinks(latest=latest, broadcaster=ctx.broadcaster, frames=frames, all=MultiSink(chosen, on_error))
