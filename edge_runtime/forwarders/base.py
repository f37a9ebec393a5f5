"""The delivery loop every forwarder shares: read after my cursor, send, then move the cursor.

    forwarder = Forwarder("uplink", "webhook", transport, store, ttl_s=86400, backoff=Backoff(1, 60))
    forwarder.start()          # a thread of its own
    ...
    forwarder.stop(timeout=5)

The store's outbox is the queue; a forwarder is only a cursor over it (kept in SQLite, so a
restart picks up where it stopped). An item counts as delivered when the transport returns,
which it does only on an acknowledgement (an MQTT PUBACK, an HTTP 2xx), and only then does
the cursor move past it: delivery is at least once and in order. A failed send is retried,
with the same item, after an exponential backoff with jitter. An item older than the
time-to-live when its turn comes is dropped and counted instead of sent, and so are rows
that retention removed before the forwarder reached them (a gap in the seqs).

A transport is one method, `send(item, body)`, raising DeliveryError when the item was not
acknowledged within the transport's deadline (a receiver that never finishes answering is a
failure like any other); MemoryOutbox (forwarders/memory.py) stands in for the store in
tests. The protocols are in protocols.py.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ..errors import ConfigError, EdgeRuntimeError
from ..paths import SECRET_FILE_BYTES, read_setting_file
from ..service.backoff import Backoff
from . import payload
from .protocols import Item, Outbox, Transport

log = logging.getLogger(__name__)
BATCH = 100
SAVE_EVERY_S = 0.5


class DeliveryError(EdgeRuntimeError):
    """The item was not acknowledged (link down, timeout, refused); it will be sent again."""


class Forwarder:
    """Sends the outbox's items through one transport, in order, from its own cursor."""

    def __init__(self, name: str, kind: str, transport: Transport, outbox: Outbox, *, ttl_s: float,
                 backoff: Backoff, poll_s: float = 0.5, thumbnail: bool = False,
                 results_every_s: float | None = None, clock: Callable[[], float] = time.time) -> None:
        self.name, self.kind = name, kind
        self.transport, self.outbox = transport, outbox
        self.ttl_s, self.backoff, self.poll_s = ttl_s, backoff, poll_s
        self.failures = 0  # deliveries failed in a row; a success sets it back to 0
        self.thumbnail, self.results_every_s = thumbnail, results_every_s
        self.clock = clock
        self.delivered = self.retried = self.dropped = self.skipped = 0
        self.failing_since: float | None = None
        self.last_error = ""
        self._cursor = self._saved = outbox.cursor(name)
        self._saved_at = time.monotonic()
        self._last_result: dict[str, float] = {}  # camera -> capture time of the last result sent
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def cursor(self) -> int:
        return self._cursor

    # --- one step, testable alone ------------------------------------------------------------

    def run_once(self) -> float:
        """Handle one batch; returns how long to wait before the next (0: more may be ready)."""
        items = self.outbox.outbox_after(self._cursor, BATCH)
        if not items:
            return self.poll_s
        try:
            for item in items:
                if self._stop.is_set():
                    return 0.0
                self._skip_gap(item.seq)
                if self._wanted(item):
                    try:
                        self.transport.send(item, self._body(item))
                    except Exception as exc:  # any failure: the same item goes again after the backoff
                        return self._failed(exc)
                    self._delivered(item)
                self._cursor = item.seq
                self._save(force=False)
            return 0.0
        finally:
            self._save(force=True)

    def _skip_gap(self, seq: int) -> None:
        """Seqs are never reused nor skipped, so rows missing before `seq` were removed before
        this forwarder reached them (past the largest TTL, or with their event): lost, and
        counted. The cursor moves over them at once, so a retry of `seq` counts them no more."""
        if seq > self._cursor + 1:
            self.dropped += seq - self._cursor - 1
            self._cursor = seq - 1

    def _wanted(self, item: Item) -> bool:
        """False for items this forwarder passes over: expired ones (dropped and counted) and
        results it was not asked for, or that come sooner than results_every_s."""
        if self.clock() - item.created > self.ttl_s:
            self.dropped += 1
            return False
        if item.kind != "result":
            return True
        camera = str(item.payload.get("camera", ""))
        every = self.results_every_s
        # ISO times carry milliseconds: allow for their rounding, so that a forwarder whose
        # rate equals the results sink's keeps every result the sink wrote
        if every is None or payload.captured(item) - self._last_result.get(camera, float("-inf")) < every - 0.002:
            self.skipped += 1
            return False
        return True

    def _body(self, item: Item) -> bytes:
        thumb = payload.thumbnail_path(self.outbox, item) if self.thumbnail else None
        return payload.encode(payload.build(item, thumb))

    def _delivered(self, item: Item) -> None:
        self.delivered += 1
        if item.kind == "result":
            self._last_result[str(item.payload.get("camera", ""))] = payload.captured(item)
        if self.failing_since is not None:
            log.info("forwarder %s: delivering again after %.0f s", self.name, self.clock() - self.failing_since)
        self.failing_since = None
        self.last_error = ""
        self.failures = 0

    def _failed(self, exc: Exception) -> float:
        self.retried += 1
        self.last_error = str(exc) or type(exc).__name__
        if self.failing_since is None:
            self.failing_since = self.clock()
            log.warning("forwarder %s: delivery failed, retrying with backoff: %s", self.name, self.last_error,
                        exc_info=not isinstance(exc, DeliveryError))  # a traceback only for the unexpected
        self.failures += 1
        return self.backoff.delay(self.failures)

    def _save(self, force: bool) -> None:
        """Write the cursor to the store: at the end of each batch, and at most every SAVE_EVERY_S
        within one. Each write is a synced transaction, costlier than a delivery on an SD card;
        after a crash the items since the last write are sent again, which at least once allows."""
        if self._cursor == self._saved or (not force and time.monotonic() - self._saved_at < SAVE_EVERY_S):
            return
        self.outbox.set_cursor(self.name, self._cursor)
        self._saved, self._saved_at = self._cursor, time.monotonic()

    # --- the thread ----------------------------------------------------------------------------

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                wait = self.run_once()
            except Exception as exc:  # the store itself failed (disk gone): keep trying, slowly
                wait = self._failed(exc)
            if wait:
                self._stop.wait(wait)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name=f"forwarder-{self.name}", daemon=True)
        self._thread.start()

    def halt(self) -> None:
        """Ask the thread to end; closing the transport first cuts short a send that waits on the link."""
        self._stop.set()
        self.transport.close()

    def join(self, timeout: float = 5.0) -> None:
        if self._thread is not None:
            self._thread.join(timeout)

    def stop(self, timeout: float = 5.0) -> None:
        self.halt()
        self.join(timeout)

    # --- what /readyz and /metrics read --------------------------------------------------------

    def failing_for(self) -> float:
        return 0.0 if self.failing_since is None else max(0.0, self.clock() - self.failing_since)

    @property
    def healthy(self) -> bool:
        """False once deliveries have failed for longer than the time-to-live: items are being lost."""
        return self.failing_for() <= self.ttl_s

    def queue(self) -> tuple[int, float]:
        """(rows stored after the cursor, age in seconds of the oldest of them; 0 when none)."""
        depth = self.outbox.outbox_count(self._cursor)
        oldest = self.outbox.outbox_after(self._cursor, 1) if depth else []
        return depth, (max(0.0, self.clock() - oldest[0].created) if oldest else 0.0)

    def status(self) -> dict[str, Any]:
        depth, age = self.queue()
        return {"name": self.name, "type": self.kind, "healthy": self.healthy,
                "failingForS": round(self.failing_for(), 3), "ttlS": self.ttl_s, "queueDepth": depth,
                "oldestAgeS": round(age, 3), "delivered": self.delivered, "retried": self.retried,
                "dropped": self.dropped, "lastError": self.last_error}


def read_secret(path: Path, what: str) -> str:
    """A password or key from a file, without its trailing newline; ConfigError names the file."""
    try:
        raw = read_setting_file(path, what, SECRET_FILE_BYTES, secret=True)
    except IsADirectoryError:  # the folder opened, and reading it failed before it was checked
        raise ConfigError(f"{what} {path}: not a regular file") from None
    try:
        secret = raw.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise ConfigError(f"{what} {path}: not UTF-8 text") from None
    if not secret:
        raise ConfigError(f"{what} {path} is empty")
    return secret
