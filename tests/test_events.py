"""Events without the server: rules on real model results, the store, retention and clips.

Frames are solid colours run through the real colour classifier (tests/models.py), or red
squares through the real YOLO model; timestamps are synthetic, so an hour passes in seconds.
"""

from __future__ import annotations

import json
import shutil
import sqlite3
import time
from dataclasses import replace
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import StoreError
from edge_runtime.events.config import EventsConfig, RuleConfig, default_data_dir
from edge_runtime.events.recorder import Recorder
from edge_runtime.events.retention import Janitor
from edge_runtime.events.rules import RuleEngine, inside
from edge_runtime.events.store import Budget, EventRecord, EventStore, new_id
from edge_runtime.events.times import parse_time
from edge_runtime.model.predictor import Predictor
from edge_runtime.types import Frame, FrameResult
from tests.conftest import solid
from tests.events_util import GREY, RED, T0, Feeder, colour_frames


@pytest.fixture(scope="module")
def detector(exports) -> Predictor:
    return Predictor.load(exports["yolo"])


def run(engine: RuleEngine, results: list[FrameResult]) -> list[tuple[str, str, int, float]]:
    out = []
    for r in results:
        out += [(c.kind, c.event.tag, c.event.frames, c.event.start) for c in engine.feed(r)]
    out += [(c.kind, c.event.tag, c.event.frames, c.event.start) for c in engine.close_all()]
    return out


def test_a_tag_appearing_twice_gives_two_events_dated_from_their_first_frame(colours):
    feeder = Feeder(colours)
    results = colour_frames(feeder, "....rrrrrr" + "." * 30 + "rrrrr....")
    engine = RuleEngine([RuleConfig(name="kiosk", tags=["red"], min_probability=0.8, min_frames=3, end_after_s=1.0)])
    changes = run(engine, results)
    assert [c[:2] for c in changes] == [("start", "red"), ("end", "red"), ("start", "red"), ("end", "red")]
    assert changes[1][2] == 6 and changes[3][2] == 5  # every matching frame counted
    assert changes[0][3] == results[4].frame.captured_at  # the first red frame, not the third
    assert changes[2][3] == results[40].frame.captured_at


def test_min_frames_debounces_a_noisy_tag(colours):
    feeder = Feeder(colours)
    noisy = colour_frames(feeder, "r.rr.r.rr.rr.r" * 4)  # never three reds in a row
    engine = RuleEngine([RuleConfig(name="kiosk", tags=["red"], min_frames=3)])
    assert run(engine, noisy) == []
    steady = colour_frames(feeder, "rrr")
    assert [c[0] for c in run(engine, steady)] == ["start", "end"]


def test_short_absence_does_not_end_an_event_and_tags_and_cameras_filter(colours):
    feeder = Feeder(colours, fps=10)
    results = colour_frames(feeder, "rrrr..rrrr.gggg")  # 0.2 s gap < end_after_s
    engine = RuleEngine([RuleConfig(name="r", tags=["red"], min_frames=2, end_after_s=0.5),
                         RuleConfig(name="any", min_frames=2, end_after_s=0.5, min_probability=0.9),
                         RuleConfig(name="elsewhere", cameras=["yard"], min_frames=1)])
    changes = run(engine, results)
    red = [c for c in changes if c[1] == "red"]
    assert sorted(c[0] for c in red) == ["end", "end", "start", "start"]  # one per rule ("r" and "any")
    assert sorted(c[2] for c in red if c[0] == "end") == [8, 8]
    assert [c[:2] for c in changes if c[1] == "green"] == [("start", "green"), ("end", "green")]


def red_square(at: tuple[int, int], size: int = 416) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    x, y = at
    image[y:y + 64, x:x + 64] = RED
    return image


def test_zone_keeps_only_boxes_whose_centre_falls_inside(detector):
    feeder = Feeder(detector)
    left = [feeder.result(red_square((32, 160))) for _ in range(4)]
    right = [feeder.result(red_square((320, 160))) for _ in range(4)]
    assert all(r.prediction.predictions and r.prediction.predictions[0].bounding_box for r in left + right)
    zone = [(0.5, 0.0), (1.0, 0.0), (1.0, 1.0), (0.5, 1.0)]  # the right half
    engine = RuleEngine([RuleConfig(name="gate", tags=["red"], min_frames=2, zone=zone)])
    assert run(engine, left) == []
    changes = run(engine, right)
    assert [c[0] for c in changes] == ["start", "end"]
    assert inside((0.75, 0.5), zone) and not inside((0.25, 0.5), zone)


def test_zone_config_is_checked():
    with pytest.raises(ValueError, match="at least 3 points"):
        RuleConfig(name="z", zone=[(0, 0), (1, 1)])
    with pytest.raises(ValueError, match="normalised"):
        RuleConfig(name="z", zone=[(0, 0), (2, 0), (1, 1)])


def record(start: float, **kw) -> EventRecord:  # type: ignore[no-untyped-def]
    fields = dict(id=new_id(start), rule="r", camera="door", tag="red", start=start, end=None, last_at=start,
                  peak=0.9, peak_at=start, frames=3)
    fields.update(kw)
    return EventRecord(**fields)  # type: ignore[arg-type]


def test_store_roundtrip_outbox_and_crash_recovery(tmp_path):
    store = EventStore.open(tmp_path)
    open_event = store.start_event(record(T0), {"snapshot": b"\xff\xd8a", "thumbnail": b"\xff\xd8b"})
    store.touch(replace(open_event, last_at=T0 + 4, frames=40))
    done = store.start_event(record(T0 + 1))
    store.end_event(replace(done, end=T0 + 2, last_at=T0 + 2))
    assert [i.kind for i in store.outbox_after(0)] == ["event-start", "event-start", "event-end"]
    # no close(): as after kill -9, the next open closes the open event at its last frame
    again = EventStore.open(tmp_path)
    recovered = again.get(open_event.id)
    assert recovered is not None and recovered.end == T0 + 4 and recovered.frames == 40
    assert again.media_path(recovered.snapshot or "").read_bytes() == b"\xff\xd8a"
    assert again.outbox_after(3)[0].kind == "event-end" and again.outbox_after(3)[0].event_id == open_event.id
    assert again.integrity_check() == "ok"
    with pytest.raises(StoreError):
        again.media_path("../events.db")
    ids = [e.id for e in again.events()]
    assert ids == [done.id, open_event.id]  # newest first
    assert [e.id for e in again.events(before=done.id)] == [open_event.id]
    again.close()
    store.close()


def test_store_samples_and_cursors(tmp_path):
    store = EventStore.open(tmp_path, Budget(max_bytes=1 << 20, min_free_bytes=0))
    sample = store.add_sample("uncertain", "door", T0, b"j" * 1000, {"predictions": []})
    assert sample is not None and store.samples()[0].id == sample
    assert store.add_sample("uncertain", "door", T0, b"j" * (2 << 20), {}) is None  # over the budget
    store.add_outbox("result", new_id(), {"x": 1})
    store.set_cursor("uplink", store.outbox_head())
    assert store.cursor("uplink") == 1 and store.cursor("new") == 0
    assert store.prune_outbox(["uplink"], None) == 1 and store.outbox_after(0) == []
    store.close()


@pytest.mark.timeout(300)
def test_a_5mb_budget_holds_over_an_hour_of_events(tmp_path, colours):
    """One red appearance every 15 s for an hour (240 events with snapshots), time simulated."""
    budget_mb = 5
    cfg = EventsConfig(device="test", rules=[RuleConfig(name="all", tags=["red"], min_frames=2, end_after_s=2)],
                       store={"path": tmp_path, "max_mb": budget_mb, "min_free_mb": 0},
                       clip={"enabled": True, "pre_s": 1, "post_s": 1, "fps": 2, "width": 160, "codec": "mp4v"})
    store = EventStore.open(tmp_path, Budget(max_bytes=budget_mb << 20, min_free_bytes=0))
    recorder = Recorder(cfg, store, janitor=Janitor(store))
    feeder = Feeder(colours, fps=2)
    rng = np.random.default_rng(1)
    red, grey = colours.predict(solid(RED, 640, 480)), colours.predict(solid(GREY, 640, 480))
    noise = [rng.integers(0, 256, (240, 320, 3), np.uint8) for _ in range(4)]  # incompressible snapshots
    peak = 0
    for i in range(3600 * 2):
        is_red = (i % 30) < 6
        image = noise[i % 4]
        feeder.seq += 1
        feeder.now += 0.5
        frame = Frame("door", feeder.seq, feeder.now, time.monotonic(), image)
        recorder.process(FrameResult(frame, red if is_red else grey, 1.0, time.monotonic()))
        if i % 60 == 0:
            peak = max(peak, du(tmp_path))
    recorder.close()
    assert store.stats.started == 240 == store.stats.ended
    assert store.stats.evicted_media > 0  # the budget really was reached
    assert peak <= budget_mb << 20 and du(tmp_path) <= budget_mb << 20
    newest = store.events(limit=1)[0]
    assert newest.snapshot and newest.clip  # the newest keep their evidence
    assert store.count() == 240 or store.stats.evicted_records > 0
    assert store.integrity_check() == "ok"
    store.close()


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def test_clip_is_an_mp4_that_opencv_reads_back(tmp_path, colours):
    cfg = EventsConfig(rules=[RuleConfig(name="all", tags=["red"], min_frames=2, end_after_s=0.5)],
                       store={"path": tmp_path, "min_free_mb": 0},
                       clip={"enabled": True, "pre_s": 1, "post_s": 1, "fps": 10, "width": 320})
    store = EventStore.open(tmp_path, Budget(min_free_bytes=0))
    published: list[tuple[str, str, dict]] = []  # type: ignore[type-arg]
    recorder = Recorder(cfg, store, publish=lambda k, c, d: published.append((k, c, json.loads(d))))
    feeder = Feeder(colours, fps=10)
    for r in colour_frames(feeder, "." * 15 + "r" * 20 + "." * 20, size=(320, 240)):
        recorder.process(r)
    assert [p[0] for p in published] == ["event-start", "event-end"]
    end = published[1][2]
    assert end["clip"] == f"/api/events/{end['id']}/clip.mp4" and end["frames"] == 20
    event = store.get(end["id"])
    assert event is not None and event.clip
    capture = cv2.VideoCapture(str(store.media_path(event.clip)))
    frames = 0
    while capture.read()[0]:
        frames += 1
    assert frames >= 35  # 1 s before, 2 s of red, 0.5 s until the end, 1 s after (at 10 fps)
    snapshot = cv2.imdecode(np.frombuffer(store.media_path(event.snapshot or "").read_bytes(), np.uint8), 1)
    assert snapshot.shape == (240, 320, 3)
    recorder.close()
    store.close()


def test_disk_full_is_counted_not_raised_and_recording_resumes(tmp_path, colours):
    cfg = EventsConfig(rules=[RuleConfig(name="all", tags=["red"], min_frames=1, end_after_s=0.2)],
                       store={"path": tmp_path, "min_free_mb": 0})
    store = EventStore.open(tmp_path, Budget(min_free_bytes=0))
    recorder = Recorder(cfg, store)
    feeder = Feeder(colours)
    media = tmp_path / "media"
    shutil.rmtree(media)
    media.write_bytes(b"")  # media/ is a file now: every media write fails (an unusable disk)
    for r in colour_frames(feeder, "rr...."):
        recorder.process(r)
    assert store.stats.ended == 1 and store.stats.errors  # the record was kept, its pictures failed
    media.unlink()
    media.mkdir()
    for r in colour_frames(feeder, "rr...."):
        recorder.process(r)
    newest = store.events(limit=1)[0]
    assert newest.snapshot and store.media_path(newest.snapshot).is_file()
    recorder.close()
    store.close()


def test_a_newer_schema_is_refused_with_one_line(tmp_path):
    EventStore.open(tmp_path).close()
    with sqlite3.connect(tmp_path / "events.db") as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(StoreError, match="newer edge-runtime"):
        EventStore.open(tmp_path)


def test_times_and_default_data_dir():
    assert parse_time("2026-05-01T00:00:00Z") == parse_time("1777593600")
    assert abs(parse_time("30m", now=1000.0) - (1000.0 - 1800)) < 1e-9
    with pytest.raises(ValueError, match="not a time"):
        parse_time("yesterday")
    assert default_data_dir({}) == Path("data")
    assert default_data_dir({"INVOCATION_ID": "x"}) == Path("/var/lib/edge-runtime")
    assert default_data_dir({"STATE_DIRECTORY": "/srv/a:/srv/b"}) == Path("/srv/a")


def test_readme_event_examples_are_valid_settings():
    import re

    import yaml

    from edge_runtime.config import Settings

    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme[readme.index("## Events: remember and report"):readme.index("## Train and evaluate")]
    blocks = re.findall(r"```yaml\n(.*?)```", section, re.S)
    assert len(blocks) == 4  # the reference and one per user
    for block in blocks:
        Settings.model_validate(yaml.safe_load(block))


def test_retention_drops_oldest_media_then_records_but_keeps_records_for_a_full_disk(tmp_path):
    store = EventStore.open(tmp_path, Budget(max_bytes=1 << 30, min_free_bytes=0))
    for i in range(1500):
        e = store.start_event(record(T0 + i), {"snapshot": b"s" * 2000} if i >= 1400 else None)
        store.end_event(replace(e, end=T0 + i + 0.5))
    newest = store.events(limit=1)[0]
    # a disk full of other files: media go, oldest first, and every record stays
    store.budget = Budget(max_bytes=1 << 30, min_free_bytes=store.free_bytes() + (1 << 40))
    sweep = Janitor(store).run()
    assert sweep.media == 100 and sweep.records == 0 and store.count() == 1500
    # over the byte budget with no media left: the oldest records go until it fits
    store.budget = Budget(max_bytes=store.usage_bytes() // 2, min_free_bytes=0)
    sweep = Janitor(store).run()
    assert sweep.records > 0 and store.usage_bytes() <= store.budget.max_bytes
    kept = store.events(limit=2000)
    assert kept[0].id == newest.id and min(e.start for e in kept) > T0  # the oldest went first
    assert store.integrity_check() == "ok"
    store.close()


def test_a_rule_reads_only_the_head_of_a_many_tag_result():
    from edge_runtime.events.rules import Rule
    from edge_runtime.types import PredictionResult, Predictions

    names = tuple(f"tag{i}" for i in range(1000))
    probabilities = [0.9, 0.6] + [0.3 / 998] * 998
    lazy = Predictions(list(range(1000)), probabilities, names, None)
    frame = Frame("cam", 1, time.time(), time.monotonic(), np.zeros((4, 4, 3), np.uint8))
    result = FrameResult(frame, PredictionResult(lazy, 4, 4), 1.0, time.monotonic())
    found = Rule(RuleConfig(name="r", min_probability=0.5)).matches(result)
    assert sorted(found) == ["tag0", "tag1"]
    assert len(lazy._made) <= 3  # the 998 tags below the minimum were never made into objects


@pytest.mark.parametrize("text", ["nan", "inf", "-inf", "1e309", "99999999999999999999", "1000000y"])
def test_times_no_calendar_can_show_are_refused_in_one_line(text):
    with pytest.raises(ValueError, match="not a time") as err:
        parse_time(text)
    assert "\n" not in str(err.value)


def test_the_state_folder_has_one_resolver():
    from edge_runtime.paths import state_dir

    assert state_dir({}) is None
    assert state_dir({"INVOCATION_ID": "x"}) == Path("/var/lib/edge-runtime")
    assert state_dir({"STATE_DIRECTORY": "/srv/a:/srv/b", "INVOCATION_ID": "x"}) == Path("/srv/a")
    for env in ({}, {"INVOCATION_ID": "x"}, {"STATE_DIRECTORY": "/srv/a"}):
        assert default_data_dir(env) == (state_dir(env) or Path("data"))


def test_an_events_own_start_given_back_as_since_finds_it():
    """Times are shown cut down to the millisecond, never rounded up into the next one."""
    from edge_runtime.events.records import iso

    rng = np.random.default_rng(7)
    starts = [1790000000.1239996, 1790000000.9999996, *(T0 + rng.random(20000) * 1e5)]
    assert [t for t in starts if parse_time(iso(float(t))) > t] == []
    assert iso(1790000000.1239996) == "2026-09-21T14:13:20.123Z"
