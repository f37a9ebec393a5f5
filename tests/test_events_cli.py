"""`edge-runtime events list|export` as a process, on a store the real recorder filled."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.events.config import EventsConfig, RuleConfig
from edge_runtime.events.recorder import Recorder
from edge_runtime.events.store import Budget, EventStore
from exporter.dataset import load_dataset
from tests.events_util import Feeder


@pytest.fixture(scope="module")
def data(exports, tmp_path_factory) -> Path:
    """Six red and six green events with raw frames kept, and two samples."""
    from edge_runtime.model.predictor import Predictor

    folder = tmp_path_factory.mktemp("data")
    cfg = EventsConfig(device="drone-1", keep_frames=True,
                       rules=[RuleConfig(name="survey", min_probability=0.9, min_frames=2, end_after_s=0.3)],
                       store={"path": folder, "min_free_mb": 0})
    store = EventStore.open(folder, Budget(min_free_bytes=0))
    recorder = Recorder(cfg, store)
    feeder = Feeder(Predictor.load(exports["modern"]), camera="belly", fps=10)
    colours = {"r": (0, 0, 255), "g": (0, 255, 0), ".": (128, 128, 128)}
    for i, c in enumerate("rrr....ggg...." * 6):
        image = np.full((120, 160, 3), colours[c], np.uint8)
        cv2.putText(image, str(i), (110, 110), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (255, 255, 255), 1)  # unique frames
        recorder.process(feeder.result(image))
    recorder.close()
    red, grey = (cv2.imencode(".jpg", np.full((48, 64, 3), c, np.uint8))[1].tobytes() for c in colours.values()
                 if c != (0, 255, 0))
    store.add_sample("uncertain", "belly", feeder.now, red, {"predictions": [{"tagName": "red", "probability": .6}]})
    store.add_sample("random", "belly", feeder.now + 1, grey, {"predictions": []})
    store.close()
    return folder


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", "events", *args], capture_output=True,
                          text=True, timeout=60)


def test_list_as_table_and_json(data):
    out = cli("list", "--data", str(data))
    assert out.returncode == 0, out.stderr
    assert out.stdout.count(" red ") == 6 and out.stdout.count(" green ") == 6 and "12 events" in out.stdout
    events = json.loads(cli("list", "--data", str(data), "--json").stdout)
    assert len(events) == 12 and all(e["end"] and e["device"] == "drone-1" for e in events)
    assert [e["start"] for e in events] == sorted(e["start"] for e in events)  # oldest first
    later = json.loads(cli("list", "--data", str(data), "--json", "--since", events[6]["start"]).stdout)
    assert [e["id"] for e in later] == [e["id"] for e in events[6:]]


def test_export_dataset_is_read_by_the_exporter(data, tmp_path):
    out = tmp_path / "dataset"
    done = cli("export", "--data", str(data), "--out", str(out), "--format", "dataset", "--samples")
    assert done.returncode == 0, done.stderr
    assert "exported 12 events and 2 samples" in done.stdout
    dataset = load_dataset(out)
    counts = dataset.counts()
    assert counts["red"] == 7 and counts["green"] == 6  # six events and the uncertain sample
    assert len(list((out / "_unlabelled").glob("*.jpg"))) == 1
    frame = cv2.imread(str(next((out / "green").glob("*.jpg"))))
    _, g, r = frame[5, 5]
    assert g > 200 and r < 60  # the raw frame: no caption drawn in the corner
    assert np.all(frame[5:40, 5:100, 1] > 200)


def test_export_jsonl_and_csv_with_media(data, tmp_path):
    done = cli("export", "--data", str(data), "--out", str(tmp_path / "j"), "--samples")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (tmp_path / "j" / "events.jsonl").read_text().splitlines()]
    assert len(lines) == 12
    for line in lines:
        image = cv2.imread(str(tmp_path / "j" / line["files"]["snapshot"]))
        assert image is not None and image.shape == (120, 160, 3)
    samples = [json.loads(x) for x in (tmp_path / "j" / "samples.jsonl").read_text().splitlines()]
    assert [s["sampler"] for s in samples] == ["uncertain", "random"]
    assert (tmp_path / "j" / samples[0]["image"]).is_file()
    done = cli("export", "--data", str(data), "--out", str(tmp_path / "c"), "--format", "csv")
    rows = list(csv.DictReader((tmp_path / "c" / "events.csv").open()))
    assert len(rows) == 12 and {r["tag"] for r in rows} == {"red", "green"}
    assert all((tmp_path / "c" / r["snapshot_file"]).is_file() for r in rows)


def test_bad_input_is_one_line(tmp_path):
    missing = cli("list", "--data", str(tmp_path / "nowhere"))
    assert missing.returncode == 1 and missing.stderr.strip().count("\n") == 0
    assert "no event store" in missing.stderr
    EventStore.open(tmp_path).close()
    bad = cli("list", "--data", str(tmp_path), "--since", "last tuesday")
    assert bad.returncode == 1 and "--since" in bad.stderr and bad.stderr.strip().count("\n") == 0
