"""The command line as a user runs it: real processes, real files, the shipped demo model."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests import models
from tests.conftest import DEMO, solid

SAMPLES = DEMO / "samples"
CATS = {"Egyptian cat", "tiger cat", "tabby"}


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *map(str, args)],
                          capture_output=True, text=True, timeout=120)


def test_demo_model_top1_on_the_sample_images():
    proc = run("predict", DEMO, *sorted(SAMPLES.glob("*.jpg")), "--json", "--top-k", "3")
    assert proc.returncode == 0, proc.stderr
    results = json.loads(proc.stdout)
    paths = sorted(SAMPLES.glob("*.jpg"))
    top = {path.stem: r["predictions"][0]["tagName"] for path, r in zip(paths, results, strict=True)}
    assert top["chelsea"] in CATS
    assert top["coffee"] == "espresso"
    assert top["rocket"] == "missile"
    assert all(len(r["predictions"]) == 3 for r in results)


def test_predict_single_image_json_is_one_object_sorted():
    proc = run("predict", DEMO, SAMPLES / "coffee.jpg", "--json", "--threshold", "0.01")
    assert proc.returncode == 0, proc.stderr
    body = json.loads(proc.stdout)
    probs = [p["probability"] for p in body["predictions"]]
    assert probs == sorted(probs, reverse=True) and min(probs) >= 0.01
    assert body["iteration"]


def test_human_output(exports, tmp_path):
    import cv2

    image = tmp_path / "red.png"
    cv2.imwrite(str(image), solid((0, 0, 255)))
    proc = run("predict", exports["yolo"], image)
    assert proc.returncode == 0, proc.stderr
    assert "red" in proc.stdout and "left" in proc.stdout


def test_inspect_json(exports):
    proc = run("inspect", exports["yolo"], "--json")
    assert proc.returncode == 0, proc.stderr
    info = json.loads(proc.stdout)
    assert info["variant"] == "yolo"
    assert info["input"]["resize"] == "ByPixelCountAlign32"
    assert info["input"]["height"] is None
    assert info["labels"] == ["red", "green"]
    assert "CPUExecutionProvider" in info["providers"]["available"]
    human = run("inspect", DEMO)
    assert "ByShorterSide" in human.stdout and "1000" in human.stdout


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode != 0
    assert "Traceback" not in proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_bad_images_fail_cleanly_and_lose_nothing(tmp_path):
    broken = tmp_path / "broken.jpg"
    broken.write_bytes((SAMPLES / "coffee.jpg").read_bytes()[:5000])
    proc = run("predict", DEMO, broken, SAMPLES / "coffee.jpg", "--json")
    assert "truncated" in one_line_error(proc)
    assert json.loads(proc.stdout)[0]["predictions"][0]["tagName"] == "espresso"


@pytest.mark.parametrize(("make", "message"), [
    (lambda d: models.write_export(d, b"not a model" * 50, models.COLOR_TAGS), "not an ONNX model"),
    (lambda d: models.write_export(d, models.onnx10_model(), models.COLOR_TAGS), "re-export"),
    (lambda d: models.write_export(d, models.color_classifier(), ("a",)), "labels.txt has 1 tags"),
    (lambda d: models.write_export(d, models.color_classifier(), models.COLOR_TAGS, sha1="ab" * 20), "SHA-1"),
    (lambda d: models.write_export(
        d, models.color_classifier(metadata=models.modern_metadata(**{"Image.NominalPixelRange": "X"})),
        models.COLOR_TAGS), "Image.NominalPixelRange"),
])
def test_bad_models_fail_with_one_line(tmp_path, make, message):
    folder = make(tmp_path / "export")
    assert message in one_line_error(run("predict", folder, SAMPLES / "coffee.jpg"))


def test_missing_model_and_unknown_provider(tmp_path):
    assert "no such file" in one_line_error(run("inspect", tmp_path / "nothing.zip"))
    assert "not available" in one_line_error(run("inspect", DEMO, "--provider", "tensorrt"))


def test_export_verify_command():
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "verify", str(DEMO)],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "SHA-1 verified" in proc.stdout and "1000 tags" in proc.stdout


def test_bench_prints_a_table(exports):
    proc = run("bench", exports["yolo"], "--iterations", "3")
    assert proc.returncode == 0, proc.stderr
    for stage in ("decode JPEG", "preprocess", "session.run", "postprocess", "predict (pre+run+post)"):
        assert f"| {stage} |" in proc.stdout
    assert "% of bare inference" in proc.stdout and "peak RSS" in proc.stdout


@pytest.mark.parametrize(("args", "flag"), [
    (("predict", DEMO, SAMPLES / "coffee.jpg", "--top-k", "-1"), "--top-k"),
    (("predict", DEMO, SAMPLES / "coffee.jpg", "--top-k", "0"), "--top-k"),
    (("predict", DEMO, SAMPLES / "coffee.jpg", "--threshold", "2"), "--threshold"),
    (("predict", DEMO, SAMPLES / "coffee.jpg", "--max-detections", "0"), "--max-detections"),
    (("bench", DEMO, "--iterations", "0"), "--iterations"),
    (("inspect", DEMO, "--threads", "-1"), "--threads"),
    (("serve", "--top-k", "0"), "--top-k"),
    (("serve", "--threshold", "nan"), "--threshold"),
])
def test_out_of_range_flags_are_one_line_errors(args, flag):
    line = one_line_error(run(*args))
    assert f"argument {flag}:" in line and "--help" in line


def test_top_k_limits_human_and_json_output_alike(exports, tmp_path):
    import cv2

    image = tmp_path / "red.png"
    cv2.imwrite(str(image), solid((0, 0, 255)))
    for model in (DEMO, exports["yolo"]):
        body = json.loads(run("predict", model, image if model != DEMO else SAMPLES / "coffee.jpg", "--json",
                              "--top-k", "1", "--threshold", "0.01").stdout)
        assert len(body["predictions"]) == 1
