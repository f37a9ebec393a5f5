"""`edge-export pull` with the real training SDK against the loopback double of the cv_service."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from exporter.credentials import Credentials
from exporter.dataset import Kind, load_dataset
from exporter.pull import Pull, RateLimiter, safe_name
from exporter.sdk_client import SdkClient
from exporter.training_client import CloudError
from exporter.verify import verify_export
from tests.cv_double import DOMAINS, KEY, Double, Faults

MULTICLASS = DOMAINS[1]["id"]
DETECTION = DOMAINS[3]["id"]
RNG = np.random.default_rng(5)

pytestmark = pytest.mark.timeout(120)


def png(width: int, height: int) -> bytes:
    image = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    ok, buf = cv2.imencode(".png", image)
    assert ok
    return buf.tobytes()


def puller(url: str, out: Path, sleeps: list[float], page: int = 8) -> Pull:
    client = SdkClient.connect(Credentials(url, KEY), sleep=sleeps.append, limiter=RateLimiter(1000))
    return Pull(client, out, page=page, sleep=sleeps.append, poll_s=0.01)


def classification_project(double: Double, per_tag: int = 12) -> tuple[str, dict[str, str], list[str]]:
    pid, tags = double.add_project("shelf", MULTICLASS, "Multiclass",
                                   [("red", "Regular"), ("green", "Regular"), ("Negative", "Negative")])
    ids = [double.add_image(pid, png(48 + i, 32), 48 + i, 32, [tags[t]]) for t in ("red", "green")
           for i in range(per_tag)]
    ids += [double.add_image(pid, png(40, 40), 40, 40, [tags["Negative"]]) for _ in range(3)]
    ids += [double.add_image(pid, png(30, 20), 30, 20) for _ in range(2)]
    return pid, tags, ids


def test_classification_comes_out_as_folders_check_reads_through_429_500_and_cut_downloads(cv_service, tmp_path):
    double, url = cv_service
    pid, tags, ids = classification_project(double)
    double.faults = Faults(throttle_once="/images/tagged", fail_once="/images/untagged",
                           cut_once={ids[0]}, truncate_once={ids[1]})
    sleeps: list[float] = []
    out = tmp_path / "shelf"
    summary = puller(url, out, sleeps).run("shelf", untagged=True)

    assert (summary.written["tagged"], summary.written["negative"], summary.written["untagged"]) == (24, 3, 2)
    assert not summary.refused and not summary.failed
    assert 1.0 in sleeps  # the listing's Retry-After
    assert double.downloads.count(ids[0]) == 2 and double.downloads.count(ids[1]) == 2  # cut, then whole
    assert len(double.downloads) == len(ids) + 2
    assert max(double.takes) == 8 and double.calls.count(f"GET /projects/{pid}/images/tagged") >= 4  # pages
    assert len(list((out / "_negative").iterdir())) == 3 and len(list((out / "_untagged").iterdir())) == 2
    for image_id in ids[:24]:  # originals, byte for byte
        found = list(out.glob(f"*/{image_id}.png"))
        assert len(found) == 1 and found[0].read_bytes() == double.blobs[image_id]
    dataset = load_dataset(out)
    assert dataset.kind is Kind.CLASSIFICATION and not dataset.report.errors
    assert sorted(dataset.tags) == ["green", "red"] and dataset.counts() == {"red": 12, "green": 12}
    info = json.loads((out / "project.json").read_text())
    assert {t["name"]: t["id"] for t in info["tags"]} == tags
    assert info["settings"]["classificationType"] == "Multiclass" and info["kind"] == "classification"
    assert "pulled shelf (classification): 24 tagged, 3 negative, 2 untagged" in summary.line()


def test_a_run_that_stopped_goes_on_without_fetching_anything_twice(cv_service, tmp_path):
    double, url = cv_service
    pid, tags, _ = classification_project(double)
    out = tmp_path / "shelf"
    puller(url, out, []).run("shelf")
    assert len(double.downloads) == 27
    # a killed run: the last page's rows never committed, one of its files never renamed into place
    with sqlite3.connect(out / ".pull" / "state.db") as db:
        rows = db.execute("SELECT id, file FROM images ORDER BY seq").fetchall()
        db.execute("DELETE FROM images WHERE id IN (?, ?)", (rows[-1][0], rows[-2][0]))
    last, uncommitted = {"id": rows[-1][0], "file": rows[-1][1]}, rows[-2][0]
    (out / last["file"]).rename(out / (last["file"] + ".part"))
    # and one file damaged on disk: its hash no longer matches
    damaged = {"id": rows[0][0], "file": rows[0][1]}
    (out / damaged["file"]).write_bytes(b"not the image")
    double.downloads.clear()
    summary = puller(url, out, []).run("shelf")
    assert sorted(double.downloads) == sorted([last["id"], uncommitted, damaged["id"]])
    assert summary.already_here == 24 and summary.written["tagged"] + summary.written["negative"] == 27
    double.downloads.clear()
    puller(url, out, []).run("shelf")
    assert double.downloads == []
    assert not load_dataset(out).report.errors
    # retagged in the service: the image moves to its new tag's folder, and only there
    record = double.stored[pid][0]
    record["tags"] = [{"tagId": tags["green"], "tagName": "green", "created": record["created"]}]
    puller(url, out, []).run("shelf")
    assert [p.parent.name for p in out.glob(f"*/{record['id']}.png")] == ["green"]
    assert load_dataset(out).counts() == {"red": 11, "green": 13}


def test_pages_are_the_services_256(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("many", MULTICLASS, "Multiclass", [("a", "Regular"), ("b", "Regular")])
    for i in range(300):
        double.add_image(pid, png(6 + i % 3, 5), 6 + i % 3, 5, [tags["ab"[i % 2]]])
    summary = puller(url, tmp_path / "many", [], page=256).run(pid)  # by id
    assert double.takes == [256, 256] and summary.written["tagged"] == 300
    with pytest.raises(ValueError):
        puller(url, tmp_path / "x", [], page=257)


def test_detection_boxes_come_out_in_pixels_of_each_image(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("boxes", DETECTION, None, [("cup", "Regular"), ("can", "Regular")])
    sizes = [(200, 100), (100, 300), (640, 480)]
    for i in range(15):
        w, h = sizes[i % 3]
        double.add_image(pid, png(w, h), w, h, regions=[(tags["cup"], 0.1, 0.2, 0.5, 0.25),
                                                        (tags["can"], 0.5, 0.5, 0.25, 0.5)])
    out = tmp_path / "boxes"
    summary = puller(url, out, []).run("boxes")
    assert summary.kind == "detection" and summary.written["tagged"] == 15
    coco = json.loads((out / "annotations.json").read_text())
    sizes_by_image = {i["id"]: (i["width"], i["height"]) for i in coco["images"]}
    cup = next(c["id"] for c in coco["categories"] if c["name"] == "cup")
    for a in coco["annotations"]:
        w, h = sizes_by_image[a["image_id"]]
        expected = [0.1 * w, 0.2 * h, 0.5 * w, 0.25 * h] if a["category_id"] == cup else [0.5 * w, 0.5 * h,
                                                                                            0.25 * w, 0.5 * h]
        assert a["bbox"] == pytest.approx(expected, abs=0.01)
    assert {(i["width"], i["height"]) for i in coco["images"]} == set(sizes)
    dataset = load_dataset(out)
    assert dataset.kind is Kind.DETECTION and not dataset.report.errors and not dataset.report.notices
    region = dataset.items[0].regions[0]
    assert (region.left, region.top, region.width, region.height) == pytest.approx((0.1, 0.2, 0.5, 0.25), abs=1e-3)


def test_multilabel_comes_out_as_labels_json(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("multi", MULTICLASS, "Multilabel", [("a", "Regular"), ("b", "Regular")])
    for i in range(10):
        double.add_image(pid, png(20, 30), 20, 30, [tags["a"]] + ([tags["b"]] if i % 2 else []),
                         metadata={"shelf": str(i)})
    double.add_image(pid, png(20, 30), 20, 30, [tags["b"]])
    out = tmp_path / "multi"
    puller(url, out, []).run("multi")
    dataset = load_dataset(out)
    assert dataset.kind is Kind.MULTILABEL and dataset.counts() == {"a": 10, "b": 6}
    labels = json.loads((out / "labels.json").read_text())["images"]
    assert {e["metadata"]["shelf"] for e in labels if e["metadata"]} == {str(i) for i in range(10)}


def cli(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "CUSTOMVISION_ENDPOINT": url, "CUSTOMVISION_TRAINING_KEY": KEY}
    return subprocess.run([sys.executable, "-m", "exporter.cli", "-v", *args], capture_output=True, text=True,
                          env=env, timeout=120, check=False)


def test_cli_pulls_iterations_performance_and_verified_exports_without_leaking_the_key(cv_service, tmp_path):
    double, url = cv_service
    pid, tags, _ = classification_project(double, per_tag=6)
    iid = double.add_iteration(pid)
    for _ in range(3):
        double.add_prediction(pid, png(20, 10), iid, [(tags["red"], 0.7, None), (tags["green"], 0.2, None)])
    out = tmp_path / "shelf"
    result = cli(url, "pull", "--project", "shelf", "--out", str(out), "--exports", "--predictions",
                 "--no-progress", "--poll-seconds", "0.01")
    assert result.returncode == 0, result.stderr
    assert KEY not in result.stdout + result.stderr
    assert "query_predictions" in result.stderr  # -v logged the calls, and not the key
    assert ("12 tagged, 3 negative, 3 predictions images (0 already here), 0 refused, 0 failed; "
            "1 exports verified") in result.stdout
    assert any(c.startswith("POST") and c.endswith(f"/iterations/{iid}/export") for c in double.calls)
    verified = verify_export(out / "_exports" / f"{iid}.zip")
    assert verified.tags == 2 and verified.sha1_checked
    info = json.loads((out / "project.json").read_text())
    iteration = info["iterations"][0]
    assert iteration["id"] == iid and iteration["export"] == f"_exports/{iid}.zip"
    assert iteration["performance"]["precision"] == pytest.approx(0.9)
    assert {t["name"] for t in iteration["performance"]["perTag"]} == {"red", "green", "Negative"}
    assert not load_dataset(out).report.errors  # _exports is not a tag
    assert cli(url, "check", str(out)).returncode == 0


def test_hostile_names_and_values_never_escape_the_dataset(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("evil", MULTICLASS, "Multiclass",
                                   [("../x", "Regular"), ("a/b", "Regular"), ("_negative", "Regular")])
    for name in tags:
        for i in range(5):
            double.add_image(pid, png(16, 12), 16, 12, [tags[name]], image_id=f"../../{name}/{i}")
    bad = double.add_project("evil2", DETECTION, None, [("cup", "Regular")])
    nan = double.add_image(pid, png(16, 12), 16, 12, [tags["a/b"]])
    double.stored[pid][-1]["regions"] = [{"tagId": tags["a/b"], "left": float("nan"), "top": 0, "width": 0.5,
                                          "height": 0.5}]
    huge = double.add_image(pid, png(16, 12), 16, 12, [tags["a/b"]])
    double.faults.huge_length = {huge}
    out = tmp_path / "data" / "evil"
    summary = puller(url, out, []).run("evil")
    assert len(summary.refused) == 1 and "not finite" in summary.refused[0] and "\n" not in summary.refused[0]
    assert len(summary.failed) == 1 and "over the" in summary.failed[0]
    assert double.downloads.count(huge) == 1  # refused on its header, not retried
    assert nan not in double.downloads
    assert summary.written["tagged"] == 15
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out.resolve() in p.resolve().parents for p in written)
    folders = sorted(p.name for p in out.iterdir() if p.is_dir() and not p.name.startswith("."))
    assert len(folders) == 3 and "_negative" not in folders and all("/" not in f and ".." not in f for f in folders)
    info = json.loads((out / "project.json").read_text())
    assert {t["name"] for t in info["tags"]} == set(tags)
    dataset = load_dataset(out)
    assert not dataset.report.errors and len(dataset.items) == 15
    assert bad  # a second project beside it changes nothing


def test_safe_names_and_the_rate_limiter():
    assert safe_name("red") == "red"
    assert safe_name("..") != ".." and "/" not in safe_name("a/b") and safe_name("a/b") != safe_name("a_b")
    assert not safe_name(".hidden").startswith(".")
    assert safe_name("_negative", frozenset({"_negative"})) != "_negative"
    now = [0.0]
    waits: list[float] = []

    def sleep(s: float) -> None:
        waits.append(s)
        now[0] += s

    limit = RateLimiter(10, clock=lambda: now[0], sleep=sleep)
    for _ in range(11):
        limit()
    assert now[0] == pytest.approx(1.0) and len(waits) == 10


def test_stored_predictions_come_out_apart_in_pixels_over_pages_resumable_and_hostile_ones_refused(cv_service,
                                                                                                   tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("boxes", DETECTION, None, [("cup", "Regular"), ("can", "Regular")])
    for _ in range(15):
        double.add_image(pid, png(64, 48), 64, 48, regions=[(tags["cup"], 0.1, 0.2, 0.5, 0.25),
                                                            (tags["can"], 0.5, 0.5, 0.25, 0.5)])
    iid = double.add_iteration(pid)
    sizes = [(200, 100), (100, 300)]
    good = [double.add_prediction(pid, png(*sizes[i % 2]), iid, [(tags["cup"], 0.9, (0.1, 0.2, 0.5, 0.25)),
                                                                 (tags["can"], 0.3, (0.5, 0.5, 0.25, 0.5))])
            for i in range(19)]
    good.append(double.add_prediction(pid, png(20, 10), iid, [(tags["can"], 0.6, None)],
                                      prediction_id="../../escaped"))
    for box in [(float("nan"), 0, 0.5, 0.5), (0, 0, 1e300, 0.5), (0, 0, float("inf"), 0.5)]:
        double.add_prediction(pid, png(20, 10), iid, [(tags["cup"], 0.5, box)])
    double.add_prediction(pid, png(20, 10), iid, [(tags["cup"], 7.0, None)])
    out = tmp_path / "data" / "boxes"
    summary = puller(url, out, []).run("boxes", predictions=True)

    assert summary.written["predictions"] == 20 and summary.written["tagged"] == 15
    assert len(summary.refused) == 4 and all("\n" not in r for r in summary.refused)
    assert sum("not finite" in r for r in summary.refused) == 2 and any("outside the image" in r
                                                                        for r in summary.refused)
    assert "20 predictions" in summary.line()
    # paged by continuation token: 24 stored, 8 a page; each later call sends the token it was given
    assert [q.get("continuation") for q in double.queries] == [None, "8", "16"]
    assert all(q["maxCount"] == 8 and q["orderBy"] == "Oldest" for q in double.queries)
    assert {q.get("session") for q in double.queries[1:]} == {"session-1"}
    listing = json.loads((out / "_predictions" / "predictions.json").read_text())["images"]
    assert [e["id"] for e in listing] == good
    for entry in listing:
        assert (out / "_predictions" / entry["file"]).read_bytes() == double.blobs[entry["id"]]
        assert entry["iteration"] == iid and entry["created"].startswith("2024-02-")
        w, h = entry["width"], entry["height"]
        first = entry["predictions"][0]
        if first["boundingBox"] is not None:
            assert first["tagName"] == "cup" and first["probability"] == pytest.approx(0.9)
            assert first["box"] == pytest.approx([0.1 * w, 0.2 * h, 0.5 * w, 0.25 * h], abs=0.01)
    written = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert all(out.resolve() in p.resolve().parents for p in written)
    assert not (tmp_path / "escaped").exists() and not (tmp_path / "data" / "escaped").exists()
    dataset = load_dataset(out)  # never mixed into the training set
    assert dataset.kind is Kind.DETECTION and len(dataset.items) == 15 and not dataset.report.errors
    coco = json.loads((out / "annotations.json").read_text())
    assert not any(i["file_name"].startswith("_predictions") for i in coco["images"])

    # resumable and hash-checked: one file damaged, nothing else fetched again
    damaged = out / "_predictions" / listing[3]["file"]
    damaged.write_bytes(b"not the image")
    double.downloads.clear()
    double.queries.clear()
    again = puller(url, out, []).run("boxes", predictions=True)
    assert double.downloads == [good[3]]
    assert again.written["predictions"] == 20 and again.already_here == 15 + 19
    assert json.loads((out / "_predictions" / "predictions.json").read_text())["images"] == listing


def test_a_service_that_repeats_its_continuation_token_does_not_loop(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("loop", MULTICLASS, "Multiclass", [("a", "Regular")])
    iid = double.add_iteration(pid)
    for _ in range(10):
        double.add_prediction(pid, png(20, 10), iid, [(tags["a"], 0.6, None)])
    client = SdkClient.connect(Credentials(url, KEY), limiter=RateLimiter(1000))
    results, token = client.query_predictions(pid, None, 4)
    assert len(results) == 4 and token.continuation == "4"
    token.continuation = None  # the service answers the first page again, with the same token
    results, again = client.query_predictions(pid, token, 4)
    assert len(results) == 4 and again.continuation == "4"
    again.continuation = "4"
    double.predictions[pid] = double.predictions[pid][:8]  # ... or hands back the token it was sent
    _, last = client.query_predictions(pid, again, 4)
    assert last is None


def test_a_page_that_breaks_the_apis_schema_is_one_clear_error(cv_service, tmp_path):
    double, url = cv_service
    pid, tags = double.add_project("odd", MULTICLASS, "Multiclass", [("a", "Regular")])
    double.add_prediction(pid, png(20, 10), double.add_iteration(pid), [(tags["a"], 0.6, None)])
    double.predictions[pid][0]["created"] = "not a date"
    with pytest.raises(CloudError, match="query_predictions: the answer does not follow the API's schema"):
        puller(url, tmp_path / "odd", []).run("odd", predictions=True)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_memory_stays_flat_as_the_project_grows(tmp_path):
    """scripts/bench_pull.py at a small size: the Python heap's peak once 2,000 images are
    pulled and the COCO file written is that of the first 512 (a state held in memory, or
    annotations built as one list, grow by several MB here)."""
    figures = tmp_path / "bench.json"
    result = subprocess.run([sys.executable, "scripts/bench_pull.py", "--images", "2000", "--at", "400",
                             "--calls-per-second", "1000", "--tracemalloc", "--json", str(figures)],
                            cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=280,
                            check=False)
    assert result.returncode == 0, result.stderr
    assert "pulled bench (detection): 2000 tagged images" in result.stdout and "heap peak MB" in result.stdout
    rows = json.loads(figures.read_text())["rows"]
    assert [r["images"] for r in rows] == [512, 2000]
    assert rows[1]["heapPeakMB"] - rows[0]["heapPeakMB"] < 1.0, rows
