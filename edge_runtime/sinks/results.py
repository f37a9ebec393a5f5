"""The sink that puts results in the outbox for forwarders with `results_every_s`.

Each camera's result goes in at most once per the smallest results_every_s among the
forwarders (each forwarder thins further to its own); events need no sink here, the
event recorder writes them. The outbox write is a SQLite transaction, so it runs on a
worker thread, never on the publisher thread.
"""

from __future__ import annotations

from typing import Any

from ..events.store import EventStore
from ..types import FrameResult
from .context import SinkContext
from .queued import QueuedThread


class ResultsSink:
    def __init__(self, store: EventStore, every_s: float, device: str, project: str = "", iteration: str = "",
                 queue_size: int = 32) -> None:
        self.store, self.every_s, self.device = store, every_s, device
        self.project, self.iteration = project, iteration
        self._last: dict[str, float] = {}  # camera -> captured_at of the last result queued
        self._worker = QueuedThread[tuple[str, dict[str, Any]]]("forward-results", self._append, queue_size)

    def __call__(self, result: FrameResult) -> None:
        camera, at = result.camera_id, result.frame.captured_at
        if at - self._last.get(camera, float("-inf")) < self.every_s:
            return
        self._last[camera] = at
        body = result.to_json(self.project, self.iteration)
        body["device"] = self.device
        self._worker.put((result.prediction.id, body))

    def _append(self, job: tuple[str, dict[str, Any]]) -> None:
        self.store.add_outbox("result", *job)

    def close(self, timeout: float = 10.0) -> None:
        self._worker.close(timeout)


def build(ctx: SinkContext) -> ResultsSink | None:
    rates = [f.results_every_s for f in ctx.settings.forwarders if f.results_every_s is not None]
    if not rates or ctx.store is None:
        return None
    return ResultsSink(ctx.store, min(rates), ctx.settings.events.device, ctx.project, ctx.iteration)
