"""Labels in the event store: revisions, durability under kill -9, concurrent writers, the
retention exemption, and the model's dataset read back by `edge-export`'s own reader."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ExportError, LabelConflictError, LabelError
from edge_runtime.events.export import export_dataset, split_held_out
from edge_runtime.events.labels import Box, Label
from edge_runtime.events.records import Budget, EventRecord
from edge_runtime.events.retention import Janitor
from edge_runtime.events.store import EventStore
from exporter.dataset import Kind, load_dataset
from tests.conftest import jpeg_bytes, solid

RNG = np.random.default_rng(5)
RED, GREEN, BLUE = (0, 0, 255), (0, 255, 0), (255, 0, 0)
T0 = 1_790_000_000.0


def keep(store: EventStore, count: int, colour: tuple[int, int, int] = RED, start: float = T0,
         size: tuple[int, int] = (64, 48)) -> list[str]:
    ids = []
    for i in range(count):
        image = solid(colour, *size)
        image[:8, :8] = RNG.integers(0, 256, (8, 8, 3))  # distinct images: the exporter skips duplicates
        sample_id = store.add_sample("random", "door", start + i, jpeg_bytes(image), {"predictions": []})
        assert sample_id is not None
        ids.append(sample_id)
    return ids


@pytest.fixture()
def store(tmp_path: Path):  # type: ignore[no-untyped-def]
    s = EventStore.open(tmp_path / "data", Budget(min_free_bytes=0))
    yield s
    s.close()


def test_a_label_is_saved_over_its_revision_and_a_stale_save_gets_the_current_one(store):
    sample = keep(store, 1)[0]
    first = store.save_label(sample, "shelf", "classification", ["cola"], revision=0)
    assert first.revision == 1 and store.label(sample, "shelf") == first
    with pytest.raises(LabelConflictError) as stale:  # a second browser, which saw no label
        store.save_label(sample, "shelf", "classification", ["fanta"], revision=0)
    assert stale.value.current == first
    second = store.save_label(sample, "shelf", "classification", ["fanta"], revision=1)
    assert second.revision == 2 and store.label(sample, "shelf").tags == ("fanta",)
    other = store.save_label(sample, "door-model", "multilabel", ["cola", "new-tag"], revision=0)
    assert other.revision == 1  # another model's label of the same frame is its own
    with pytest.raises(LabelConflictError):
        store.delete_label(sample, "shelf", revision=1)
    assert store.delete_label(sample, "shelf", revision=2) and store.label(sample, "shelf") is None
    assert not store.delete_label(sample, "shelf")
    assert store.save_label(sample, "shelf", "classification", ["cola"], revision=0).revision == 1


@pytest.mark.parametrize(("kind", "tags", "boxes", "says"), [
    ("classification", ["a", "b"], [], "exactly one tag"),
    ("classification", [], [], "exactly one tag"),
    ("classification", ["../up"], [], "tag"),
    ("classification", [".hidden"], [], "tag"),
    ("classification", ["_negative"], [], "tag"),
    ("classification", [" padded"], [], "tag"),
    ("classification", ["x" * 65], [], "tag"),
    ("multilabel", ["a", "a"], [], "twice"),
    ("detection", [], [Box("a", math.nan, 0, 0.1, 0.1)], "finite"),
    ("detection", [], [Box("a", 0, 0, math.inf, 0.1)], "finite"),
    ("detection", [], [Box("a", -0.1, 0, 0.1, 0.1)], "inside"),
    ("detection", [], [Box("a", 0.5, 0.5, 0.6, 0.1)], "inside"),
    ("detection", [], [Box("a", 0.1, 0.1, 0, 0.1)], "inside"),
    ("detection", ["a"], [], "boxes"),
    ("multilabel", ["a"], [Box("a", 0, 0, 0.1, 0.1)], "not boxes"),
    ("segmentation", ["a"], [], "kind"),
])
def test_a_label_that_is_not_valid_is_refused_and_nothing_is_written(store, kind, tags, boxes, says):
    sample = keep(store, 1)[0]
    with pytest.raises(LabelError, match=says):
        store.save_label(sample, "m", kind, tags, boxes)
    assert store.labels("m") == []


def test_a_label_needs_a_kept_sample(store):
    with pytest.raises(LabelError, match="no sample"):
        store.save_label("01HZZZZZZZZZZZZZZZZZZZZZZZ", "m", "classification", ["a"])


def test_two_writers_on_different_samples_both_keep_all_their_labels(store):
    samples = keep(store, 40)
    errors: list[BaseException] = []

    def label(ids: list[str], tag: str) -> None:
        try:
            for sample_id in ids:
                store.save_label(sample_id, "shelf", "classification", [tag], revision=0)
        except BaseException as exc:  # reported below
            errors.append(exc)

    writers = [threading.Thread(target=label, args=(samples[::2], "even")),
               threading.Thread(target=label, args=(samples[1::2], "odd"))]
    for w in writers:
        w.start()
    for w in writers:
        w.join(30)
    assert not errors
    saved = {x.sample_id: x.tags[0] for x in store.labels("shelf")}
    assert saved == {s: ("even" if i % 2 == 0 else "odd") for i, s in enumerate(samples)}


def test_two_writers_on_one_sample_one_wins_and_the_other_is_told(store):
    sample = keep(store, 1)[0]
    outcomes: list[str] = []
    barrier = threading.Barrier(2)

    def save(tag: str) -> None:
        barrier.wait()
        try:
            store.save_label(sample, "shelf", "classification", [tag], revision=0)
            outcomes.append(f"saved {tag}")
        except LabelConflictError as exc:
            outcomes.append(f"conflict {exc.current.tags[0]}")

    threads = [threading.Thread(target=save, args=(t,)) for t in ("cola", "fanta")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    winner = store.label(sample, "shelf").tags[0]
    assert sorted(outcomes) == sorted([f"saved {winner}", f"conflict {winner}"])


WRITER = """
import sys
from pathlib import Path
from edge_runtime.events.store import EventStore
from edge_runtime.events.records import Budget
store = EventStore.open(Path(sys.argv[1]), Budget(min_free_bytes=0))
ids = sys.argv[2].split(",")
n = 0
while True:
    for sample_id in ids:
        current = store.label(sample_id, "shelf")
        saved = store.save_label(sample_id, "shelf", "classification", [f"t{n}"],
                                 revision=current.revision if current else 0)
        print(sample_id, saved.revision, saved.tags[0], flush=True)
        n += 1
"""


@pytest.mark.timeout(60)
def test_kill_9_of_a_writer_loses_no_saved_label(tmp_path: Path):
    data = tmp_path / "data"
    store = EventStore.open(data, Budget(min_free_bytes=0))
    samples = keep(store, 5)
    store.close()
    child = subprocess.Popen([sys.executable, "-c", WRITER, str(data), ",".join(samples)],
                             stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent.parent)
    told: dict[str, tuple[int, str]] = {}
    assert child.stdout is not None
    for _ in range(150):  # saves the child said were done
        sample_id, revision, tag = child.stdout.readline().split()
        told[sample_id] = (int(revision), tag)
    os.kill(child.pid, signal.SIGKILL)
    child.wait(10)
    store = EventStore.open(data, Budget(min_free_bytes=0))
    try:
        for sample_id, (revision, tag) in told.items():
            label = store.label(sample_id, "shelf")
            assert label is not None and label.revision >= revision  # it may have saved one more before dying
            if label.revision == revision:
                assert label.tags == (tag,)
        assert store.integrity_check() == "ok"
    finally:
        store.close()


def test_a_labelled_sample_is_exempt_from_retention(tmp_path: Path):
    store = EventStore.open(tmp_path / "data", Budget(max_bytes=10 << 20, max_age_s=3600, min_free_bytes=0))
    try:
        old = keep(store, 6, start=time.time() - 7200)  # older than max_age
        store.save_label(old[0], "shelf", "classification", ["cola"])
        store.save_label(old[1], "other", "detection", [], [Box("cola", 0.1, 0.1, 0.5, 0.5)])
        Janitor(store).run()
        assert {s.id for s in store.samples()} == {old[0], old[1]}
        assert store.media_path(store.sample(old[0]).image).is_file()
        tight = EventStore.open(tmp_path / "tight", Budget(max_bytes=400_000, min_free_bytes=0))
        ids = keep(tight, 8, size=(320, 240))
        tight.save_label(ids[0], "shelf", "classification", ["cola"])
        tight.budget = Budget(max_bytes=tight.usage_bytes() - 1, min_free_bytes=0)  # over: the oldest go first
        Janitor(tight).run()
        assert ids[0] in {s.id for s in tight.samples()} and ids[1] not in {s.id for s in tight.samples()}
        tight.close()
    finally:
        store.close()


def test_when_labelled_samples_alone_fill_the_budget_new_samples_are_refused(tmp_path: Path):
    store = EventStore.open(tmp_path / "data", Budget(max_bytes=10 << 20, min_free_bytes=0))
    try:
        ids = keep(store, 3, size=(320, 240))
        for sample_id in ids:
            store.save_label(sample_id, "shelf", "classification", ["cola"])
        store.budget = Budget(max_bytes=store.usage_bytes(), min_free_bytes=0)
        sweep = Janitor(store).run(extra=10_000)
        assert sweep.media == 0 and len(store.samples()) == 3  # nothing labelled goes
        assert store.add_sample("random", "door", T0 + 99, jpeg_bytes(solid(RED, 320, 240)), {}) is None
        assert store.stats.refused == 1
    finally:
        store.close()


def test_the_held_out_share_is_the_newest_labels_with_each_tag_where_it_can_be():
    labels = [Label(f"S{i:02d}", "m", "classification", ("a" if i < 8 else "b",), labelled_at=T0 + i)
              for i in range(10)]
    train, held = split_held_out(labels, 0.2)
    assert [x.sample_id for x in held] == ["S07", "S08", "S09"]  # the two newest (b, b) and the newest a
    assert len(train) == 7 and not {x.sample_id for x in train} & {x.sample_id for x in held}
    train, held = split_held_out(labels[:1], 0.2)
    assert len(train) == 1 and held == []  # one label: it trains
    assert split_held_out(labels, 0.0)[1] == []


def _classification_store(store: EventStore) -> list[str]:
    reds, greens = keep(store, 6, RED), keep(store, 6, GREEN, start=T0 + 100)
    for i, sample_id in enumerate(reds + greens):
        store.save_label(sample_id, "shelf", "classification", ["red" if sample_id in reds else "green"],
                         now=T0 + 1000 + i)
    return reds + greens


def test_a_classifiers_dataset_comes_out_in_folders_per_tag_with_the_newest_held_out(store, tmp_path):
    ids = _classification_store(store)
    base = tmp_path / "base"
    for i in range(3):
        (base / "blue").mkdir(parents=True, exist_ok=True)
        image = solid(BLUE, 32, 32)
        image[:8, :8] = RNG.integers(0, 256, (8, 8, 3))
        (base / "blue" / f"{i}.jpg").write_bytes(jpeg_bytes(image))
    counts = export_dataset(store, tmp_path / "out", "shelf", 0.2, base=base)
    assert (counts.kind, counts.train, counts.held_out, counts.base) == ("classification", 12, 3, 3)
    assert counts.tags == ("blue", "green", "red")
    train = load_dataset(tmp_path / "out" / "train")
    held = load_dataset(tmp_path / "out" / "held_out")
    assert train.kind == held.kind == Kind.CLASSIFICATION
    assert train.counts() == {"red": 5, "green": 4, "blue": 3}
    assert held.counts() == {"red": 1, "green": 2}  # the two newest (green), and the newest red
    assert {p.path.stem for p in held.items} == {ids[5], ids[10], ids[11]}
    assert not {p.path.stem for p in held.items} & {p.path.stem for p in train.items}


def test_a_multilabel_dataset_comes_out_as_labels_json(store, tmp_path):
    ids = keep(store, 10)
    for i, sample_id in enumerate(ids):
        store.save_label(sample_id, "m", "multilabel", ["cola", "can"] if i % 2 else ["fanta"], now=T0 + i)
    counts = export_dataset(store, tmp_path / "out", "m", 0.3)
    assert (counts.kind, counts.train, counts.held_out) == ("multilabel", 7, 3)
    train = load_dataset(tmp_path / "out" / "train")
    assert train.kind == Kind.MULTILABEL and set(train.tags) == {"cola", "can", "fanta"}
    held = json.loads((tmp_path / "out" / "held_out" / "labels.json").read_text())["images"]
    assert {e["file"] for e in held} == {f"{s}.jpg" for s in ids[7:]}


def test_a_detectors_dataset_comes_out_as_coco_with_boxes_in_pixels(store, tmp_path):
    ids = keep(store, 6, size=(200, 100))
    for i, sample_id in enumerate(ids):
        store.save_label(sample_id, "det", "detection", [], [Box("can", 0.25, 0.5, 0.5, 0.25),
                                                               Box("new-tag", 0.0, 0.0, 1.0, 1.0)], now=T0 + i)
    counts = export_dataset(store, tmp_path / "out", "det", 0.2)
    assert (counts.kind, counts.train, counts.held_out) == ("detection", 5, 1)
    train = load_dataset(tmp_path / "out" / "train")
    assert train.kind == Kind.DETECTION and set(train.tags) == {"can", "new-tag"}
    region = next(r for r in train.items[0].regions if r.tag == "can")
    assert (region.left, region.top, region.width, region.height) == (0.25, 0.5, 0.5, 0.25)
    coco = json.loads((tmp_path / "out" / "held_out" / "annotations.json").read_text())
    assert coco["images"][0]["file_name"] == f"{ids[5]}.jpg" and coco["images"][0]["width"] == 200
    assert sorted(a["bbox"] for a in coco["annotations"]) == [[0, 0, 200, 100], [50, 50, 100, 25]]


def test_labels_that_mix_boxes_and_tags_or_none_at_all_are_a_one_line_error(store, tmp_path):
    with pytest.raises(ExportError, match="no labels"):
        export_dataset(store, tmp_path / "out", "shelf")
    a, b = keep(store, 2)
    store.save_label(a, "m", "classification", ["x"])
    store.save_label(b, "m", "detection", [], [Box("x", 0, 0, 0.5, 0.5)])
    with pytest.raises(ExportError, match="mix"):
        export_dataset(store, tmp_path / "out", "m")


def test_a_base_dataset_that_names_a_file_outside_it_is_refused(store, tmp_path):
    _classification_store(store)
    base = tmp_path / "base"
    base.mkdir()
    (tmp_path / "secret.jpg").write_bytes(b"x")
    (base / "labels.json").write_text(json.dumps({"images": [{"file": "../secret.jpg", "tags": ["red"]}]}))
    with pytest.raises(ExportError, match="not an image file inside it"):
        export_dataset(store, tmp_path / "out", "shelf", base=base)


def test_an_events_clean_frame_is_labelled_through_a_sample_of_its_own(store):
    event = EventRecord("01J0000000000000000000000A", "r", "door", "red", T0, None, T0, 0.9, T0, 3,
                        box={"left": 0.1, "top": 0.1, "width": 0.2, "height": 0.2})
    store.start_event(event, {"snapshot": jpeg_bytes(solid(RED, 64, 48)), "frame": jpeg_bytes(solid(GREEN, 64, 48))})
    store.end_event(dataclasses.replace(event, end=T0 + 1))
    items = store.label_items("shelf")
    assert [(i.kind, i.sample.id) for i in items] == [("event", event.id)]
    sample = store.adopt_event_frame(event.id)
    assert sample is not None and sample.id == event.id and sample.sampler == "event"
    assert store.adopt_event_frame(event.id) == sample  # once
    assert store.media_path(sample.image).read_bytes() == jpeg_bytes(solid(GREEN, 64, 48))
    assert sample.prediction["predictions"][0]["tagName"] == "red"
    store.save_label(sample.id, "shelf", "classification", ["green"])
    store.delete(event.id)  # the event goes; the labelled frame stays
    assert [(i.kind, i.label.tags) for i in store.label_items("shelf")] == [("sample", ("green",))]
    assert store.media_path(sample.image).is_file()


def test_a_store_older_than_labels_gains_the_table_and_keeps_its_samples(tmp_path: Path):
    data = tmp_path / "data"
    old = EventStore.open(data, Budget(min_free_bytes=0))
    ids = keep(old, 2)
    old.close()
    db = sqlite3.connect(data / "events.db")  # as schema 2 left it: no labels table
    db.execute("DROP TABLE labels")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    readonly = EventStore.open_readonly(data)  # read-only: no labels, no error, and retention still reads it
    assert readonly.labels("m") == [] and len(readonly.label_items("m")) == 2
    assert [k for k, _, _ in readonly.oldest_with_media()] == ["sample", "sample"]
    readonly.close()
    store = EventStore.open(data, Budget(min_free_bytes=0))
    try:
        assert store.save_label(ids[0], "m", "classification", ["a"]).revision == 1
        assert [s.id for s in store.samples()] == ids
    finally:
        store.close()


def test_the_command_writes_a_models_dataset_and_refuses_model_without_dataset(tmp_path: Path, capsys):
    from edge_runtime.cli import main

    store = EventStore.open(tmp_path / "data", Budget(min_free_bytes=0))
    _classification_store(store)
    store.close()
    (tmp_path / "models" / "shelf").mkdir(parents=True)  # a store with no base dataset for the name
    args = ["events", "export", "--data", str(tmp_path / "data"), "--out", str(tmp_path / "out"),
            "--format", "dataset", "--model", "shelf", "--held-out", "0.25", "--models", str(tmp_path / "models")]
    assert main(args) == 0
    assert "exported 8 classification images" in capsys.readouterr().out
    assert load_dataset(tmp_path / "out" / "held_out").counts() == {"green": 3, "red": 1}
    assert main([*args[:-6], "--format", "jsonl", "--model", "shelf"]) == 1
    assert "--model: only with --format dataset" in capsys.readouterr().err
    assert main([*args[:-4], "--held-out", "nan"]) == 1
    assert "--held-out nan" in capsys.readouterr().err
