"""`edge-export push-labels`: a device's labels up to Custom Vision with the real training SDK
against the loopback double: tags created where missing, batches of 64, regions for boxes,
a 429 waited out, an image the project holds counted as there, nothing sent twice."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from edge_runtime.events.labels import Box
from edge_runtime.events.records import Budget
from edge_runtime.events.store import EventStore
from exporter.credentials import Credentials
from exporter.customvision import CloudTraining, UploadState
from exporter.push_labels import push_labels
from exporter.sdk_client import SdkClient
from exporter.training_client import CloudError
from tests.cv_double import DOMAINS, KEY
from tests.test_cv_pull import cli
from tests.test_labels import keep

MULTICLASS = DOMAINS[1]["id"]
DETECTION = DOMAINS[3]["id"]
pytestmark = pytest.mark.timeout(120)


def run_of(url: str, tmp_path: Path, sleeps: list[float]) -> CloudTraining:
    client = SdkClient.connect(Credentials(url, KEY), sleep=sleeps.append)
    return CloudTraining(client, UploadState.open(tmp_path / "state.json"), sleep=sleeps.append)


def test_classification_labels_go_up_in_batches_through_a_429_and_a_duplicate(cv_service, tmp_path):
    double, url = cv_service
    pid, _ = double.add_project("shelf", MULTICLASS, "Multiclass", [("red", "Regular")])
    store = EventStore.open(tmp_path / "data", Budget(min_free_bytes=0))
    ids = keep(store, 70)
    for i, sample_id in enumerate(ids):
        store.save_label(sample_id, "shelf", "classification", ["red" if i % 2 else "kiosk-new"])
    already = store.media_path(store.sample(ids[0]).image).read_bytes()
    double.images[pid][hashlib.sha1(already).hexdigest()] = "held-before"  # the project has this one
    double.faults.throttle_first_upload = True
    sleeps: list[float] = []
    report = push_labels(store, "shelf", pid, run_of(url, tmp_path, sleeps), tmp_path / "work")
    assert (report.uploaded, report.already_there, report.failed) == (69, 1, [])
    assert 2.0 in sleeps  # the 429's Retry-After
    assert double.batches == 2  # 64 + 6
    created = {t["name"]: t["id"] for t in double.tags[pid]}
    assert set(created) == {"red", "kiosk-new"}  # the new tag was created, the known one reused
    sent = {e["name"]: e["tagIds"] for e in double.uploaded[pid]}
    assert sent[f"{ids[1]}.jpg"] == [created["red"]] and sent[f"{ids[2]}.jpg"] == [created["kiosk-new"]]
    again = push_labels(store, "shelf", "shelf", run_of(url, tmp_path, sleeps), tmp_path / "work2")  # by name
    assert (again.uploaded, again.already_there) == (0, 70) and double.batches == 2  # nothing sent twice
    store.close()


def test_boxes_go_up_as_regions_and_a_project_of_the_other_kind_is_refused(cv_service, tmp_path):
    double, url = cv_service
    pid, _ = double.add_project("boxes", DETECTION, None, [])
    store = EventStore.open(tmp_path / "data", Budget(min_free_bytes=0))
    (sample,) = keep(store, 1)
    store.save_label(sample, "det", "detection", [], [Box("can", 0.25, 0.5, 0.5, 0.25)])
    report = push_labels(store, "det", pid, run_of(url, tmp_path, []), tmp_path / "work")
    assert report.uploaded == 1
    (entry,) = double.uploaded[pid]
    (region,) = entry["regions"]
    assert (region["left"], region["top"], region["width"], region["height"]) == (0.25, 0.5, 0.5, 0.25)
    assert region["tagId"] == next(t["id"] for t in double.tags[pid] if t["name"] == "can")
    classes, _ = double.add_project("classes", MULTICLASS, "Multiclass", [])
    with pytest.raises(CloudError, match="classification project"):
        push_labels(store, "det", classes, run_of(url, tmp_path, []), tmp_path / "work2")
    store.close()


def test_the_command_takes_the_key_from_the_environment_and_never_shows_it(cv_service, tmp_path):
    double, url = cv_service
    pid, _ = double.add_project("shelf", MULTICLASS, "Multiclass", [])
    store = EventStore.open(tmp_path / "data", Budget(min_free_bytes=0))
    for sample_id in keep(store, 3):
        store.save_label(sample_id, "shelf", "classification", ["cola"])
    store.close()
    result = cli(url, "push-labels", "--data", str(tmp_path / "data"), "--model", "shelf", "--project", pid,
                 "--out", str(tmp_path / "out"), "--no-progress", "--poll-seconds", "0.01")
    assert result.returncode == 0, result.stderr
    assert "labels of shelf: 3 images uploaded, 0 already there, 0 refused" in result.stdout
    assert KEY not in result.stdout + result.stderr
    missing = cli(url, "push-labels", "--data", str(tmp_path / "data"), "--model", "shelf", "--project", "nope",
                  "--out", str(tmp_path / "out"))
    assert missing.returncode == 1 and "no project with the id or name 'nope'" in missing.stderr
