"""The store's one janitor sweeps on its own, whatever writes to the store: a server with
samplers alone, or results forwarding alone, has no recorder to sweep after each event."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from edge_runtime.events.config import StoreConfig
from edge_runtime.events.retention import Janitor, RetentionLoop
from edge_runtime.events.setup import open_store
from edge_runtime.events.store import EventStore
from edge_runtime.model.predictor import Predictor
from tests.conftest import DEMO, jpeg_bytes, solid, wait_for
from tests.server_util import make_app, running

DAY = 86400.0


def old_samples(store: EventStore, count: int, age_s: float) -> None:
    for i in range(count):
        assert store.add_sample("random", "door", time.time() - age_s - i, jpeg_bytes(solid((0, 0, 255), 64, 48)),
                                {"predictions": []}) is not None


@pytest.mark.parametrize("settings", [
    {"samples": {"samplers": [{"type": "random", "fraction": 0.5}]}},  # samplers alone
    {"forwarders": [{"type": "webhook", "name": "up", "url": "http://127.0.0.1:9/", "results_every_s": 1}]},
])
def test_a_server_without_event_rules_still_keeps_its_store_within_its_age(tmp_path: Path, settings):
    store_cfg = {"path": str(tmp_path / "data"), "max_age_days": 1}
    store = open_store(StoreConfig(**store_cfg))
    old_samples(store, 3, age_s=3 * DAY)
    store.add_outbox("result", "", {"old": True})
    store.close()
    app = make_app(Predictor.load(DEMO), events={"store": store_cfg}, **settings)
    with running(app):
        svc = app.state.services
        assert svc.janitor is not None
        assert wait_for(lambda: svc.store.samples() == [], timeout=10)  # swept at start, not only after events


def test_the_loop_counts_a_failed_sweep_and_goes_on(tmp_path: Path):
    store = EventStore.open(tmp_path / "data")
    runs = []

    class Failing(Janitor):
        def run(self, now: float | None = None, extra: int = 0):  # type: ignore[no-untyped-def]
            runs.append(time.monotonic())
            if len(runs) == 1:
                raise OSError(5, "Input/output error")
            return super().run(now, extra)

    loop = RetentionLoop(Failing(store), every_s=0.01).start()
    try:
        assert wait_for(lambda: len(runs) >= 3, timeout=10)
    finally:
        loop.stop()
    assert store.stats.errors["retention"] == 1
    count = len(runs)
    time.sleep(0.05)
    assert len(runs) == count  # stopped means stopped
    store.close()


def test_a_write_larger_than_the_whole_budget_evicts_nothing(tmp_path: Path):
    from edge_runtime.events.store import Budget

    store = EventStore.open(tmp_path / "data", Budget(max_bytes=2 << 20, min_free_bytes=0))
    old_samples(store, 5, age_s=60)
    sweep = Janitor(store).run(extra=3 << 20)  # say, a long clip on a small budget
    assert (sweep.media, sweep.records) == (0, 0) and len(store.samples()) == 5
    assert not store.room_for(3 << 20)  # the write itself is what gets refused
    store.close()
