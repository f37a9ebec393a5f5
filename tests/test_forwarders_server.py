"""End to end: `serve` with a camera on a real video, a rule, a webhook forwarder and a
sampler; the receiver on loopback gets each event's start and end, signed, and /metrics
and /readyz show the forwarder."""

from __future__ import annotations

import hashlib
import hmac
import json
from pathlib import Path

import cv2
import httpx
import jsonschema
import numpy as np
import pytest

from edge_runtime.config import load_settings
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.conftest import wait_for
from tests.receivers import SCHEMA, Receiver
from tests.server_util import running


def red_twice(path: Path, fps: float = 20.0) -> Path:
    """1.5 s red, 1.5 s grey, 1.5 s red, 1.5 s grey: the colour classifier sees "red" twice
    (then the camera reopens the file at its end, and the story starts again)."""
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), fps, (160, 120))
    assert writer.isOpened()
    for colour in ((0, 0, 255), (128, 128, 128), (0, 0, 255), (128, 128, 128)):
        for _ in range(int(fps * 1.5)):
            writer.write(np.full((120, 160, 3), colour, np.uint8))
    writer.release()
    return path


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_served_events_reach_the_webhook_and_show_in_metrics(tmp_path: Path, exports):
    hook = Receiver(failures=2)
    secret = tmp_path / "secret"
    secret.write_text("edge\n")
    settings = load_settings(overrides={
        "model": {"path": str(exports["modern"])},
        "cameras": [{"id": "door", "source": str(red_twice(tmp_path / "red.avi")), "realtime": True}],
        "events": {"device": "kiosk-3", "store": {"path": str(tmp_path / "data")},
                   "rules": [{"name": "red", "tags": ["red"], "min_probability": 0.6, "min_frames": 3,
                              "end_after_s": 0.5}]},
        "forwarders": [{"type": "webhook", "name": "hook", "url": hook.url, "secret_file": str(secret),
                        "thumbnail": True, "poll_s": 0.05, "backoff": {"initial_s": 0.05, "max_s": 0.2}}],
        "samples": {"samplers": [{"type": "tags", "tags": ["red"], "per_minute": 3}]},
    })
    svc = build_services(settings, env={})
    assert svc.store is not None
    try:
        with running(create_app(svc)) as base:
            assert wait_for(lambda: len(hook.got) >= 4, timeout=30), [json.loads(b)["type"] for _, b in hook.got]
            metrics = httpx.get(f"{base}/metrics").text
            ready = httpx.get(f"{base}/readyz").json()
            samples = svc.store.samples()
    finally:
        hook.close()
    assert 1 <= len(samples) <= 3 and {s.sampler for s in samples} == {"tags"}  # per_minute: 3
    assert samples[0].prediction["predictions"][0]["tagName"] == "red"
    assert sample(metrics, 'edge_samples_stored_total{sampler="tags"}') >= 1
    assert sample(metrics, 'edge_samples_limited_total{sampler="tags"}') >= 1  # red for 3 s at 20 fps: > 3
    got = hook.got[:4]
    bodies = [json.loads(body) for _, body in got]
    assert [b["type"] for b in bodies] == ["event-start", "event-end", "event-start", "event-end"]
    assert bodies[0]["id"] == bodies[1]["id"] != bodies[2]["id"] == bodies[3]["id"]
    for (headers, body), message in zip(got, bodies, strict=True):
        assert headers["X-Signature"] == "sha256=" + hmac.new(b"edge", body, hashlib.sha256).hexdigest()
        assert headers["Idempotency-Key"] == f"{message['id']}:{message['type']}"
        jsonschema.validate(message, SCHEMA)
        assert message["camera"] == "door" and message["tag"] == "red" and message["device"] == "kiosk-3"
        assert message["thumbnailJpeg"]
    assert sample(metrics, 'edge_forwarder_delivered_total{forwarder="hook"}') >= 4
    assert sample(metrics, 'edge_forwarder_retried_total{forwarder="hook"}') == 2
    forwarder = next(f for f in ready["forwarders"] if f["name"] == "hook")
    assert forwarder["healthy"] and forwarder["delivered"] >= 4 and forwarder["lastError"] == ""


def sample(text: str, name: str) -> float:
    return float(next(line.split()[-1] for line in text.splitlines() if line.startswith(name + " ")))
