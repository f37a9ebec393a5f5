"""The customvision backend end to end: the real SDK over loopback against a REST double of the service.

The upload, resume, train and export logic is tested in memory in test_cloud_training.py;
these tests cover what only the real SDK and HTTP show: retries, errors, the CLI.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import zipfile

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.model.predictor import Predictor
from exporter.credentials import Credentials, guard_logs, load_credentials
from exporter.customvision import CloudError, CloudTraining, UploadState
from exporter.dataset import load_dataset
from exporter.sdk_client import SdkClient
from tests.cv_double import KEY, Faults
from tests.datasets import noise_dataset


def connect(url: str, sleeps: list[float]) -> SdkClient:
    return SdkClient.connect(Credentials(url, KEY), sleep=sleeps.append)


def test_full_run_with_throttling_and_a_server_error(cv_service, tmp_path):
    double, url = cv_service
    double.faults = Faults(throttle_first_upload=True, fail_once="/train")
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=40))
    sleeps: list[float] = []
    sdk = connect(url, sleeps)
    run = CloudTraining(sdk, UploadState.open(tmp_path / "state.json"), sleep=sleeps.append, poll_s=0.01)
    result = run.train(dataset, "shelf", "General (compact)")
    assert 2.0 in sleeps  # Retry-After honoured
    assert sdk.retries_done == 2  # the 429 and the 500
    assert result.upload.uploaded == 80 and not result.upload.failed
    assert double.batches == 2  # 64 + 16
    assert result.metrics.precision == pytest.approx(0.9) and len(result.metrics.per_tag) == 2
    zip_path = run.export(result.project_id, result.iteration_id, tmp_path / "dl")
    assert zipfile.is_zipfile(zip_path)
    assert Predictor.load(zip_path).spec.labels == ("red", "green")


def test_unknown_domains_and_bad_keys_are_clear(cv_service, tmp_path):
    _, url = cv_service
    dataset = load_dataset(noise_dataset(tmp_path / "data", per_tag=5))
    run = CloudTraining(connect(url, []), UploadState.open(tmp_path / "s.json"), poll_s=0.01)
    with pytest.raises(CloudError, match="General \\(compact\\)"):
        run.train(dataset, "p", "Food")
    with pytest.raises(CloudError, match="cannot be exported"):
        run.train(dataset, "p", "General")
    bad = SdkClient.connect(Credentials(url, "wrong-key"), sleep=lambda s: None)
    with pytest.raises(CloudError, match="401") as info:
        bad.domains()
    assert "wrong-key" not in str(info.value)


def cli(url: str, *args: str, key: str = KEY) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOMVISION_ENDPOINT": url, "CUSTOMVISION_TRAINING_KEY": key,
           "CUSTOMVISION_PREDICTION_RESOURCE_ID": "/subscriptions/x/resourceGroups/y"}
    return subprocess.run([sys.executable, "-m", "exporter.cli", "-v", *args, "--poll-seconds", "0.05"],
                          capture_output=True, text=True, timeout=300, env=env)


def test_cli_trains_exports_and_writes_a_bundle_without_leaking_the_key(cv_service, tmp_path):
    double, url = cv_service
    data = noise_dataset(tmp_path / "data", per_tag=8)
    out = tmp_path / "bundles"
    proc = cli(url, "train", str(data), "--backend", "customvision", "--project", "kiosk", "--out", str(out),
               "--publish", "prod", "--training-type", "Advanced", "--budget-hours", "2", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    (iteration,) = double.iterations.values()
    assert (iteration["trainingType"], iteration["reservedBudgetInHours"]) == ("Advanced", 2)
    assert "overall" in proc.stdout and "reported by Custom Vision" in proc.stdout
    figures = json.loads((out / "kiosk" / f"metrics-{iteration['id']}.json").read_text())
    assert figures["recall"] == pytest.approx(0.8) and len(figures["per_tag"]) == 2
    assert KEY not in proc.stdout + proc.stderr
    assert "DEBUG exporter.sdk_client: Custom Vision create_images_from_files" in proc.stderr  # verbose was on
    bundle = out / "kiosk" / "v1"
    info = json.loads((bundle / "bundle.json").read_text())
    assert info["source"]["backend"] == "customvision" and info["iteration"]
    assert info["metrics"]["precision"] == pytest.approx(0.9)
    assert double.published and double.published[0][1] == "prod"
    red_id = next(t["id"] for tags in double.tags.values() for t in tags if t["name"] == "red")
    assert info["tagIds"][0] == red_id
    result = Predictor.load(bundle).predict(np.full((50, 50, 3), (0, 0, 255), np.uint8))
    assert result.predictions[0].to_json()["tagId"] == red_id  # the service's tag id, as the cloud reports
    status = cli(url, "status", "--project", "kiosk", "--out", str(out))
    assert status.returncode == 0 and "Completed" in status.stdout and "16 images" in status.stdout


def test_a_wrong_sha1_in_the_download_is_refused(cv_service, tmp_path, cv_export_zip):
    double, url = cv_service
    tampered = tmp_path / "tampered.zip"
    with zipfile.ZipFile(cv_export_zip) as src, zipfile.ZipFile(tampered, "w") as dst:
        for name in src.namelist():
            data = src.read(name)
            if name == "cvexport.manifest":
                manifest = json.loads(data)
                manifest["ModelFileSHA1"] = "0" * 40
                data = json.dumps(manifest).encode()
            dst.writestr(name, data)
    double.export_zip = tampered
    data = noise_dataset(tmp_path / "data", per_tag=5)
    out = tmp_path / "bundles"
    proc = cli(url, "train", str(data), "--backend", "customvision", "--project", "bad", "--out", str(out),
               "--no-progress")
    assert proc.returncode == 1
    assert "SHA-1" in proc.stderr and "Traceback" not in proc.stderr
    assert not list((out / "bad").glob("v*"))


def test_credentials_come_from_env_or_file_and_stay_out_of_logs(tmp_path, caplog):
    file = tmp_path / "cv.json"
    file.write_text(json.dumps({"endpoint": "https://x.cognitiveservices.azure.com/", "training_key": "k-file"}))
    creds = load_credentials(file, env={})
    assert creds.endpoint == "https://x.cognitiveservices.azure.com" and "k-file" not in repr(creds)
    assert load_credentials(env={"CUSTOMVISION_ENDPOINT": "https://e", "CUSTOMVISION_TRAINING_KEY": "k-env"}
                            ).training_key == "k-env"
    with pytest.raises(ConfigError, match="CUSTOMVISION_TRAINING_KEY"):
        load_credentials(env={})
    caplog.set_level(logging.DEBUG)
    guard_logs("k-env")
    logging.getLogger("msrest.http_logger").warning("header Training-key: %s", "k-env")
    logging.getLogger("anything").error("failed with k-env in it")
    assert "k-env" not in caplog.text and "***" in caplog.text


def test_cli_exports_an_existing_iteration(cv_service, tmp_path):
    double, url = cv_service
    data = noise_dataset(tmp_path / "data", per_tag=5)
    out = tmp_path / "bundles"
    assert cli(url, "train", str(data), "--backend", "customvision", "--project", "again", "--out", str(out),
               "--no-progress").returncode == 0
    iteration = next(iter(double.iterations))
    proc = cli(url, "export", "--project", "again", "--iteration", iteration, "--out", str(out), "--no-progress",
               "--flavor", "OnnxFloat16")
    assert proc.returncode == 0, proc.stderr
    info = json.loads((out / "again" / "v2" / "bundle.json").read_text())
    assert info["iteration"] == iteration and info["flavor"] == "OnnxFloat16"
    assert double.exports[iteration]["flavor"] == "OnnxFloat16"  # asked for by its API name
    assert json.loads((out / "again" / "v1" / "bundle.json").read_text())["flavor"] == "ONNX"
    missing = cli(url, "export", "--project", "nope", "--iteration", iteration, "--out", str(out))
    assert missing.returncode == 1 and "no project named 'nope'" in missing.stderr
