"""The exporter's offline path: dataset checks, the local trainer, bundles, evaluation."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.errors import ChecksumError
from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.predictor import Predictor
from exporter.dataset import DatasetError, Kind, load_dataset
from exporter.evaluate import evaluate
from exporter.local import train_local
from exporter.package import write_bundle, write_export
from tests import models
from tests.datasets import coco_dataset

RNG = np.random.default_rng(3)


def photo(color: tuple[int, int, int], size: int = 64) -> np.ndarray:
    image = np.clip(np.array(color, np.float32) + RNG.normal(0, 25, (size, size, 3)), 0, 255).astype(np.uint8)
    return image


def digits_dataset(root: Path, per_class: int = 20) -> Path:
    from sklearn.datasets import load_digits

    digits = load_digits()
    counts: dict[int, int] = {}
    for image, target in zip(digits.images, digits.target, strict=True):
        if counts.get(target, 0) >= per_class:
            continue
        counts[target] = counts.get(target, 0) + 1
        folder = root / f"digit{target}"
        folder.mkdir(parents=True, exist_ok=True)
        big = cv2.resize((image * 16).clip(0, 255).astype(np.uint8), (64, 64), interpolation=cv2.INTER_NEAREST)
        cv2.imwrite(str(folder / f"{counts[target]:02d}.png"), big)
    return root


@pytest.fixture(scope="module")
def digits(tmp_path_factory) -> Path:
    return digits_dataset(tmp_path_factory.mktemp("data") / "digits")


@pytest.fixture(scope="module")
def digits_bundle(digits, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundles")
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "train", digits.name, "--backend", "local",
                           "--out", str(out), "--no-progress"], capture_output=True, text=True, timeout=300,
                          cwd=digits.parent)  # the dataset named by a relative path
    assert proc.returncode == 0, proc.stderr
    assert "bundle:" in proc.stdout and "confusion matrix" in proc.stdout
    assert "digit0 digit1 digit2" in " ".join(proc.stdout.split())  # the columns are labelled
    return out / "digits" / "v1"


def test_dataset_checks_report_every_problem(tmp_path):
    root = tmp_path / "set"
    for tag, count in (("cat", 16), ("dog", 10), ("fox", 3)):
        (root / tag).mkdir(parents=True)
        for i in range(count):
            cv2.imwrite(str(root / tag / f"{i}.jpg"), photo((40 * i % 255, 80, 120)))
    good = (root / "cat" / "0.jpg").read_bytes()
    (root / "cat" / "copy.jpg").write_bytes(good)  # duplicate
    (root / "cat" / "cut.jpg").write_bytes(good[: len(good) // 2])  # truncated
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "cat" / "fake.jpg").write_text("not a jpeg either")
    noise = RNG.integers(0, 256, (1600, 1600, 3), dtype=np.uint8)
    cv2.imwrite(str(root / "dog" / "huge.png"), noise)  # about 7.7 MB
    assert (root / "dog" / "huge.png").stat().st_size > 6 * 1024 * 1024

    dataset = load_dataset(root)
    problems = {Path(f).name: (p, a) for f, p, a in dataset.report.notices}
    assert problems["copy.jpg"][1] == "skipped" and "duplicate" in problems["copy.jpg"][0]
    assert "truncated" in problems["cut.jpg"][0]
    assert problems["notes.txt"][1] == "skipped" and problems["fake.jpg"][1] == "skipped"
    assert "re-encoded" in problems["huge.png"][1]
    huge = next(i for i in dataset.items if i.path.name == "huge.png")
    assert len(huge.data) <= 6 * 1024 * 1024 and huge.data[:2] == b"\xff\xd8"
    assert dataset.counts() == {"cat": 16, "dog": 11, "fox": 3}
    assert any("fox" in e and "at least 5" in e for e in dataset.report.errors)
    assert any("dog" in w for w in dataset.report.warnings)
    summary = dataset.summary()
    for text in ("cut.jpg", "copy.jpg", "huge.png", "error: tag 'fox'", "PNG 1", "JPEG"):
        assert text in summary
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "check", str(root)], capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 1 and "tag 'fox' has 3 images" in proc.stdout


def test_multilabel_manifests(tmp_path):
    combos = {"r": ["red"], "g": ["green"], "rg": ["red", "green"], "b": []}
    rows = ["image,tags"]
    for i in range(24):
        name, tags = list(combos.items())[i % 4]
        color = (0, 255 if "green" in tags else 0, 255 if "red" in tags else 0)
        cv2.imwrite(str(tmp_path / f"{name}{i}.png"), photo(color))
        rows.append(f"{name}{i}.png,{';'.join(tags)}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    as_json = {"images": [{"file": r.split(",")[0], "tags": [t for t in r.split(",")[1].split(";") if t]}
                          for r in rows[1:]]}
    json_root = tmp_path / "json"
    json_root.mkdir()
    for row in rows[1:]:
        (json_root / row.split(",")[0]).write_bytes((tmp_path / row.split(",")[0]).read_bytes())
    (json_root / "labels.json").write_text(json.dumps(as_json))
    from_json = load_dataset(json_root)
    assert from_json.kind is Kind.MULTILABEL and from_json.counts() == {"red": 12, "green": 12}
    dataset = load_dataset(tmp_path)
    assert dataset.kind is Kind.MULTILABEL and dataset.tags == ["green", "red"]
    assert dataset.counts() == {"red": 12, "green": 12}
    result = train_local(dataset, copies=1)
    assert result.multilabel
    assert all(t.images > 0 for t in result.metrics.per_tag) and not result.metrics.warnings  # both held out
    folder = write_export(tmp_path / "export", result.model, result.labels, result.metadata)
    predictor = Predictor.load(folder)
    assert predictor.spec.variant.value == "multilabel"
    yellow = {p.tag_name: p.probability for p in predictor.predict(photo((0, 255, 255))).predictions}
    assert yellow["red"] > 0.5 and yellow["green"] > 0.5
    dark = {p.tag_name: p.probability for p in predictor.predict(photo((30, 30, 30))).predictions}
    assert dark["red"] < 0.5 and dark["green"] < 0.5, result.candidates  # the images with no tag were black


def test_local_trainer_on_digits_round_trips_through_the_runtime(digits, digits_bundle, tmp_path):
    info = json.loads((digits_bundle / "bundle.json").read_text())
    confusion = np.array(info["metrics"]["confusion"])
    assert confusion.trace() / confusion.sum() >= 0.85  # held-out top-1 accuracy
    assert info["source"]["backend"] == "local" and len(info["labels"]) == 10
    assert info["source"]["dataset"] == str(digits.resolve())  # absolute, though the command named it relatively
    assert set(info["files"]) >= {"model.onnx", "labels.txt", "cvexport.manifest", "metadata_properties.json"}
    bundle = open_bundle(digits_bundle)
    assert bundle.manifest["ModelFileSHA1"] == info["files"]["model.onnx"]
    sample = sorted((digits / "digit7").glob("*.png"))[0]
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "predict", str(digits_bundle), str(sample),
                           "--json", "--top-k", "1"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["predictions"][0]["tagName"] == "digit7"


def test_evaluate_reports_per_tag_figures_and_a_confusion_matrix(digits, digits_bundle, tmp_path):
    out = tmp_path / "eval.json"
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "evaluate", str(digits_bundle), str(digits),
                           "--json", str(out), "--no-progress"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "confusion matrix" in proc.stdout and "digit9" in proc.stdout
    figures = json.loads(out.read_text())
    assert len(figures["per_tag"]) == 10 and figures["average_precision"] > 0.9
    assert sum(map(sum, figures["confusion"])) == 200


def test_an_os_error_while_writing_is_one_line_not_a_traceback(digits, digits_bundle, tmp_path):
    """edge-export shares edge-runtime's handler: a full disk or a missing folder is one line."""
    import resource
    import signal

    def small_files() -> None:  # a disk that takes 1 KB a file, as a full one would refuse the rest
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (1024, 1024))

    command = [sys.executable, "-m", "exporter.cli", "evaluate", str(digits_bundle), str(digits), "--no-progress"]
    for out, preexec, message in ((tmp_path / "missing" / "eval.json", None, "No such file or directory"),
                                  (tmp_path / "eval.json", small_files, "File too large")):
        proc = subprocess.run([*command, "--json", str(out)], capture_output=True, text=True, timeout=300,
                              preexec_fn=preexec)
        assert proc.returncode == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("edge-export: ") and lines[0].endswith(message), lines


def test_a_second_training_run_is_a_new_version(digits_bundle):
    export = digits_bundle
    second, verified = write_bundle(digits_bundle.parent.parent, "digits", export, {"source": {"backend": "copy"}})
    assert second.name == "v2" and verified.tags == 10


def test_a_bundle_that_fails_verification_is_not_kept(tmp_path):
    folder = models.write_export(tmp_path / "bad", models.color_classifier(), models.COLOR_TAGS, sha1="0" * 40)
    with pytest.raises(ChecksumError):
        write_bundle(tmp_path / "out", "bad", folder, {})
    assert not any((tmp_path / "out" / "bad").glob("v*"))


def test_local_backend_refuses_detection(tmp_path):
    coco = coco_dataset(tmp_path)
    with pytest.raises(DatasetError, match="train_local trains classifiers"):
        train_local(load_dataset(coco))


def test_detection_evaluation_gives_map50(exports, tmp_path):
    dataset = load_dataset(coco_dataset(tmp_path))
    assert dataset.kind is Kind.DETECTION and dataset.counts()["red"] == 8
    metrics = evaluate(Predictor.load(exports["yolo"]), dataset)
    per_tag = dict(metrics.per_tag)
    assert per_tag["red"] > 0.95 and metrics.map50 > 0.95
    assert "mAP@0.5" in metrics.table()


@pytest.mark.slow
def test_train_int8_writes_a_quantised_sibling_calibrated_on_the_training_images(digits, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(digits), "--backend", "local",
                           "--out", str(tmp_path), "--no-progress", "--int8", "--int8-max-drop", "100",
                           "--int8-target", "arm64"],
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "top-1 agreement" in proc.stdout and "written to" in proc.stdout
    int8 = open_bundle(tmp_path / "digits" / "v1-int8")
    assert int8.manifest["Flavor"] == "ONNX-INT8" and int8.labels == open_bundle(tmp_path / "digits" / "v1").labels
    info = json.loads((tmp_path / "digits" / "v1-int8" / "bundle.json").read_text())
    assert info["calibration"] == str(digits.resolve()) and info["figures"]["frames"] == 200
    assert info["int8"] == {"target": "arm64", "weightBits": 8}  # --int8-target reached quantize
    sample = next((digits / "digit3").iterdir())
    assert Predictor.load(tmp_path / "digits" / "v1-int8").predict(cv2.imread(str(sample))).predictions


def test_a_bad_int8_target_is_a_one_line_usage_error(digits, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(digits), "--int8", "--int8-target",
                           "sparc"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "--int8-target: invalid choice: 'sparc'" in proc.stderr and "x86-vnni" in proc.stderr
    assert not (tmp_path / "bundles").exists()


def test_int8_is_refused_for_the_cloud_backend_in_one_line(digits, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(digits), "--backend", "customvision",
                           "--int8"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and proc.stderr.strip().count("\n") == 0 and "local backend" in proc.stderr


def arrows(root: Path, per_tag: int = 14) -> Path:
    """Left and right arrows, one the mirror of the other: flipping turns one tag into the other."""
    rng = np.random.default_rng(3)
    for tag, sign in (("left", -1), ("right", 1)):
        (root / tag).mkdir(parents=True)
        for i in range(per_tag):
            image = np.full((96, 96, 3), int(rng.integers(150, 230)), np.uint8)
            cx, cy, half = 48 + int(rng.integers(-8, 9)), 48 + int(rng.integers(-8, 9)), 22
            tip, back = (cx + sign * half, cy), cx - sign * half
            cv2.fillPoly(image, [np.array([tip, (back, cy - half), (back, cy + half)], np.int32)], (30, 30, 160))
            cv2.imwrite(str(root / tag / f"{i:02d}.png"), image)
    return root


def test_the_trainer_chooses_its_recipe_by_cross_validation_and_leaves_flips_out_when_they_hurt(tmp_path):
    from exporter.local import train_local

    result = train_local(load_dataset(arrows(tmp_path / "arrows")), copies=2)
    scores = dict(result.candidates)
    flips = next(score for name, score in scores.items() if name.startswith("flips"))
    assert not result.recipe.startswith("flips"), scores  # a flipped left arrow is a right arrow
    assert scores[result.recipe] == max(scores.values()) and scores[result.recipe] > flips
    assert any(name.startswith("plain probe") for name in scores)  # the plain probe is always a candidate
    assert result.metrics.per_tag and result.metrics.precision > 0.9
