"""The local detection trainer (exporter/detection/): real PyTorch, real onnxruntime, the runtime's own loader."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.predictor import Predictor
from exporter.dataset import DatasetError, load_dataset
from exporter.detection.augment import Sample, fit_anchors, mosaic, scaled
from tests.survey_util import geotagged_jpeg

torch = pytest.importorskip("torch")

TAGS = ("disc", "square")


def easy_set(root: Path, per_tag: int = 12, seed: int = 0, size: tuple[int, int] = (200, 150)) -> Path:
    """A red disc or a blue square on grey noise, one a picture, at known boxes (COCO, pixels)."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    w, h = size
    images, annotations = [], []
    for i in range(per_tag * len(TAGS)):
        tag = i % len(TAGS)
        image = rng.integers(90, 160, (h, w, 3), dtype=np.uint8)
        side = int(rng.integers(40, 70))
        x, y = int(rng.integers(0, w - side)), int(rng.integers(0, h - side))
        if tag == 0:
            cv2.circle(image, (x + side // 2, y + side // 2), side // 2, (0, 0, 230), -1)
        else:
            cv2.rectangle(image, (x, y), (x + side - 1, y + side - 1), (230, 40, 0), -1)
        cv2.imwrite(str(root / f"{i:03d}.png"), image)
        images.append({"id": i + 1, "file_name": f"{i:03d}.png", "width": w, "height": h})
        annotations.append({"id": i + 1, "image_id": i + 1, "category_id": tag + 1,
                            "bbox": [x, y, side, side], "area": side * side, "iscrowd": 0})
    (root / "annotations.json").write_text(json.dumps({
        "images": images, "annotations": annotations,
        "categories": [{"id": k + 1, "name": t} for k, t in enumerate(TAGS)]}))
    return root


def edge_export(*args: str, timeout: float = 1500) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True,
                          timeout=timeout)


def red_box(image: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero((image[..., 2] > 200) & (image[..., 0] < 50))
    s = image.shape[0]
    return np.array([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]) / s


def test_the_backbone_carries_the_demo_exports_weights():
    import onnxruntime as ort

    from edge_runtime.paths import DEMO_MODEL
    from exporter.detection.backbone import load_backbone

    x = np.random.default_rng(0).random((1, 3, 224, 224), dtype=np.float32)
    (expected,) = ort.InferenceSession(str(DEMO_MODEL / "model.onnx")).run(["features"], {"data": x})
    with torch.no_grad():
        c3, c4, c5 = load_backbone()(torch.from_numpy(x))
    assert c3.shape[-1] == 28 and c4.shape[-1] == 14 and c5.shape[-1] == 7
    np.testing.assert_allclose(c5.mean((2, 3)).numpy(), expected, atol=1e-4)


def test_scaling_and_flipping_move_the_boxes_with_the_pixels():
    image = np.full((160, 160, 3), 100, np.uint8)
    image[20:60, 90:150] = (0, 0, 255)
    sample = Sample(image, np.array([[90, 20, 150, 60]], np.float32) / 160, np.array([0]))
    rng = np.random.default_rng(3)
    for _ in range(20):
        moved = scaled(sample, rng)
        if len(moved.boxes) and moved.boxes[0, 2] < 0.99 and moved.boxes[0, 0] > 0.01:
            np.testing.assert_allclose(moved.boxes[0], red_box(moved.image), atol=2 / 160)


def test_a_mosaic_holds_four_smaller_boxes_where_their_pixels_are():
    rng = np.random.default_rng(5)
    quarters = []
    for k in range(4):
        image = np.full((160, 160, 3), 100, np.uint8)
        image[60:100, 60:100] = (0, 0, 255)
        quarters.append(Sample(image, np.array([[60, 60, 100, 100]], np.float32) / 160, np.array([k % 2])))
    made = mosaic(quarters, rng)
    assert len(made.boxes) >= 3
    assert all((b[2] - b[0]) < 0.2 for b in made.boxes)  # each shrunk to about a quarter's size
    for b in made.boxes:
        x0, y0, x1, y1 = (b * 160).round().astype(int)
        patch = made.image[y0:y1, x0:x1]
        assert ((patch[..., 2] > 200) & (patch[..., 0] < 50)).mean() > 0.8


def test_anchors_cluster_the_sizes_by_overlap():
    sizes = np.concatenate([np.full((20, 2), 2.0), np.full((20, 2), 8.0), [[2.0, 6.0]] * 20])
    anchors = fit_anchors(sizes + np.random.default_rng(0).normal(0, 0.05, sizes.shape), 3)
    assert anchors.shape == (3, 2) and np.all(np.diff(anchors.prod(1)) > 0)
    np.testing.assert_allclose(sorted(anchors.prod(1)), [4, 12, 64], rtol=0.15)
    assert fit_anchors(np.array([[3.0, 3.0]]), 5).shape == (5, 2)  # fewer sizes than anchors


# -- hostile COCO sets: a clear one-line reason each, and train writes nothing ----------------------
def _broken(root: Path, change) -> Path:
    easy_set(root, per_tag=6)
    coco = json.loads((root / "annotations.json").read_text())
    change(coco)
    (root / "annotations.json").write_text(json.dumps(coco).replace('"NAN"', "NaN"))
    return root


BROKEN = {
    "outside": (lambda c: c["annotations"][0].update(bbox=[150, 100, 80, 80]), "reaches outside the 200x150 image"),
    "zero width": (lambda c: c["annotations"][1].update(bbox=[10, 10, 0, 30]), "has no width or no height"),
    "nan": (lambda c: c["annotations"][2].update(bbox=[10, "NAN", 20, 30]), "not a finite number"),
    "unknown category": (lambda c: c["annotations"][3].update(category_id=7), "category 7 is not among"),
    "missing image": (lambda c: c["images"][4].update(file_name="gone.png"), "gone.png is named in"),
    "escaping name": (lambda c: c["images"][5].update(file_name="../outside.png"), "is outside the dataset folder"),
    "unknown image": (lambda c: c["annotations"][6].update(image_id=99), "image 99 is not among the images"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_a_broken_coco_set_is_refused_with_its_reason_and_nothing_is_written(tmp_path, case):
    change, reason = BROKEN[case]
    root = _broken(tmp_path / "set", change)
    dataset = load_dataset(root)
    assert len(dataset.report.errors) == 1 and reason in dataset.report.errors[0], dataset.report.errors
    proc = edge_export("train", str(root), "--out", str(tmp_path / "out"), "--no-progress", "--steps", "1",
                       timeout=120)
    assert proc.returncode == 1 and f"error: {dataset.report.errors[0]}" in proc.stdout
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("model.onnx"))


def test_an_annotation_that_is_not_an_object_refuses_the_file_in_one_line(tmp_path):
    root = _broken(tmp_path / "set", lambda c: c["annotations"].append([[[]]]))
    with pytest.raises(DatasetError, match="not usable COCO JSON"):
        load_dataset(root)
    proc = edge_export("train", str(root), "--out", str(tmp_path / "out"), "--no-progress", "--steps", "1",
                       timeout=120)
    assert proc.returncode == 1 and "not usable COCO JSON" in proc.stderr and "Traceback" not in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and not (tmp_path / "out").exists()


def test_bad_detector_settings_are_one_line_errors(tmp_path):
    root = easy_set(tmp_path / "set", per_tag=6)
    for flags, said in ((["--input-size", "100"], "--input-size must be a multiple of 32"),
                        (["--budget", "nan"], "--budget"), (["--steps", "0"], "--steps"),
                        (["--views", "-1"], "--views")):
        proc = edge_export("train", str(root), "--out", str(tmp_path / "out"), "--no-progress", *flags, timeout=120)
        assert proc.returncode == 1 and said in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_without_torch_the_error_names_the_extra(tmp_path):
    root = easy_set(tmp_path / "set", per_tag=6)
    blocker = tmp_path / "blocker"
    blocker.mkdir()
    (blocker / "torch.py").write_text("raise ImportError('no torch here')\n")
    env_path = f"{blocker}:{Path(__file__).resolve().parent.parent}"
    proc = subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(root), "--out", str(tmp_path / "out"),
                           "--no-progress"], capture_output=True, text=True, timeout=120,
                          env={"PYTHONPATH": env_path, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and "pip install 'edge-runtime[train]'" in proc.stderr, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


# -- a short real training, then the runtime uses the export as it uses a cloud one --------------
@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    work = tmp_path_factory.mktemp("detect")
    root = easy_set(work / "shapes", per_tag=12)
    proc = edge_export("train", str(root), "--out", str(work / "bundles"), "--no-progress", "--input-size", "128",
                       "--views", "160", "--steps", "300", "--int8", "--int8-max-drop", "100", "--int8-target", "arm64")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return work, root, proc


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_train_writes_a_custom_vision_detection_export(trained):
    work, _, proc = trained
    assert "mAP@0.5" in proc.stdout and "precision" in proc.stdout
    bundle = open_bundle(work / "bundles" / "shapes" / "v1")
    assert bundle.manifest["DomainType"] == "ObjectDetection" and bundle.labels == TAGS
    meta = bundle.metadata
    assert meta["CustomVision.Postprocess.Method"] == "Yolo"
    assert meta["CustomVision.Postprocess.Yolo.NmsThreshold"] == "0.45"
    assert len(json.loads(meta["CustomVision.Postprocess.Yolo.Biases"])) == 10
    assert meta["CustomVision.Preprocess.CropMethod"] == "NoCrop" and meta["CustomVision.Preprocess.ResizeMethod"] == (
        "Stretch")
    predictor = Predictor.load(work / "bundles" / "shapes" / "v1")
    output = next(o for o in predictor.model.outputs if o.name == "model_outputs0")
    assert list(output.shape) == [1, 5 * (5 + 2), 8, 8]
    info = json.loads((work / "bundles" / "shapes" / "v1" / "bundle.json").read_text())
    assert "mAP50" in info["metrics"] and {p["name"] for p in info["metrics"]["perTagPerformance"]} == set(TAGS)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_the_export_finds_the_object_where_it_is_in_predicts_json(trained, tmp_path):
    work, _, _ = trained
    fresh = easy_set(tmp_path / "fresh", per_tag=3, seed=9)  # pictures it never saw
    coco = json.loads((fresh / "annotations.json").read_text())
    hits = 0
    for image, truth in zip(coco["images"], coco["annotations"], strict=True):
        run = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "predict",
                              str(work / "bundles" / "shapes" / "v1"), str(fresh / image["file_name"]), "--json"],
                             capture_output=True, text=True, timeout=120)
        assert run.returncode == 0, run.stderr
        best = max(json.loads(run.stdout)["predictions"], key=lambda p: p["probability"])
        b = best["boundingBox"]
        left, top = b["left"] * image["width"], b["top"] * image["height"]  # pixels
        right, bottom = left + b["width"] * image["width"], top + b["height"] * image["height"]
        x, y, w, h = truth["bbox"]
        inter = max(0, min(right, x + w) - max(left, x)) * max(0, min(bottom, y + h) - max(top, y))
        iou = inter / ((right - left) * (bottom - top) + w * h - inter)
        hits += iou >= 0.5 and best["tagName"] == TAGS[truth["category_id"] - 1]
    assert hits >= 5, hits  # of 6


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_int8_works_for_a_detector(trained):
    work, _, proc = trained
    assert "box agreement" in proc.stdout and "written to" in proc.stdout
    int8 = open_bundle(work / "bundles" / "shapes" / "v1-int8")
    assert int8.manifest["Flavor"] == "ONNX-INT8" and int8.manifest["DomainType"] == "ObjectDetection"
    Predictor.load(work / "bundles" / "shapes" / "v1-int8", warm_up=True)


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_evaluate_reads_the_export_like_a_cloud_one(trained):
    work, root, _ = trained
    out = work / "figures.json"
    run = edge_export("evaluate", str(work / "bundles" / "shapes" / "v1"), str(root), "--no-progress",
                      "--json", str(out), timeout=300)
    assert run.returncode == 0, run.stderr
    figures = json.loads(out.read_text())
    assert figures["mAP50"] > 0.8 and figures["precision"] is not None and figures["recall"] > 0.7


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_serve_and_survey_use_the_export_like_a_cloud_one(trained, tmp_path):
    import httpx

    from tests.server_util import make_app, running

    work, root, _ = trained
    bundle = work / "bundles" / "shapes" / "v1"
    coco = json.loads((root / "annotations.json").read_text())
    first = coco["images"][0]
    app = make_app(Predictor.load(bundle), events={"store": {"path": str(tmp_path / "events.db")}})
    with running(app) as url:
        answer = httpx.post(f"{url}/image", content=(root / first["file_name"]).read_bytes(), timeout=60)
    assert answer.status_code == 200, answer.text
    best = max(answer.json()["predictions"], key=lambda p: p["probability"])
    assert best["boundingBox"] is not None and best["tagName"] == TAGS[coco["annotations"][0]["category_id"] - 1]
    photos = tmp_path / "photos"  # a survey maps photos by their GPS position: geotagged copies
    photos.mkdir()
    for k, image in enumerate(coco["images"][:4]):
        geotagged_jpeg(photos / f"{k}.jpg", cv2.imread(str(root / image["file_name"])), 47.0 + k * 1e-4, 8.0)
    survey = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "survey", str(bundle), str(photos),
                             "--out", str(tmp_path / "survey"), "--tiles", "off"],
                            capture_output=True, text=True, timeout=600)
    assert survey.returncode == 0, survey.stdout + survey.stderr
    assert "4 images and frames" in survey.stdout and " 0 skipped" in survey.stdout, survey.stdout
    findings = json.loads((tmp_path / "survey" / "findings.geojson").read_text())["features"]
    shown = {TAGS[a["category_id"] - 1] for a in coco["annotations"][:4]}
    assert {f["properties"]["tagName"] for f in findings} >= shown
