"""Model changes in the real event store: recorded with their outbox row, read back newest
first, kept by an older store once it is opened, capped by the janitor, and forwarded by a
real webhook receiver and a real mosquitto, each payload checked against its schema."""

from __future__ import annotations

import json
import math
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from edge_runtime import forwarders
from edge_runtime.config import load_settings
from edge_runtime.errors import StoreError
from edge_runtime.events import model_changes
from edge_runtime.events.records import SCHEMA_VERSION
from edge_runtime.events.retention import Janitor
from edge_runtime.events.store import EventStore, ModelChange
from edge_runtime.forwarders import payload
from edge_runtime.serve import forwarding
from tests.conftest import wait_for
from tests.receivers import MODEL_CHANGE_SCHEMA, SCHEMA, Receiver, event

T0 = 1_780_000_000.0
HOSTILE = "../../etc/+/#/\u202eevil\n\"quoted\" %2F $SYS"


def change(name: str = "shelf", reason: str = "publish", at: float = T0, **kw: Any) -> ModelChange:
    values: dict[str, Any] = {"project": "2d50", "old_version": 2, "new_version": 3,
                              "old_iteration": "it-2", "new_iteration": "it-3", "source": "cli",
                              "device": "kiosk-3", **kw}
    return ModelChange(name=name, reason=reason, at=at, **values)


@pytest.fixture
def store(tmp_path: Path):
    s = EventStore.open(tmp_path / "data")
    yield s
    s.close()


def test_a_change_is_recorded_with_its_outbox_row_and_read_back_newest_first(store: EventStore):
    first = store.record_model_change(change(at=T0, reason="publish", old_version=None, old_iteration=""))
    second = store.record_model_change(change(at=T0 + 5, reason="refused", new_version=4, new_iteration="it-4",
                                              detail="signature does not match\ntraceback line", source="incoming"))
    third = store.record_model_change(change(name="door", at=T0 + 5, reason="unpublish", new_version=None,
                                             new_iteration="", project=None))
    assert len({first, second, third}) == 3 and all(len(i) == 26 for i in (first, second, third))
    got = store.model_changes()
    assert [c.id for c in got] == [third, second, first]  # the same millisecond: the later written first
    assert got[1].detail == "signature does not match" and got[1].source == "incoming"
    assert got[2] == change(at=T0, old_version=None, old_iteration="", id=first)
    assert [c.id for c in store.model_changes(limit=1)] == [third]
    assert [c.id for c in store.model_changes(since=T0 + 1)] == [third, second]
    assert store.model_changes(limit=0) == []

    items = [i for i in store.outbox_after(0) if i.kind == model_changes.KIND]
    assert [i.event_id for i in items] == [first, second, third]
    for item in items:
        body = payload.build(item)
        jsonschema.validate(body, MODEL_CHANGE_SCHEMA)
        assert body["type"] == "model-change" and body["schemaVersion"] == 1
    assert payload.build(items[0])["at"] == "2026-05-28T20:26:40.000Z"
    assert payload.build(items[2])["newVersion"] is None and payload.build(items[2])["project"] is None
    assert store.count() == 0  # no event was made of them
    assert payload.MODEL_CHANGE == model_changes.KIND  # the forwarders cannot import the store's constant


def test_an_older_store_gains_the_table_and_keeps_its_events(tmp_path: Path):
    data = tmp_path / "data"
    old = EventStore.open(data)
    old.add_outbox("event-start", "01JOLD", event("01JOLD"))
    old.close()
    db = sqlite3.connect(data / "events.db")  # as schema 1 left it: no model_changes table
    db.execute("DROP TABLE model_changes")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    readonly = EventStore.open_readonly(data)  # a reader of an older store sees no changes, and no error
    assert readonly.model_changes() == []
    readonly.close()

    store = EventStore.open(data)
    try:
        assert store.model_changes() == []
        change_id = store.record_model_change(change())
        assert [c.id for c in store.model_changes()] == [change_id]
        assert [i.kind for i in store.outbox_after(0)] == ["event-start", "model-change"]
    finally:
        store.close()
    db = sqlite3.connect(data / "events.db")
    assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    db.close()


def test_the_janitor_keeps_the_newest_changes_and_their_outbox_rows_follow_the_outbox_rules(store: EventStore):
    ids = [store.record_model_change(change(at=T0 + i, new_version=i + 1)) for i in range(25)]
    assert Janitor(store, max_model_changes=10).run().model_changes == 15
    assert [c.id for c in store.model_changes(limit=100)] == ids[::-1][:10]
    assert store.outbox_count(0) == 25  # not yet forwarded: the rows stay for the forwarders
    assert Janitor(store, max_model_changes=10).run().model_changes == 0
    assert Janitor(store, consumers=[], max_ttl_s=1.0).run(now=T0 + 10**9).outbox == 25  # their TTL removes them


def test_hostile_values_are_stored_as_given_and_leave_only_as_json(store: EventStore, tmp_path: Path):
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    change_id = store.record_model_change(change(name=HOSTILE, new_iteration="'; DROP TABLE events; --",
                                                 detail="x" * 5000))
    got = store.model_changes()[0]
    assert got.name == HOSTILE and got.new_iteration == "'; DROP TABLE events; --"
    assert len(got.detail) == model_changes.MAX_DETAIL and got.detail.endswith("...")
    body = payload.encode(payload.build(store.outbox_after(0)[0]))
    assert b"\n" not in body and json.loads(body)["name"] == HOSTILE
    assert store.count() == 0 and store.get(change_id) is None  # the events table is still there
    after = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*") if "events.db" not in p.name)
    assert after == [p for p in before if "events.db" not in p.name]  # no file named after anything


@pytest.mark.parametrize(("field", "value", "message"), [
    ("reason", "upgrade", "reason 'upgrade'"),
    ("at", math.nan, "time nan"),
    ("at", math.inf, "time inf"),
    ("new_version", 0, "new_version 0"),
    ("old_version", True, "old_version True"),
    ("name", "", "name: empty"),
    ("name", "n" * 300, "name: text of at most 256"),
    ("project", 7, "project: text"),
])
def test_a_change_no_record_can_hold_is_one_line(field: str, value: Any, message: str):
    with pytest.raises(ValueError, match=message):
        change(**{field: value})


def test_a_row_another_program_wrote_is_left_out_and_the_rest_read(store: EventStore, tmp_path: Path):
    good = store.record_model_change(change())
    db = sqlite3.connect(tmp_path / "data" / "events.db")
    db.execute(f"INSERT INTO model_changes({model_changes.COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)",
               ("01JBAD", "shelf", None, -3, None, "", "", "upgrade", "", "cli", T0 + 1, ""))
    db.commit()
    db.close()
    assert [c.id for c in store.model_changes()] == [good]


def test_a_closed_store_refuses_a_change_in_one_line(tmp_path: Path):
    s = EventStore.open(tmp_path / "data")
    s.close()
    with pytest.raises(StoreError, match="is closed"):
        s.record_model_change(change())


# --- forwarded ------------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_the_webhook_posts_model_changes_beside_events_and_skips_unasked_results(tmp_path: Path):
    hook = Receiver(failures=2)
    store = EventStore.open(tmp_path / "data")
    store.add_outbox("event-start", "01JEV", event("01JEV"))
    store.add_outbox("result", "01JRES", {"camera": "door", "predictions": []})  # not asked for: skipped
    change_id = store.record_model_change(change(name=HOSTILE))
    settings = load_settings(overrides={"events": {"device": "kiosk-3"}, "forwarders": [
        {"type": "webhook", "name": "hook", "url": hook.url, "thumbnail": True, "poll_s": 0.05,
         "backoff": {"initial_s": 0.05, "max_s": 0.2}}]})
    running = forwarders.start_all(forwarding(settings), store)
    try:
        assert wait_for(lambda: len(hook.got) == 2, timeout=30)
        assert wait_for(lambda: running.status()[0]["queueDepth"] == 0, timeout=5)
        status = running.status()[0]
    finally:
        running.stop(timeout=5)
        store.close()
        hook.close()
    (_, event_body), (headers, body) = hook.got
    jsonschema.validate(json.loads(event_body), SCHEMA)
    sent = json.loads(body)
    jsonschema.validate(sent, MODEL_CHANGE_SCHEMA)
    assert sent["id"] == change_id and sent["name"] == HOSTILE and "thumbnailJpeg" not in sent
    assert headers["Idempotency-Key"] == f"{change_id}:model-change"
    assert status["delivered"] == 2 and status["retried"] == 2 and status["dropped"] == 0


@pytest.mark.timeout(60)
@pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs mosquitto (apt-get install mosquitto)")
def test_mqtt_publishes_each_change_on_its_name_topic_retained_escaped(tmp_path: Path):
    from tests.test_forwarders_mqtt import Broker, Subscriber, mqtt_settings

    broker = Broker(tmp_path / "broker")
    broker.start()
    store = EventStore.open(tmp_path / "data")
    published = store.record_model_change(change(name="shelf"))
    refused = store.record_model_change(change(name="shelf", reason="refused", at=T0 + 1, new_version=4,
                                               detail="does not load"))
    odd = store.record_model_change(change(name="a/b+#", at=T0 + 2))
    store.add_outbox("event-start", "01JEV", event("01JEV", camera="models"))
    live = Subscriber(broker.port, "live", clean=True)
    assert wait_for(lambda: live.client.is_connected(), timeout=10)
    live.client.publish("edge-runtime/probe", "probe", qos=1)  # back to itself once it is subscribed
    assert wait_for(lambda: any(t == "edge-runtime/probe" for t, _, _ in live.messages), timeout=10)
    running = forwarders.start_all(forwarding(mqtt_settings(tmp_path, broker.port)), store)
    try:
        assert wait_for(lambda: running.status()[0]["delivered"] == 4, timeout=20), running.status()
        assert wait_for(lambda: len([m for m in live.messages if "/kiosk-3/" in m[0]]) >= 5, timeout=10)
        live.close()
        late = Subscriber(broker.port, "late", clean=True)  # joins after: gets what was retained
        assert wait_for(lambda: len([m for m in late.messages if "/models/" in m[0]]) == 2, timeout=10)
        late.close()
    finally:
        running.stop(timeout=5)
        store.close()
        broker.stop()
    changes = {t: b for t, b, _ in late.messages if "/models/" in t}
    assert set(changes) == {"edge-runtime/kiosk-3/models/shelf/changes",
                            "edge-runtime/kiosk-3/models/a%2Fb%2B%23/changes"}
    shelf = changes["edge-runtime/kiosk-3/models/shelf/changes"]
    assert isinstance(shelf, dict) and shelf["id"] == published != refused  # a refusal is not retained
    assert isinstance(changes["edge-runtime/kiosk-3/models/a%2Fb%2B%23/changes"], dict)
    for body in changes.values():
        jsonschema.validate(body, MODEL_CHANGE_SCHEMA)
    assert all(r for t, _, r in late.messages if "/models/" in t)
    seen = [(t, b["id"] if isinstance(b, dict) else b) for t, b, _ in live.messages
            if t.startswith("edge-runtime/kiosk-3/") and not t.endswith("/status")]
    assert seen == [("edge-runtime/kiosk-3/models/shelf/changes", published),
                    ("edge-runtime/kiosk-3/models/shelf/changes", refused),
                    ("edge-runtime/kiosk-3/models/a%2Fb%2B%23/changes", odd),
                    ("edge-runtime/kiosk-3/models/events", "01JEV")]  # a camera named "models" meets no change
