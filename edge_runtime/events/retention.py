"""Retention: keep the store inside its budget, oldest first.

    janitor = Janitor(store, consumers=["uplink"], max_ttl_s=86400)
    janitor.run()                    # after each event (the recorder), and when the store fills
    loop = RetentionLoop(janitor).start()   # every minute, whoever writes: events, samples, results
    loop.stop()

In order: events and samples older than max_age_days go; then, while the store is over
max_mb or the disk has less than min_free_mb free, the oldest media go (the event records
stay, without pictures), and when no media are left and the store is still over max_mb,
the oldest records. (Records are small: deleting them for a disk that other files filled
would lose history and free next to nothing.) Outbox rows go once every configured
forwarder (`consumers`) has saved its cursor past them, or once they are older than
`max_ttl_s`; rows removed before a forwarder reached them are counted as dropped by that
forwarder. Model changes beyond the newest `max_model_changes` go (they are tiny: the cap
only keeps a device that flaps between versions for years from growing without end).
Freed database pages are given back to the disk.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass

from ..errors import first_line
from .model_changes import MAX_ROWS
from .store import EventStore

log = logging.getLogger(__name__)
BATCH = 20


@dataclass
class Sweep:
    aged: int = 0
    media: int = 0
    records: int = 0
    outbox: int = 0
    model_changes: int = 0


class Janitor:
    def __init__(self, store: EventStore, consumers: list[str] | None = None, max_ttl_s: float | None = None,
                 max_model_changes: int = MAX_ROWS) -> None:
        self.store = store
        self.consumers = consumers or []
        self.max_ttl_s = max_ttl_s
        self.max_model_changes = max_model_changes
        self._lock = threading.Lock()  # one sweep at a time: the recorder's and the loop's

    def over(self, extra: int = 0) -> bool:
        return not self.store.room_for(extra)

    def run(self, now: float | None = None, extra: int = 0) -> Sweep:
        """One sweep; `extra` bytes are about to be written and need room too."""
        with self._lock:
            return self._sweep(time.time() if now is None else now, extra)

    def _sweep(self, now: float, extra: int) -> Sweep:
        store, budget, sweep = self.store, self.store.budget, Sweep()
        if extra >= budget.max_bytes:  # no eviction can make room: the write is refused, and nothing goes for it
            extra = 0
        sweep.outbox = store.prune_outbox(self.consumers, self.max_ttl_s, now)
        sweep.model_changes = store.trim_model_changes(self.max_model_changes)
        if budget.max_age_s is not None:
            cutoff = now - budget.max_age_s
            while n := store.delete_oldest_records(BATCH, older_than=cutoff):
                sweep.aged += n
            sweep.aged += store.delete_samples_before(cutoff)
        while self.over(extra):
            oldest = store.oldest_with_media(BATCH)
            if oldest:
                for kind, item_id, _ in oldest:
                    store.drop_media(kind, item_id)
                    sweep.media += 1
                    if not self.over(extra):
                        break
                continue
            if not store.over_budget(extra):
                break  # the disk is short of space, not the budget: records are too small to matter
            removed = store.delete_oldest_records(BATCH)
            if not removed:
                break
            sweep.records += removed
            store.compact()
        if sweep.aged or sweep.media or sweep.records or sweep.outbox or sweep.model_changes:
            store.compact()
            log.debug("retention: %s", sweep)
        return sweep


class RetentionLoop:
    """The janitor every `every_s` seconds on a thread of its own, so that the budget, the
    age limit and the outbox's retention hold whatever writes to the store: the recorder
    (which also sweeps after each event), the samplers, or results forwarding alone. A sweep
    that fails is counted in the store's errors ("retention") and tried again next time."""

    def __init__(self, janitor: Janitor, every_s: float = 60.0) -> None:
        self.janitor, self.every_s = janitor, every_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="retention", daemon=True)

    def start(self) -> RetentionLoop:
        self._thread.start()
        return self

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.janitor.run()
            except Exception as exc:  # a store that cannot be swept now may be sweepable later
                stats = self.janitor.store.stats
                stats.errors["retention"] = stats.errors.get("retention", 0) + 1
                log.warning("retention: %s", first_line(exc))
            self._stop.wait(self.every_s)
