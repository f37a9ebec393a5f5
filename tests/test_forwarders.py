"""The delivery loop (against the in-memory outbox), the webhook against a loopback receiver,
and start_all against the real store."""

from __future__ import annotations

import base64
import dataclasses
import hashlib
import hmac
import json
import re
import time
from pathlib import Path
from typing import Any

import cv2
import jsonschema
import numpy as np
import pytest
import requests

from edge_runtime import forwarders
from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.events.store import EventRecord, EventStore, new_id
from edge_runtime.forwarders.base import DeliveryError, Forwarder
from edge_runtime.forwarders.memory import MemoryOutbox
from edge_runtime.forwarders.webhook import WebhookTransport
from edge_runtime.metrics import Metrics
from edge_runtime.model.predictor import Predictor
from edge_runtime.serve import forwarding
from edge_runtime.service.backoff import Backoff
from edge_runtime.sinks import EventBroadcaster, results
from edge_runtime.sinks.context import SinkContext
from edge_runtime.types import Frame, FrameResult
from tests.conftest import jpeg_bytes, solid, wait_for
from tests.receivers import SCHEMA, Receiver, event


class Clock:
    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


class Recorder:
    """A transport that fails its first `failures` sends, then records what it gets."""

    def __init__(self, failures: int = 0) -> None:
        self.failures = failures
        self.sent: list[dict[str, Any]] = []
        self.attempts = 0
        self.closed = False

    def send(self, item: Any, body: bytes) -> None:
        self.attempts += 1
        if self.failures:
            self.failures -= 1
            raise DeliveryError("link down")
        self.sent.append(json.loads(body))

    def close(self) -> None:
        self.closed = True


def forwarder(box: MemoryOutbox, transport: Recorder, clock: Clock | None = None, **kw: Any) -> Forwarder:
    kw.setdefault("ttl_s", 3600)
    return Forwarder("up", "test", transport, box, backoff=Backoff(1.0, 8.0, jitter=0.5, rng=lambda: 0.0),
                     clock=clock or Clock(), **kw)


def test_delivers_in_order_and_a_new_forwarder_resumes_at_the_cursor():
    clock = Clock()
    box = MemoryOutbox(clock=clock)
    for i in range(3):
        box.add_outbox("event-start", f"e{i}", event(f"e{i}"))
    first = Recorder()
    assert forwarder(box, first, clock).run_once() == 0.0
    assert [m["id"] for m in first.sent] == ["e0", "e1", "e2"]
    assert box.cursor("up") == 3
    box.add_outbox("event-end", "e0", event("e0", end="2026-11-28T07:00:05.000Z"))
    second = Recorder()  # as after a restart: the cursor comes from the outbox
    again = forwarder(box, second, clock)
    again.run_once()
    assert [(m["id"], m["type"]) for m in second.sent] == [("e0", "event-end")]
    assert again.delivered == 1
    assert again.run_once() == again.poll_s  # nothing left: wait a poll interval


class CountingOutbox(MemoryOutbox):
    def __init__(self) -> None:
        super().__init__()
        self.saves: list[int] = []

    def set_cursor(self, name: str, seq: int) -> None:
        self.saves.append(seq)
        super().set_cursor(name, seq)


def test_the_cursor_is_written_once_a_batch_not_once_an_item():
    box = CountingOutbox()
    for i in range(250):
        box.add_outbox("event-start", f"e{i}", event(f"e{i}"))
    link = Recorder()
    f = forwarder(box, link)
    while f.run_once() == 0.0:
        pass
    assert len(link.sent) == 250 and box.cursor("up") == 250
    assert box.saves == [100, 200, 250]  # batches of 100 (fast sends: under SAVE_EVERY_S each)


def test_a_failed_send_keeps_the_cursor_and_backs_off_exponentially():
    clock = Clock()
    box = MemoryOutbox(clock=clock)
    box.add_outbox("event-start", "e0", event("e0"))
    box.add_outbox("event-start", "e1", event("e1"))
    link = Recorder(failures=4)
    f = forwarder(box, link, clock)
    waits = [f.run_once() for _ in range(4)]
    assert waits == [1.0, 2.0, 4.0, 8.0]  # doubling, capped at max_s (jitter 0 here)
    assert f.run_once() == 0.0
    assert [m["id"] for m in link.sent] == ["e0", "e1"]
    assert (f.retried, f.delivered, box.cursor("up")) == (4, 2, 2)
    assert f.failures == 0  # a success starts the backoff again


def test_jitter_shortens_each_wait_by_at_most_its_fraction():
    waits = [Backoff(2.0, 60.0, jitter=0.5).delay(1) for _ in range(200)]
    assert all(1.0 <= w <= 2.0 for w in waits)
    assert len({round(w, 6) for w in waits}) > 100  # really random: retries don't march in step


def test_items_past_their_ttl_are_dropped_counted_and_health_follows():
    clock = Clock()
    box = MemoryOutbox(clock=clock)
    box.add_outbox("event-start", "old", event("old"), created=clock.now - 100)
    box.add_outbox("event-start", "new", event("new"))
    link = Recorder(failures=1)
    f = forwarder(box, link, clock, ttl_s=50)
    f.run_once()  # drops "old", fails "new"
    assert (f.dropped, f.retried, box.cursor("up")) == (1, 1, 1)
    assert f.healthy
    clock.now += 51  # failing for longer than the TTL: /readyz must say so
    assert not f.healthy
    assert f.status()["healthy"] is False and f.status()["failingForS"] == pytest.approx(51)
    f.run_once()  # "new" has now expired too
    assert (f.dropped, link.sent, box.cursor("up")) == (2, [], 2)


def test_rows_retention_removed_before_the_forwarder_reached_them_count_as_dropped():
    box = MemoryOutbox()
    for i in range(6):
        box.add_outbox("event-start", f"e{i}", event(f"e{i}"))
    box.set_cursor("up", 1)
    del box.items[1:4]  # seqs 2-4 pruned by retention
    link = Recorder()
    f = forwarder(box, link)
    f.run_once()
    assert [m["id"] for m in link.sent] == ["e4", "e5"] and f.dropped == 3
    fresh = MemoryOutbox()  # a new forwarder (no cursor yet) starts at the oldest row kept, losing nothing
    fresh.add_outbox("event-start", "a", event("a"))
    fresh.add_outbox("event-start", "b", event("b"))
    del fresh.items[0]
    g = forwarder(fresh, Recorder())
    g.run_once()
    assert g.dropped == 0 and g.delivered == 1


def test_results_are_skipped_unless_asked_and_thinned_per_camera():
    clock = Clock()
    box = MemoryOutbox(clock=clock)
    for i, camera in enumerate(["a", "a", "b", "a", "a"]):
        box.add_outbox("result", f"r{i}", {"camera": camera, "predictions": []}, created=clock.now + i * 0.5)
    clock.now += 3
    plain = Recorder()
    forwarder(box, plain, clock).run_once()
    assert plain.sent == [] and box.cursor("up") == 5
    thinned = Recorder()
    f = Forwarder("results", "test", thinned, box, ttl_s=60, backoff=Backoff(1, 2), clock=clock, results_every_s=1.0)
    f.run_once()
    assert [m["id"] for m in thinned.sent] == ["r0", "r2", "r3"]  # r1 and r4 come 0.5 s after their camera's last
    assert f.skipped == 2


def test_thumbnail_goes_as_base64_when_asked(tmp_path: Path):
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8jpeg\xff\xd9")
    box = MemoryOutbox()
    box.thumbnails["e0"] = tmp_path / "t.jpg"
    box.add_outbox("event-start", "e0", event("e0"))
    box.add_outbox("event-start", "e1", event("e1"))  # no thumbnail yet: sent without
    link = Recorder()
    forwarder(box, link, thumbnail=True).run_once()
    assert base64.b64decode(link.sent[0]["thumbnailJpeg"]) == b"\xff\xd8jpeg\xff\xd9"
    assert "thumbnailJpeg" not in link.sent[1]
    for message in link.sent:
        jsonschema.validate(message, SCHEMA)


def test_schema_refuses_a_payload_without_its_type():
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(event("e0"), SCHEMA)


def test_config_fails_loudly_and_names_the_key(tmp_path: Path):
    with pytest.raises(ConfigError, match=r"forwarders\.0\.webhook\.secert_file"):
        load_settings(overrides={"forwarders": [{"type": "webhook", "url": "http://h", "secert_file": "x"}]})
    with pytest.raises(ConfigError, match="names must be unique"):
        load_settings(overrides={"forwarders": [{"type": "mqtt", "host": "a"}, {"type": "mqtt", "host": "b"}]})
    with pytest.raises(ConfigError, match="password_file needs a username"):
        load_settings(overrides={"forwarders": [{"type": "mqtt", "host": "a", "password_file": "p"}]})
    settings = load_settings(overrides={"forwarders": [
        {"type": "webhook", "url": "http://127.0.0.1:9", "secret_file": str(tmp_path / "missing")}]})
    with pytest.raises(ConfigError, match="secret_file .*missing"):
        forwarders.start_all(forwarding(settings), MemoryOutbox())


# --- the webhook, against a real HTTP receiver on loopback ---------------------------------------


@pytest.fixture
def receiver():
    made: list[Receiver] = []

    def make(failures: int = 0) -> Receiver:
        made.append(Receiver(failures))
        return made[-1]

    yield make
    for r in made:
        r.close()


def webhook_settings(url: str, secret_file: Path, **extra: Any):
    return load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "webhook", "name": "hook", "url": url, "secret_file": str(secret_file),
         "backoff": {"initial_s": 0.05, "max_s": 0.2}, "poll_s": 0.05, **extra}]})


@pytest.mark.timeout(60)
def test_webhook_gets_every_event_in_order_through_five_500s_and_signed(tmp_path: Path, receiver):
    secret = tmp_path / "secret"
    secret.write_text("s3cret\n")
    hook = receiver(failures=5)
    store = EventStore.open(tmp_path / "data")
    ids = [f"01JEV{i}" for i in range(4)]
    for i in ids:
        store.add_outbox("event-start", i, event(i))
    metrics = Metrics()
    running = forwarders.start_all(forwarding(webhook_settings(hook.url, secret)), store, metrics.registry)
    try:
        assert wait_for(lambda: len(hook.got) == 4, timeout=30)
        store.add_outbox("event-end", ids[0], event(ids[0], end="2026-11-28T07:00:09.000Z"))
        assert wait_for(lambda: len(hook.got) == 5, timeout=10)
        assert wait_for(lambda: running.status()[0]["queueDepth"] == 0, timeout=5)
        status = running.status()[0]
        text = metrics.render().decode()
    finally:
        running.stop(timeout=5)
    assert hook.answers[:5] == [500] * 5
    assert [json.loads(b)["id"] for _, b in hook.got] == [*ids, ids[0]]
    assert [h["Idempotency-Key"] for h, _ in hook.got][-1] == f"{ids[0]}:event-end"
    assert hook.got[0][0]["User-Agent"].startswith("edge-runtime/") and "(kiosk-3)" in hook.got[0][0]["User-Agent"]
    for headers, body in hook.got:
        expected = "sha256=" + hmac.new(b"s3cret", body, hashlib.sha256).hexdigest()
        assert hmac.compare_digest(headers["X-Signature"], expected)
        jsonschema.validate(json.loads(body), SCHEMA)
    assert status["retried"] == 5 and status["delivered"] == 5 and status["healthy"]
    assert 'edge_forwarder_delivered_total{forwarder="hook"} 5.0' in text
    assert 'edge_forwarder_retried_total{forwarder="hook"} 5.0' in text
    assert 'edge_forwarder_queue_depth{forwarder="hook"} 0.0' in text
    assert "edge_forwarder" not in metrics.render().decode()  # stop() unregisters
    store.close()
    # a restart with the same store sends nothing twice
    store = EventStore.open(tmp_path / "data")
    assert store.cursor("hook") == store.outbox_head() == 5
    store.close()


@pytest.mark.timeout(30)
def test_webhook_queue_shows_in_metrics_while_the_receiver_is_gone(tmp_path: Path):
    secret = tmp_path / "secret"
    secret.write_text("k")
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "a", event("a"))
    store.add_outbox("event-start", "b", event("b"))
    metrics = Metrics()
    # port 9 (discard) on loopback: nothing listens, every POST is refused
    settings = webhook_settings("http://user:hunter2@127.0.0.1:9/", secret)
    running = forwarders.start_all(forwarding(settings), store, metrics.registry)
    try:
        assert wait_for(lambda: running.status()[0]["retried"] >= 2, timeout=10)
        status = running.status()[0]
        text = metrics.render().decode()
    finally:
        running.stop(timeout=5)
        store.close()
    assert status["queueDepth"] == 2 and status["delivered"] == 0
    assert status["lastError"] == "POST http://127.0.0.1:9/: ConnectionError"  # no credentials from the URL
    assert 'edge_forwarder_queue_depth{forwarder="hook"} 2.0' in text
    assert 'edge_forwarder_oldest_age_seconds{forwarder="hook"}' in text


def test_webhook_transport_treats_non_2xx_as_unacknowledged(receiver):
    hook = receiver(failures=1)
    transport = WebhookTransport(hook.url, None, 5.0, requests.Session())
    box = MemoryOutbox()
    box.add_outbox("event-start", "e0", event("e0"))
    item = box.outbox_after(0)[0]
    with pytest.raises(DeliveryError, match="HTTP 500"):
        transport.send(item, b"{}")
    transport.send(item, b"{}")
    transport.close()
    assert "X-Signature" not in hook.got[0][0]  # no secret configured: unsigned


def test_results_go_through_the_outbox_at_the_set_rate_and_match_the_schema(tmp_path: Path, exports):
    predictor = Predictor.load(exports["modern"])
    settings = load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "webhook", "url": "http://127.0.0.1:9/", "results_every_s": 1.0},
        {"type": "webhook", "name": "slow", "url": "http://127.0.0.1:9/", "results_every_s": 2.0}]})
    store = EventStore.open(tmp_path / "data")
    sink = results.build(SinkContext(settings, "shelf", "it1", EventBroadcaster(), store))
    assert sink is not None
    image = np.full((48, 64, 3), (0, 0, 255), np.uint8)
    prediction = predictor.predict(image)
    t0 = time.time()
    for i in range(10):  # 4 frames a second on each of two cameras, for 2.5 s
        for camera in ("door", "till"):
            frame = Frame(camera, i, t0 + i * 0.25, time.monotonic(), image)
            sink(FrameResult(frame, prediction, 1.0, time.monotonic()))
    sink.close()
    items = store.outbox_after(0)
    assert [(i.payload["camera"], i.payload["seq"]) for i in items] == [
        ("door", 0), ("till", 0), ("door", 4), ("till", 4), ("door", 8), ("till", 8)]
    assert {i.kind for i in items} == {"result"}
    slow = Recorder()
    f = Forwarder("slow", "test", slow, store, ttl_s=60, backoff=Backoff(1, 2), results_every_s=2.0)
    f.run_once()
    assert [(m["camera"], m["seq"]) for m in slow.sent] == [("door", 0), ("till", 0), ("door", 8), ("till", 8)]
    for message in slow.sent:
        jsonschema.validate(message, SCHEMA)
        assert message["type"] == "result" and message["device"] == "kiosk-3"
        assert message["predictions"][0]["tagName"] == "red"
    store.close()


def test_events_recorded_by_the_store_validate_and_carry_their_thumbnail(tmp_path: Path):
    store = EventStore.open(tmp_path / "data")
    now = time.time()
    record = EventRecord(id=new_id(now), rule="kiosk", camera="door", tag="cola", start=now, end=None, last_at=now,
                         peak=0.91, peak_at=now, frames=3, box={"left": 0.1, "top": 0.2, "width": 0.3, "height": 0.4},
                         device="kiosk-3")
    thumb = jpeg_bytes(solid((0, 0, 255), 160, 120))
    record = store.start_event(record, {"snapshot": jpeg_bytes(solid((0, 0, 255))), "thumbnail": thumb})
    store.end_event(dataclasses.replace(record, end=now + 2, frames=9))
    link = Recorder()
    forwarder(store, link, clock=Clock(now + 5), thumbnail=True).run_once()  # type: ignore[arg-type]
    store.close()
    assert [(m["type"], m["id"]) for m in link.sent] == [("event-start", record.id), ("event-end", record.id)]
    for message in link.sent:
        jsonschema.validate(message, SCHEMA)
        image = cv2.imdecode(np.frombuffer(base64.b64decode(message["thumbnailJpeg"]), np.uint8), cv2.IMREAD_COLOR)
        assert image.shape == (120, 160, 3)
    assert link.sent[0]["end"] is None and link.sent[1]["end"] is not None and link.sent[1]["frames"] == 9


@pytest.mark.timeout(30)
def test_a_link_down_past_the_ttl_drops_items_and_reports_unhealthy(tmp_path: Path):
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "a", event("a"))
    store.add_outbox("event-start", "b", event("b"))
    metrics = Metrics()
    settings = load_settings(overrides={"forwarders": [
        {"type": "webhook", "name": "hook", "url": "http://127.0.0.1:9/", "ttl_s": 0.5, "poll_s": 0.05,
         "backoff": {"initial_s": 0.05, "max_s": 0.1}}]})
    running = forwarders.start_all(forwarding(settings), store, metrics.registry)
    try:
        assert wait_for(lambda: running.status()[0]["dropped"] == 2, timeout=10)
        assert wait_for(lambda: not running.healthy, timeout=5)
        status = running.status()[0]
        text = metrics.render().decode()
    finally:
        running.stop(timeout=5)
        store.close()
    assert status["healthy"] is False and status["failingForS"] > 0.5 and status["queueDepth"] == 0
    assert 'edge_forwarder_dropped_total{forwarder="hook"} 2.0' in text


def test_the_config_examples_in_the_docs_are_valid_settings(tmp_path: Path):
    text = (Path(__file__).resolve().parent.parent / "docs" / "forwarding.md").read_text()
    blocks = re.findall(r"```yaml\n(.*?)```", text, re.S)
    assert len(blocks) == 3
    for i, block in enumerate(blocks):
        path = tmp_path / f"example{i}.yaml"
        path.write_text(block)
        settings = load_settings(path)
        assert settings.forwarders or settings.samples.samplers
