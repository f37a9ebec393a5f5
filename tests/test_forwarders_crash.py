"""kill -9 a forwarding process in the middle of a backlog, start it again: every item
arrives (at least once), and what is sent again is bounded by one cursor write."""

from __future__ import annotations

import contextlib
import json
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml

from edge_runtime.config import load_settings
from edge_runtime.events.store import DB_NAME, EventStore
from edge_runtime.forwarders.base import BATCH
from tests.conftest import wait_for
from tests.receivers import Receiver, event

CHILD = textwrap.dedent("""
    import sys, time
    from pathlib import Path
    from edge_runtime import forwarders
    from edge_runtime.serve import forwarding
    from edge_runtime.config import load_settings
    from edge_runtime.events.store import DB_NAME, EventStore
    settings = load_settings(Path(sys.argv[1]))
    running = forwarders.start_all(forwarding(settings), EventStore.open(settings.events.store.path))
    time.sleep(600)
    """)


def saved_cursor(data: Path) -> int:
    """The forwarder's cursor as on disk, read without opening the store a second time for writing."""
    with contextlib.closing(sqlite3.connect(f"file:{data / DB_NAME}?mode=ro", uri=True)) as db:
        row = db.execute("SELECT seq FROM cursors WHERE name = 'hook'").fetchone()
    return int(row[0]) if row else 0


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_a_killed_forwarder_resumes_and_loses_nothing(tmp_path: Path):
    hook = Receiver(failures=0, delay_s=0.01)
    data = tmp_path / "data"
    store = EventStore.open(data)
    ids = [f"01JCRASH{i:04d}" for i in range(300)]
    for i in ids:
        store.add_outbox("event-start", i, event(i))
    store.close()
    settings = load_settings(overrides={"events": {"device": "kiosk-3", "store": {"path": str(data)}}, "forwarders": [
        {"type": "webhook", "name": "hook", "url": hook.url, "poll_s": 0.05,
         "backoff": {"initial_s": 0.05, "max_s": 0.2}}]})
    config = tmp_path / "settings.yaml"
    config.write_text(yaml.safe_dump(settings.model_dump(mode="json", exclude_defaults=True)))

    def received() -> list[str]:
        return [json.loads(body)["id"] for _, body in hook.got]

    first = subprocess.Popen([sys.executable, "-c", CHILD, str(config)])
    try:
        assert wait_for(lambda: len(hook.got) >= 120, timeout=30)
        first.send_signal(signal.SIGKILL)
        first.wait(10)
        before = len(received())
        second = subprocess.Popen([sys.executable, "-c", CHILD, str(config)])
        try:
            assert wait_for(lambda: set(received()) == set(ids), timeout=40), len(set(received()))
            assert wait_for(lambda: saved_cursor(data) == len(ids), timeout=10)
        finally:
            second.send_signal(signal.SIGKILL)
            second.wait(10)
    finally:
        if first.poll() is None:
            first.kill()
        hook.close()
    got = received()
    assert 0 < before < len(ids)
    assert list(dict.fromkeys(got)) == ids  # in order, by first arrival
    resent = len(got) - len(ids)
    assert 0 <= resent <= BATCH + 1  # at most the batch whose cursor write the kill prevented
    store = EventStore.open(data)
    assert store.cursor("hook") == store.outbox_head() == len(ids)
    store.close()
