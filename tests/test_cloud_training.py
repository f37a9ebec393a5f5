"""Upload, resume, train and export logic against the in-memory training client (no HTTP).

The end-to-end path, through the real SDK and a REST double, is in test_customvision.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edge_runtime.model.predictor import Predictor
from exporter.customvision import CloudTraining, UploadState, UploadStateError
from exporter.dataset import Dataset, Item, Kind, Report, load_dataset
from exporter.training_client import CloudError, DomainType, Flavor
from tests.datasets import coco_dataset, make_export_zip, noise_dataset
from tests.fake_training_client import DOMAINS, FakeTrainingClient


@pytest.fixture(scope="module")
def export_zip(tmp_path_factory) -> Path:
    return make_export_zip(tmp_path_factory.mktemp("cvexport"))


def training(client: FakeTrainingClient, state: Path) -> tuple[CloudTraining, list[float]]:
    sleeps: list[float] = []
    return CloudTraining(client, UploadState.open(state), sleep=sleeps.append, poll_s=0.5), sleeps


def test_train_uploads_in_batches_and_exports_a_loadable_zip(export_zip, tmp_path):
    client = FakeTrainingClient(export_zip)
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=40))
    progress: list[tuple[str, int, int]] = []
    run, sleeps = training(client, tmp_path / "state.json")
    run.progress = lambda *p: progress.append(p)
    result = run.train(dataset, "shelf", "general (COMPACT)")
    assert result.upload.uploaded == 80 and result.upload.already_there == 0 and not result.upload.failed
    assert client.batches == 2 and len(client.received) == 80  # 64 + 16
    assert sleeps == [0.5, 0.5]  # polled three times
    assert client.classification[result.project_id] == "Multiclass"
    assert client.projects_by_id[result.project_id].domain_id == DOMAINS[1].id
    assert sorted(result.tag_ids) == ["green", "red"] and result.metrics.precision == pytest.approx(0.9)
    assert ("upload", 80, 80) in progress
    saved = UploadState.open(tmp_path / "state.json")
    assert saved.project_id == result.project_id and len(saved.images) == 80 and saved.tags == result.tag_ids

    zip_path = run.export(result.project_id, result.iteration_id, tmp_path / "dl")
    assert list(client.exported) == [(result.iteration_id, Flavor.ONNX)]
    assert Predictor.load(zip_path).spec.labels == ("red", "green")


def test_a_run_broken_after_the_second_batch_resumes_without_duplicates(export_zip, tmp_path):
    client = FakeTrainingClient(export_zip, fail_uploads_after=2)
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=75))  # 150 images: 64 + 64 + 22
    state = tmp_path / "state.json"
    with pytest.raises(CloudError, match="503"):
        training(client, state)[0].train(dataset, "resume", "General (compact)")
    assert len(UploadState.open(state).images) == 128
    client.fail_uploads_after = None
    result = training(client, state)[0].train(dataset, "resume", "General (compact)")
    assert result.upload.uploaded == 22 and result.upload.already_there == 128
    assert len(client.received) == 150 and len(set(client.received)) == 150  # nothing sent twice
    assert len(client.projects_by_id) == 1 and len(client.tags_by_project[result.project_id]) == 2  # reused
    state.unlink()  # a lost state file: the service answers OKDuplicate, which counts as already there
    again = training(client, state)[0].train(dataset, "resume", "General (compact)")
    assert again.upload.already_there == 150 and again.upload.uploaded == 0


def test_a_state_file_of_another_project_is_started_afresh(export_zip, tmp_path):
    state = tmp_path / "state.json"
    state.write_text(json.dumps({"project_id": "gone", "tags": {}, "images": {"0" * 40: "x"}}))
    client = FakeTrainingClient(export_zip)
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=5))
    result = training(client, state)[0].train(dataset, "fresh", "General (compact)")
    assert result.upload.uploaded == 10 and "0" * 40 not in UploadState.open(state).images


def test_refused_images_are_reported_and_not_recorded(export_zip, tmp_path):
    items = [Item(Path(f"red/{i}.jpg"), ("red",), f"{i:040x}", bytes([i]) * 100) for i in range(5)]
    items.append(Item(Path("red/huge.jpg"), ("red",), "f" * 40, b"\xff" * (7 * 1024 * 1024)))
    dataset = Dataset(tmp_path, Kind.CLASSIFICATION, ["red"], items, Report())
    client = FakeTrainingClient(export_zip)
    run, _ = training(client, tmp_path / "state.json")
    result = run.train(dataset, "sizes", "General (compact)")
    assert result.upload.failed == [("red/huge.jpg", "ErrorImageSize")] and result.upload.uploaded == 5
    assert "f" * 40 not in run.state.images


def test_batches_respect_the_tag_limit():
    items = [Item(Path(f"{i}.jpg"), (f"t{i}",), f"{i:040x}", b"") for i in range(45)]
    assert [len(b) for b in CloudTraining.batches(items)] == [20, 20, 5]


def test_domains_are_checked_by_name_type_and_exportability(export_zip, tmp_path):
    run, _ = training(FakeTrainingClient(export_zip), tmp_path / "s.json")
    assert run.domain("General (compact)", Kind.DETECTION).type is DomainType.OBJECT_DETECTION
    assert run.domain("general (compact) [s1]", Kind.MULTILABEL).id == DOMAINS[2].id
    with pytest.raises(CloudError, match=r"choose one of: General \(compact\), General \(compact\) \[S1\]$"):
        run.domain("Food", Kind.CLASSIFICATION)
    with pytest.raises(CloudError, match="cannot be exported"):
        run.domain("General", Kind.CLASSIFICATION)


def test_a_project_on_another_domain_is_refused(export_zip, tmp_path):
    client = FakeTrainingClient(export_zip)
    client.create_project("shop", DOMAINS[2].id, "Multiclass")
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=5))
    with pytest.raises(CloudError, match="exists on another domain"):
        training(client, tmp_path / "s.json")[0].train(dataset, "shop", "General (compact)")


def test_detection_sets_upload_their_regions_with_the_services_tag_ids(export_zip, tmp_path):

    (tmp_path / "coco").mkdir()
    dataset = load_dataset(coco_dataset(tmp_path / "coco", count=6))
    client = FakeTrainingClient(export_zip)
    result = training(client, tmp_path / "s.json")[0].train(dataset, "boxes", "General (compact)")
    assert client.projects_by_id[result.project_id].domain_id == DOMAINS[3].id
    assert client.classification[result.project_id] is None
    held = list(client.images[result.project_id].values())
    assert len(held) == 6 and all(len(i.regions) == 1 and not i.tag_ids for i in held)
    assert {r.tag_id for i in held for r in i.regions} == {result.tag_ids["red"]}
    first = next(i for i in held if i.name == "0.png").regions[0]
    assert (first.left, first.top, first.width, first.height) == pytest.approx((64 / 608, 32 / 448, 32 / 608,
                                                                                 32 / 448))


def test_failed_and_slow_training_are_clear(export_zip, tmp_path):
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=5))
    failing = FakeTrainingClient(export_zip, training_outcome="Failed")
    with pytest.raises(CloudError, match=r"training iteration .* ended as Failed"):
        training(failing, tmp_path / "a.json")[0].train(dataset, "p", "General (compact)")
    slow = FakeTrainingClient(export_zip, polls_to_train=1000)
    with pytest.raises(CloudError, match="training did not finish within 0 s"):
        training(slow, tmp_path / "b.json")[0].train(dataset, "p", "General (compact)", timeout_s=0)


def test_a_float16_export_is_asked_for_once_and_publishing_needs_the_resource(export_zip, tmp_path):
    client = FakeTrainingClient(export_zip)
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=5))
    run, _ = training(client, tmp_path / "s.json")
    result = run.train(dataset, "p", "General (compact)")
    run.export(result.project_id, result.iteration_id, tmp_path / "a", Flavor.ONNX_FLOAT16)
    run.export(result.project_id, result.iteration_id, tmp_path / "b", Flavor.ONNX_FLOAT16)
    assert list(client.exported) == [(result.iteration_id, Flavor.ONNX_FLOAT16)]  # the second reused it
    with pytest.raises(CloudError, match="CUSTOMVISION_PREDICTION_RESOURCE_ID"):
        run.publish(result.project_id, result.iteration_id, "prod", "")
    run.publish(result.project_id, result.iteration_id, "prod", "/subscriptions/x")
    assert client.published == [(result.iteration_id, "prod")]


def test_flavors_map_to_the_api():
    assert Flavor.ONNX.api_value is None and Flavor.ONNX_FLOAT16.api_value == "OnnxFloat16"
    assert Flavor.from_api(None) is Flavor.ONNX and Flavor.from_api("") is Flavor.ONNX
    assert Flavor.from_api("onnxfloat16") is Flavor.ONNX_FLOAT16 and Flavor.from_api("ONNX12") is None


CORRUPT = {
    "not JSON": b'{"project_id": "p", "images": {',
    "binary": b"\x00\xff\xfe garbage",
    "a list": b"[1, 2]",
    "images not a map": b'{"project_id": "p", "images": ["a"]}',
    "project id a number": b'{"project_id": 7}',
}


@pytest.mark.parametrize("body", CORRUPT.values(), ids=CORRUPT.keys())
def test_a_corrupt_state_file_is_a_one_line_error(tmp_path, body):
    path = tmp_path / "state.json"
    path.write_bytes(body)
    with pytest.raises(UploadStateError) as info:
        UploadState.open(path)
    message = str(info.value)
    assert len(message.splitlines()) == 1 and str(path) in message and "delete it" in message


def test_the_cli_reports_a_corrupt_state_file_in_one_line(tmp_path):
    (tmp_path / ".state").mkdir()
    (tmp_path / ".state" / "shelf.json").write_text("{not json")
    env = {**os.environ, "CUSTOMVISION_ENDPOINT": "http://127.0.0.1:9", "CUSTOMVISION_TRAINING_KEY": "k" * 32}
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "status", "--project", "shelf", "--out",
                           str(tmp_path)], capture_output=True, text=True, timeout=60, env=env)
    assert proc.returncode == 1 and "Traceback" not in proc.stderr
    assert proc.stderr.count("\n") == 1 and "shelf.json is unreadable" in proc.stderr
