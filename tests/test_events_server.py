"""Events end to end: a real server on loopback, real video files, real SQLite.

A video in which red appears twice gives two events over the API and the SSE stream; a
kill -9 of `edge-runtime serve` while recording loses no ended event; a full disk (a 4 MB
tmpfs, where mounting is allowed) is reported and survived.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
import yaml

from edge_runtime.events.store import EventStore
from tests.conftest import wait_for
from tests.events_util import AUTH, GREY, RED, RULE, TOKEN, colour_video, ended, events_app
from tests.server_util import free_port, running


class SseReader(threading.Thread):
    """Collects the event-start / event-end messages of /events."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url, self.messages = url, []  # type: ignore[var-annotated]
        self.connected = threading.Event()

    def run(self) -> None:
        kind = None
        try:
            with httpx.stream("GET", f"{self.url}/events", headers=AUTH, timeout=30) as r:
                for line in r.iter_lines():
                    self.connected.set()
                    if line.startswith("event: "):
                        kind = line[7:]
                    elif line.startswith("data: ") and kind in ("event-start", "event-end"):
                        self.messages.append((kind, json.loads(line[6:])))
        except httpx.HTTPError:
            pass


@pytest.mark.timeout(120)
def test_red_twice_gives_two_events_with_snapshots_over_api_and_sse(colours, tmp_path):
    video = colour_video(tmp_path / "red-twice.avi", [(GREY, 30), (RED, 15), (GREY, 20), (RED, 15), (GREY, 600)])
    app = events_app(colours, video, tmp_path / "data", clip={"enabled": True, "pre_s": 0.5, "post_s": 0.5})
    with running(app) as url:
        sse = SseReader(url)
        sse.start()
        assert sse.connected.wait(10)
        assert wait_for(lambda: len(ended(url)) == 2, timeout=30)
        events = httpx.get(f"{url}/api/events", headers=AUTH).json()
        assert events["next"] is None and len(events["events"]) == 2
        newest, oldest = events["events"]
        assert newest["start"] > oldest["start"]  # newest first
        for e in events["events"]:
            assert (e["rule"], e["camera"], e["tag"], e["device"]) == ("kiosk", "door", "red", "kiosk-1")
            assert 12 <= e["frames"] <= 15 and e["peakProbability"] > 0.9
            jpeg = httpx.get(url + e["snapshot"], headers=AUTH)
            assert jpeg.headers["content-type"] == "image/jpeg"
            image = cv2.imdecode(np.frombuffer(jpeg.content, np.uint8), cv2.IMREAD_COLOR)
            assert image.shape == (240, 320, 3)
            b, g, r = image[200, 300]  # away from the caption: the red frame itself
            assert r > 200 and g < 60 and b < 60
            thumb = httpx.get(url + e["thumbnail"], headers=AUTH)
            assert cv2.imdecode(np.frombuffer(thumb.content, np.uint8), cv2.IMREAD_COLOR) is not None
            clip = httpx.get(url + e["clip"], headers=AUTH)
            assert clip.status_code == 200 and clip.content[4:8] == b"ftyp"
        assert wait_for(lambda: len(sse.messages) >= 4, timeout=10)
        kinds = [(k, m["id"]) for k, m in sse.messages]
        assert kinds == [("event-start", oldest["id"]), ("event-end", oldest["id"]),
                         ("event-start", newest["id"]), ("event-end", newest["id"])]
        assert sse.messages[0][1]["end"] is None and sse.messages[1][1]["end"] == oldest["end"]

        # paging, filters, one event, deletion, errors
        page = httpx.get(f"{url}/api/events", params={"limit": 1}, headers=AUTH).json()
        assert [e["id"] for e in page["events"]] == [newest["id"]] and page["next"]
        rest = httpx.get(f"{url}/api/events", params={"limit": 1, "cursor": page["next"]}, headers=AUTH).json()
        assert [e["id"] for e in rest["events"]] == [oldest["id"]] and rest["next"] is None
        assert httpx.get(f"{url}/api/events", params={"tag": "green"}, headers=AUTH).json()["events"] == []
        assert httpx.get(f"{url}/api/events", params={"camera": "yard"}, headers=AUTH).status_code == 404
        since = httpx.get(f"{url}/api/events", params={"since": newest["start"]}, headers=AUTH).json()
        assert [e["id"] for e in since["events"]] == [newest["id"]]
        assert len(httpx.get(f"{url}/api/events", params={"since": "1h"}, headers=AUTH).json()["events"]) == 2
        bad = httpx.get(f"{url}/api/events", params={"since": "yesterday"}, headers=AUTH)
        assert bad.status_code == 400 and "since" in bad.json()["message"]
        assert httpx.get(f"{url}/api/events/{oldest['id']}", headers=AUTH).json() == oldest
        assert httpx.get(f"{url}/api/events", headers={}).status_code == 401
        assert httpx.get(url + oldest["snapshot"]).status_code == 401
        assert httpx.delete(f"{url}/api/events/{oldest['id']}").status_code == 401
        assert httpx.delete(f"{url}/api/events/{oldest['id']}", headers=AUTH).status_code == 204
        assert httpx.get(f"{url}/api/events/{oldest['id']}", headers=AUTH).status_code == 404
        assert httpx.get(url + oldest["snapshot"], headers=AUTH).status_code == 404
        assert httpx.get(f"{url}/api/events/nope/clip.mp4", headers=AUTH).status_code == 404
        assert httpx.get(f"{url}/api/events/{newest['id']}/other.bin", headers=AUTH).status_code == 404

        ready = httpx.get(f"{url}/readyz", headers=AUTH).json()
        assert ready["events"]["diskFull"] is False and ready["events"]["usedBytes"] > 0
        metrics = httpx.get(f"{url}/metrics", headers=AUTH).text
        assert "edge_events_started_total 2.0" in metrics and "edge_events_disk_full 0.0" in metrics


def serve_process(model: Path, config: Path, port: int) -> subprocess.Popen[str]:
    env = {**os.environ, "EDGE_RUNTIME_TOKEN": TOKEN}
    return subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", str(model), "--config", str(config),
                             "--port", str(port)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True)


def api(url: str, path: str = "/api/events") -> dict | None:  # type: ignore[type-arg]
    try:
        r = httpx.get(url + path, headers=AUTH, params={"limit": 500}, timeout=2)
    except httpx.HTTPError:
        return None
    return r.json() if r.status_code == 200 else None


@pytest.mark.timeout(180)
def test_kill_9_while_recording_loses_no_ended_event(exports, tmp_path):
    # red for 0.8 s every 1.6 s, looping: events start and end all the time
    video = colour_video(tmp_path / "blink.avi", [(GREY, 12), (RED, 12)], fps=15)
    data = tmp_path / "data"
    config = tmp_path / "edge.yaml"
    config.write_text(yaml.safe_dump({
        "cameras": [{"id": "door", "source": str(video), "loop": True, "realtime": True}],
        "events": {"rules": [RULE], "store": {"path": str(data), "min_free_mb": 0}},
    }))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = serve_process(exports["modern"], config, port)
    try:
        # wait for at least three ended events and one open one, then kill without warning
        def open_after_three() -> bool:
            body = api(url)
            events = body["events"] if body else []
            return sum(1 for e in events if e["end"]) >= 3 and any(e["end"] is None for e in events)

        assert wait_for(open_after_three, timeout=60, interval=0.05), proc.stdout
        before = (api(url) or {})["events"]
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        output = proc.stdout.read() if proc.stdout else ""
    acknowledged = {e["id"]: e for e in before if e["end"]}
    was_open = [e for e in before if e["end"] is None]
    with sqlite3.connect(data / "events.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

    # a real restart: every ended event is there as it was; the open one is closed
    proc = serve_process(exports["modern"], config, port)
    try:
        assert wait_for(lambda: api(url) is not None, timeout=60), output
        after = {e["id"]: e for e in (api(url) or {})["events"]}
        for event_id, event in acknowledged.items():
            assert after[event_id] == event
        for event in was_open:
            closed = after[event["id"]]
            assert closed["end"] is not None and closed["end"] >= closed["start"]
            assert httpx.get(url + closed["snapshot"], headers=AUTH).status_code == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(10)
    store = EventStore.open(data)
    assert store.integrity_check() == "ok"
    assert all(e.end is not None for e in store.events(limit=1000))
    store.close()


@pytest.mark.timeout(120)
def test_a_full_disk_is_reported_and_recording_resumes_when_space_returns(colours, tmp_path, tiny_disk):
    # red for 0.6 s every 1.4 s, looping
    video = colour_video(tmp_path / "blink.avi", [(GREY, 12), (RED, 9)], fps=15, size=(640, 480))
    app = events_app(colours, video, tiny_disk / "data", loop=True)
    with running(app) as url:
        assert wait_for(lambda: len(ended(url)) >= 1, timeout=30)
        ballast = tiny_disk / "ballast"
        try:
            with open(ballast, "wb") as f:  # fill the disk to the last block
                while True:
                    f.write(b"\0" * 4096)
                    f.flush()
        except OSError:
            pass

        def full() -> bool:
            ready = httpx.get(f"{url}/readyz", headers=AUTH).json()
            return bool(ready["events"]["diskFull"])

        assert wait_for(full, timeout=30)
        assert httpx.get(f"{url}/healthz").status_code == 200
        assert httpx.get(f"{url}/readyz", headers=AUTH).status_code == 200  # predictions still work
        assert "edge_events_disk_full 1.0" in httpx.get(f"{url}/metrics", headers=AUTH).text
        ballast.unlink()
        assert wait_for(lambda: not full(), timeout=30)
        assert "edge_events_disk_full 0.0" in httpx.get(f"{url}/metrics", headers=AUTH).text
        newest = ended(url)[0]
        assert newest["snapshot"] and httpx.get(url + newest["snapshot"], headers=AUTH).status_code == 200
    with sqlite3.connect(tiny_disk / "data" / "events.db") as db:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
