"""The recorder: rules, evidence and the store, on a thread of its own.

    recorder = Recorder(settings.events, store, publish=broadcaster.publish)
    recorder.start()
    recorder.submit(result)        # from the pipeline's publisher thread: never blocks
    recorder.close()               # ends open events at their last frame, writes what is due

`process(result)` does the work synchronously (the thread calls it; tests and benchmarks may
too). On a start, the best frame so far is drawn and stored with the open record; on an end,
the best frame of the whole event replaces it, and the clip (when enabled) is written once
`clip.post_s` more seconds of frames have arrived. Each start and end is published as an
`event-start` / `event-end` SSE message with the event's JSON. Store failures (a full disk)
are counted and logged, and never stop the thread: recording resumes when space returns, and
an end the store refused is tried again every second, so the event closes (and its event-end
reaches the outbox) then, not at the next start. An event deleted while open stays deleted:
its end writes nothing and is not announced.
The thread runs at a lower CPU priority (nice +10) than the camera loop.
"""

from __future__ import annotations

import json
import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from ..errors import StoreError
from ..service.priority import lower_this_thread
from ..types import FrameResult
from .clip import ClipBuffer, Timed, write_clip
from .config import EventsConfig
from .media import evidence
from .retention import Janitor
from .rules import Change, OpenEvent, RuleEngine
from .store import EventRecord, EventStore

log = logging.getLogger(__name__)
Publish = Callable[[str, str, str], None]
TOUCH_EVERY_S = 1.0  # an open event's last frame is saved this often (what a crash keeps)
JANITOR_EVERY_S = 60.0
TICK_S = 0.25
NICE = 10  # evidence and clips are background work: inference keeps the cores when both want them
LOG_EVERY_S = 30.0
RETRY_EVERY_S = 1.0  # an end the store refused (a full disk) is tried again this often
MAX_UNWRITTEN_BYTES = 32 << 20  # pictures held for ends waiting for space; past it, the record alone
_STOP = object()


@dataclass
class _Clip:
    event: OpenEvent
    frames: list[Timed] = field(default_factory=list)
    ended_mono: float | None = None  # when the event ended (wall time for the idle deadline)


class Recorder:
    def __init__(self, config: EventsConfig, store: EventStore, publish: Publish | None = None,
                 janitor: Janitor | None = None, clock: Callable[[], float] = time.monotonic) -> None:
        self.config, self.store, self.publish = config, store, publish
        self.janitor = janitor or Janitor(store)
        self.engine = RuleEngine(config.rules)
        clip = config.clip
        self.clips = ClipBuffer(clip.pre_s, clip.fps, clip.width) if clip.enabled else None
        self._max_clip_frames = int(clip.max_s * clip.fps) + 1
        self._clipping: dict[str, _Clip] = {}  # event id -> frames gathered so far
        self._touched: dict[str, float] = {}  # event id -> frame time of its last saved state
        self._last_frame: dict[str, float] = {}  # camera -> clock() of its newest frame
        self._clock = clock
        self._queue: queue.Queue[object] = queue.Queue(maxsize=config.store.queue)
        self._thread: threading.Thread | None = None
        self._closing = threading.Event()
        self._next_sweep = clock() + JANITOR_EVERY_S
        self._logged = -LOG_EVERY_S
        self._unwritten: dict[str, tuple[EventRecord, dict[str, bytes]]] = {}  # ends the store refused
        self._unwritten_bytes = 0
        self._next_retry = clock() + RETRY_EVERY_S

    # ---- the thread --------------------------------------------------------------------------

    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="events-recorder", daemon=True)
        self._thread.start()

    def submit(self, result: FrameResult) -> None:
        try:
            self._queue.put_nowait(result)
        except queue.Full:
            self.store.stats.dropped_results += 1

    __call__ = submit

    def _run(self) -> None:
        lower_this_thread(NICE)
        next_tick = self._clock() + TICK_S
        while True:
            try:
                item = self._queue.get(timeout=TICK_S)
            except queue.Empty:
                item = None
            if item is _STOP:
                return
            if self._closing.is_set():  # shutting down: what is queued is not worth the wait
                self.store.stats.dropped_results += isinstance(item, FrameResult)
                continue
            try:
                if isinstance(item, FrameResult):
                    self.process(item)
                if self._clock() >= next_tick:
                    next_tick = self._clock() + TICK_S
                    self.tick()
            except Exception as exc:  # the recorder outlives any one bad frame or write
                self._log_failure("recording", exc)

    def close(self, timeout: float = 5.0) -> None:
        """Stop the thread (results still queued are dropped), end open events at their last
        frame and write what is due."""
        self._closing.set()
        if self._thread is not None:
            while True:
                try:
                    self._queue.put(_STOP, timeout=0.1)
                    break
                except queue.Full:
                    self._drop_oldest()
            self._thread.join(timeout)
            if self._thread.is_alive():
                log.error("events recorder did not stop in %.1f s; open events are closed at the next start",
                          timeout)
                return
            self._thread = None
        self._apply(self.engine.close_all())
        for clip in list(self._clipping.values()):
            if clip.event.end is not None:
                self._finish(clip.event, clip.frames)
        self._clipping.clear()
        self._write_unwritten()  # what still fails is closed at the next start, at its last frame

    def _drop_oldest(self) -> None:
        try:
            self._queue.get_nowait()
            self.store.stats.dropped_results += 1
        except queue.Empty:
            pass

    # ---- the work ------------------------------------------------------------------------

    def process(self, result: FrameResult) -> None:
        camera, at = result.camera_id, result.frame.captured_at
        self._last_frame[camera] = self._clock()
        if self.clips is not None:
            kept = self.clips.add(result)
            if kept is not None:
                for clip in self._clipping.values():
                    if clip.event.camera == camera and len(clip.frames) < self._max_clip_frames:
                        clip.frames.append(kept)
        self._apply(self.engine.feed(result))
        for event in self.engine.open_events(camera):
            if event.last_at - self._touched.get(event.id, event.start) >= TOUCH_EVERY_S:
                self._touched[event.id] = event.last_at
                self._guard("updating an event", self._toucher(event))
        post = self.config.clip.post_s
        for clip in [c for c in self._clipping.values() if c.event.camera == camera and c.event.end is not None]:
            if at >= clip.event.end + post:  # type: ignore[operator]
                self._finish_clip(clip)

    def _toucher(self, event: OpenEvent) -> Callable[[], None]:
        return lambda: self.store.touch(event.record(self.config.device))

    def tick(self) -> None:
        """Idle work: end events of cameras that stopped, finish clips whose frames stopped
        coming, sweep the store now and then."""
        now = self._clock()
        for camera, seen in self._last_frame.items():
            self._apply(self.engine.close_idle(camera, now - seen))
        post = self.config.clip.post_s
        for clip in list(self._clipping.values()):
            if clip.ended_mono is not None and now - clip.ended_mono >= post + 1.0:
                self._finish_clip(clip)
        if self._unwritten and now >= self._next_retry:
            self._next_retry = now + RETRY_EVERY_S
            self._write_unwritten()
        if now >= self._next_sweep:
            self._next_sweep = now + JANITOR_EVERY_S
            self._guard("retention", self.janitor.run)

    def _apply(self, changes: list[Change]) -> None:
        for change in changes:
            if change.kind == "start":
                self._start(change.event)
            elif self.clips is not None and change.event.id in self._clipping:
                self._clipping[change.event.id].ended_mono = self._clock()
            else:
                self._finish(change.event, [])

    def _start(self, event: OpenEvent) -> None:
        self.store.stats.started += 1
        self._touched[event.id] = event.last_at
        record = event.record(self.config.device)
        media = self._evidence(event)
        _, stored = self._store("recording an event start", record, media, self.store.start_event)
        self._send("event-start", stored or record)
        if self.clips is not None:
            frames = self.clips.since(event.camera, event.start - self.config.clip.pre_s)
            self._clipping[event.id] = _Clip(event, frames)

    def _evidence(self, event: OpenEvent) -> dict[str, bytes]:
        c = self.config
        return evidence(event.best, c.snapshot_quality, c.thumbnail_width, c.keep_frames)

    def _finish_clip(self, clip: _Clip) -> None:
        del self._clipping[clip.event.id]
        self._finish(clip.event, clip.frames)

    def _finish(self, event: OpenEvent, frames: list[Timed]) -> None:
        self.store.stats.ended += 1
        self._touched.pop(event.id, None)
        record = event.record(self.config.device)
        media = self._evidence(event)
        path = None
        if frames:
            path = self.store.scratch_path(".mp4")
            if not write_clip(frames, path, self.config.clip.fps, self.config.clip.codec):
                path = None

        def end(r: EventRecord, m: dict[str, bytes]) -> EventRecord | None:
            return self.store.end_event(r, m, clip=path)

        written, stored = self._store("recording an event end", record, media, end)
        if not written:  # a full disk: the end is written when space returns (tick)
            if path is not None:
                path.unlink(missing_ok=True)
            self._keep_unwritten(record, media)
        elif stored is None:  # deleted while it was open: it stays deleted, and no end is announced
            return
        self._send("event-end", stored or record)
        self._guard("retention", self.janitor.run)

    def _keep_unwritten(self, record: EventRecord, media: dict[str, bytes]) -> None:
        size = sum(len(m) for m in media.values())
        if self._unwritten_bytes + size > MAX_UNWRITTEN_BYTES:
            media, size = {}, 0
        self._unwritten[record.id] = (record, media)
        self._unwritten_bytes += size

    def _write_unwritten(self) -> None:
        """Write the ends the store refused, oldest first, until one is refused again: the
        event closes and its event-end reaches the outbox once space returns (it was already
        published when it happened)."""
        for event_id, (record, media) in list(self._unwritten.items()):
            written, _ = self._store("recording an event end", record, media, self.store.end_event)
            if not written:
                return
            del self._unwritten[event_id]
            self._unwritten_bytes -= sum(len(m) for m in media.values())

    def _store(self, what: str, record: EventRecord, media: dict[str, bytes],
               write: Callable[[EventRecord, dict[str, bytes]], EventRecord | None],
               ) -> tuple[bool, EventRecord | None]:
        """Make room, then write: whether the store took it (refusals are logged and
        counted), and what the write returned."""
        extra = sum(len(m) for m in media.values())
        if self.janitor.over(extra):
            self._guard("retention", lambda: self.janitor.run(extra=extra))
        result: list[EventRecord | None] = []
        self._guard(what, lambda: result.append(write(record, media)))
        return bool(result), (result[0] if result else None)

    def _guard(self, what: str, work: Callable[[], object]) -> None:
        try:
            work()
        except StoreError as exc:
            self._log_failure(what, exc)

    def _log_failure(self, what: str, exc: Exception) -> None:
        stats = self.store.stats
        stats.errors[what] = stats.errors.get(what, 0) + 1
        stats.last_error = f"{what}: {exc}"
        now = self._clock()
        if now - self._logged >= LOG_EVERY_S:
            self._logged = now
            log.error("events: %s failed: %s", what, exc)

    def _send(self, kind: str, record: EventRecord) -> None:
        if self.publish is not None:
            self.publish(kind, record.camera, json.dumps(record.to_json(), separators=(",", ":")))
