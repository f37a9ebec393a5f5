"""`edge-runtime survey` end to end: geotagged photos and a video with its SRT, a real model.

The model (tests/test_survey_model.py) finds 14-pixel red squares only at native size,
so the whole-image pass misses what the tiles find.
"""

from __future__ import annotations

import csv
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge_runtime.cli import main
from edge_runtime.model.predictor import Predictor
from edge_runtime.survey.tiled import TiledPredictor
from edge_runtime.survey.tiling import TileMode
from tests.conftest import wait_for
from tests.survey_util import (
    BASE,
    EARTH,
    SQUARE,
    SRT_NEW,
    dji_xmp,
    geotagged_jpeg,
    metres_apart,
    place_squares,
    srt_time,
    terrain,
    track,
    write_detector,
    write_flight_video,
)

pytestmark = pytest.mark.timeout(180)  # a stuck pipeline fails instead of hanging

W, H = 2048, 1536
# Tiles of 512 with 20% overlap start at x = 0, 384, 768, 1152, 1536 and y = 0, 341, 683, 1024:
# these squares lie in overlaps (seen whole by two or four tiles) or are cut by a tile's edge.
SQUARES = [(460, 300), (511, 700), (770, 345), (1300, 450), (1230, 1027), (1800, 1200), (100, 1450)]
XMP = {"relative_alt": 60.0, "yaw": 30.0}
F35 = 24


@pytest.fixture(scope="module")
def detector_export(tmp_path_factory) -> Path:
    return write_detector(tmp_path_factory.mktemp("survey-model") / "export")


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("flight") / "photos"
    (folder / "day1").mkdir(parents=True)
    for i in range(2):
        image = terrain(W, H, seed=i)
        place_squares(image, SQUARES)
        geotagged_jpeg(folder / "day1" / f"DJI_000{i}.JPG", image, BASE[0] + i * 0.0004, BASE[1],
                       f35=F35, xmp=dji_xmp(**XMP))
    quiet = terrain(W, H, seed=9)  # nothing to find: a coverage point only
    geotagged_jpeg(folder / "DJI_0009.JPG", quiet, BASE[0] - 0.0004, BASE[1], xmp=dji_xmp(**XMP))
    return folder


def run(*args: object) -> int:
    return main(["survey", *(str(a) for a in args)])


def centre_px(feature: dict, width: int = W, height: int = H) -> tuple[float, float]:
    box = feature["properties"]["boundingBox"]
    return (box["left"] + box["width"] / 2) * width, (box["top"] + box["height"] / 2) * height


def findings_of(out: Path) -> list[dict]:
    features = json.loads((out / "findings.geojson").read_text())["features"]
    return [f for f in features if f["properties"]["tagName"] is not None]


def test_tiles_find_what_the_whole_image_misses_once_each(detector_export, photos, tmp_path):
    assert run(detector_export, photos, "--out", tmp_path / "off", "--tiles", "off") == 0
    assert findings_of(tmp_path / "off") == []

    assert run(detector_export, photos, "--out", tmp_path / "auto") == 0
    found = findings_of(tmp_path / "auto")
    for name in ("day1/DJI_0000.JPG", "day1/DJI_0001.JPG"):  # named by their path below the folder given
        mine = [f for f in found if f["properties"]["image"] == name]
        assert len(mine) == len(SQUARES)  # no duplicates where tiles overlap or cut a square
        for x, y in SQUARES:
            near = [f for f in mine if math.dist(centre_px(f), (x, y)) < 2.0]
            assert len(near) == 1, (name, x, y)
            # JPEG blurs the red edges by about a pixel on each side
            assert near[0]["properties"]["boundingBox"]["width"] * W == pytest.approx(SQUARE, abs=3)
    tiles = {f["properties"]["tile"] for f in found}
    assert "full" not in tiles and all(len(t.split(",")) == 4 for t in tiles)

    predictions = json.loads((tmp_path / "auto" / "predictions.json").read_text())
    assert set(predictions) == {"day1/DJI_0000.JPG", "day1/DJI_0001.JPG", "DJI_0009.JPG"}
    assert len(predictions["day1/DJI_0000.JPG"]["predictions"]) == len(SQUARES)
    assert predictions["DJI_0009.JPG"]["predictions"] == []
    rows = list(csv.DictReader((tmp_path / "auto" / "findings.csv").open()))
    assert len(rows) == len(found)
    assert [float(r["probability"]) for r in rows] == sorted((float(r["probability"]) for r in rows), reverse=True)
    annotated = sorted(p.name for p in (tmp_path / "auto" / "annotated").iterdir())
    assert len(annotated) == 2 and max(cv2.imread(str(tmp_path / "auto" / "annotated" / annotated[0])).shape) == 1600


def expected_position(lat0: float, lon0: float, x: float, y: float) -> tuple[float, float]:
    """The issue's nadir formulas, then a spherical step: independent of the runtime's code."""
    gsd = XMP["relative_alt"] * 36 / (F35 * W)
    u, v = (x - W / 2) * gsd, (H / 2 - y) * gsd
    t = math.radians(XMP["yaw"])
    east, north = u * math.cos(t) + v * math.sin(t), -u * math.sin(t) + v * math.cos(t)
    return east, north


def test_each_finding_lies_where_the_nadir_projection_puts_it(detector_export, photos, tmp_path):
    assert run(detector_export, photos, "--out", tmp_path) == 0
    features = json.loads((tmp_path / "findings.geojson").read_text())["features"]
    checked = 0
    for feature in features:
        props = feature["properties"]
        lon, lat = feature["geometry"]["coordinates"]
        if props["tagName"] is None:
            assert props["image"] == "DJI_0009.JPG"
            assert metres_apart((lat, lon), (BASE[0] - 0.0004, BASE[1])) < 0.01
            continue
        assert props["position"] == "ground" and props["time"] == "2026-11-28T10:15:30"
        lat0 = BASE[0] + 0.0004 * int(props["image"][-5])
        x, y = min(SQUARES, key=lambda s: math.dist(s, centre_px(feature)))  # where the square truly is
        east, north = expected_position(lat0, BASE[1], x, y)
        # the point reached by going `north` then `east` metres from the image position
        lat_e = lat0 + math.degrees(north / EARTH)
        lon_e = BASE[1] + math.degrees(east / (EARTH * math.cos(math.radians(lat_e))))
        assert metres_apart((lat, lon), (lat_e, lon_e)) < 1.0
        assert metres_apart((lat, lon), (lat0, BASE[1])) > 5  # really moved away from the image centre
        checked += 1
    assert checked == 2 * len(SQUARES)


def test_images_without_dji_attitude_use_the_image_position(detector_export, tmp_path):
    image = terrain(W, H)
    place_squares(image, [(300, 300)])
    folder = tmp_path / "in"
    folder.mkdir()
    geotagged_jpeg(folder / "plain.jpg", image, *BASE)  # EXIF GPS only
    geotagged_jpeg(folder / "oblique.jpg", image, *BASE, xmp=dji_xmp(60, 0, pitch=-45))
    geotagged_jpeg(folder / "flight-yaw.jpg", image, *BASE, xmp=dji_xmp(60, 90, gimbal_yaw=False))
    assert run(detector_export, folder, "--out", tmp_path / "out") == 0
    by_image = {f["properties"]["image"]: f for f in findings_of(tmp_path / "out")}
    for name in ("plain.jpg", "oblique.jpg"):
        assert by_image[name]["properties"]["position"] == "image"
        assert by_image[name]["geometry"]["coordinates"] == [BASE[1], BASE[0]]
    # FlightYawDegree stands in for the gimbal's yaw; yaw 90: up in the photo is east
    lon, lat = by_image["flight-yaw.jpg"]["geometry"]["coordinates"]
    assert by_image["flight-yaw.jpg"]["properties"]["position"] == "ground"
    assert lon > BASE[1] and lat > BASE[0]  # up (east) and left (north) of the centre


def test_video_frames_are_sampled_and_placed_on_the_srt_track(detector_export, tmp_path):
    video = write_flight_video(tmp_path / "DJI_0100.AVI")
    steps = [0.7 * i for i in range(6)]  # telemetry every 0.7 s: frames fall between entries
    video.with_suffix(".SRT").write_text("\n".join(
        SRT_NEW.format(n=i + 1, start=srt_time(t), end=srt_time(t + 0.7), sec=30 + t, lat=track(t)[0],
                       lon=track(t)[1]) for i, t in enumerate(steps)))
    out = tmp_path / "out"
    assert run(detector_export, video, "--out", out, "--every", "1") == 0
    found = findings_of(out)
    assert sorted(f["properties"]["image"] for f in found) == ["DJI_0100.AVI@1.0s", "DJI_0100.AVI@2.0s",
                                                               "DJI_0100.AVI@3.0s"]
    for feature in found:
        t = float(feature["properties"]["image"].split("@")[1][:-1])
        lon, lat = feature["geometry"]["coordinates"]
        assert metres_apart((lat, lon), track(t)) < 0.05
        assert feature["properties"]["position"] == "image"
        assert feature["properties"]["time"].startswith(f"2026-11-28T10:20:3{int(t)}")
    covered = json.loads((out / "findings.geojson").read_text())["features"]
    assert len(covered) == 4  # frames at 0, 1, 2, 3 s


def test_telemetry_from_a_csv_places_the_frames(detector_export, tmp_path):
    video = write_flight_video(tmp_path / "clip.avi")  # no SRT beside it
    telemetry = tmp_path / "track.csv"
    telemetry.write_text("time,lat,lon,alt\n" + "".join(f"{t},{track(t)[0]:.7f},{track(t)[1]:.7f},50\n"
                                                         for t in (0.0, 1.5, 4.0)))
    out = tmp_path / "out"
    assert run(detector_export, video, "--out", out, "--telemetry", telemetry, "--every", "2") == 0
    (feature,) = findings_of(out)  # frames at 0 and 2 s; the square is in the one at 2 s
    assert feature["properties"]["image"] == "clip.avi@2.0s"
    lon, lat = feature["geometry"]["coordinates"]
    assert metres_apart((lat, lon), track(2.0)) < 0.05
    assert feature["properties"]["time"] is None  # plain seconds say nothing of the wall clock

    assert run(detector_export, video, "--out", tmp_path / "none") == 1  # and without telemetry
    assert "no telemetry" in (tmp_path / "none" / "report.html").read_text()


def test_every_frame_sampled_gets_a_name_of_its_own(detector_export, tmp_path):
    video = write_flight_video(tmp_path / "clip.avi")
    telemetry = tmp_path / "track.csv"
    telemetry.write_text("time,lat,lon\n0,47.0,8.0\n4,47.001,8.0\n")
    assert run(detector_export, video, "--out", tmp_path / "out", "--telemetry", telemetry, "--every", "0.05") == 0
    names = list(json.loads((tmp_path / "out" / "predictions.json").read_text()))
    assert len(names) == 35 and names[:3] == ["clip.avi@0.00s", "clip.avi@0.10s", "clip.avi@0.20s"]


def test_bad_files_are_listed_the_run_goes_on_and_exits_1(detector_export, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    image = terrain(640, 480)
    place_squares(image, [(200, 200)])
    good = geotagged_jpeg(folder / "good.jpg", image, *BASE)
    (folder / "truncated.jpg").write_bytes(good.read_bytes()[:5000])
    (folder / "notes.jpg").write_text("not an image")
    cv2.imwrite(str(folder / "nogps.jpg"), image)
    (folder / "clip.avi").write_bytes(b"not a video")
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "survey", str(detector_export), str(folder),
                           "--out", str(out), "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1, proc.stderr
    assert "1 images and frames, 1 findings, 4 skipped" in proc.stdout
    assert "5/5" in proc.stderr and "img/s" in proc.stderr  # the progress bar
    report = (out / "report.html").read_text()
    for name, reason in (("truncated.jpg", "truncated"), ("notes.jpg", "not a JPEG, PNG, BMP, GIF or WebP image"),
                         ("nogps.jpg", "no GPS"), ("clip.avi", "no telemetry")):
        assert name in report and reason in report


def test_a_photo_the_model_fails_on_is_listed_and_the_run_goes_on(detector_export, tmp_path, monkeypatch):
    from edge_runtime.errors import InferenceError

    folder = tmp_path / "in"
    folder.mkdir()
    for name, width in (("a.jpg", 640), ("b.jpg", 800), ("c.jpg", 640)):  # b: the model fails on its tiles
        image = terrain(width, 480)
        place_squares(image, [(200, 200)])
        geotagged_jpeg(folder / name, image, *BASE)
    run_tiles = TiledPredictor.run

    def failing(self, prepared):
        if prepared.width == 800:
            raise InferenceError("model.onnx: inference failed: out of device memory")
        return run_tiles(self, prepared)

    monkeypatch.setattr(TiledPredictor, "run", failing)
    out = tmp_path / "out"
    assert run(detector_export, folder, "--out", out) == 1
    assert sorted(json.loads((out / "predictions.json").read_text())) == ["a.jpg", "c.jpg"]
    report = (out / "report.html").read_text()
    assert "b.jpg" in report and "out of device memory" in report


def test_resume_skips_what_is_done_and_redoes_a_cut_off_input(detector_export, photos, tmp_path, monkeypatch):
    monkeypatch.chdir(photos.parent)  # paths as people type them: relative
    out = tmp_path / "out"
    assert run(detector_export, "photos", "missing.jpg", "--out", out) == 1
    first = json.loads((out / "predictions.json").read_text())
    journal = out / "survey.jsonl"
    lines = journal.read_text().splitlines()
    # as if the battery died during the last image: its `done` line and half of a line are lost
    last_done = max(i for i, line in enumerate(lines) if '"type": "done"' in line)
    journal.write_text("\n".join(lines[:last_done]) + "\n" + lines[last_done][:20])
    redone = json.loads(lines[last_done])["input"]

    assert run(detector_export, "photos", "missing.jpg", "--out", out, "--resume") == 1
    second = json.loads((out / "predictions.json").read_text())
    assert set(second) == set(first)
    changed = {name for name in first if first[name]["id"] != second[name]["id"]}
    assert changed == {Path(redone).relative_to(photos.resolve()).as_posix()}  # only the cut-off image ran again
    assert len(findings_of(out)) == 2 * len(SQUARES)

    assert '{"input": "missing.jpg", "reason": "no such file or folder"' in (out / "report.html").read_text()
    assert journal.read_text().count("no such file") == 1

    assert run(detector_export, "photos", "--out", out) == 0  # without --resume: all again
    third = json.loads((out / "predictions.json").read_text())
    assert all(third[name]["id"] != second[name]["id"] for name in third)


def test_tiles_go_through_the_session_as_one_batch_unless_the_batch_is_fixed(tmp_path):
    image = terrain(1024, 768)
    place_squares(image, [(300, 300), (700, 500)])
    results, sizes = {}, {}
    for batch in ("N", 1):
        predictor = Predictor.load(write_detector(tmp_path / f"b{batch}", batch=batch))
        seen: list[int] = []
        infer = predictor.infer
        predictor.infer = lambda tensor, infer=infer, seen=seen: (  # type: ignore[method-assign]
            seen.append(len(tensor)) or infer(tensor))
        tiled = TiledPredictor(predictor, TileMode.parse("auto"), overlap=0.2)
        found = tiled.run(tiled.prepare(image))
        results[batch] = sorted(v for f in found for v in (f.prediction.bounding_box.left,
                                                           f.prediction.bounding_box.top))
        sizes[batch] = seen
    assert len(results["N"]) == 4 and results["N"] == pytest.approx(results[1])
    tiles = sum(sizes[1]) - 1  # the whole-image pass has its own shape
    assert sizes["N"] == [tiles, 1] and sizes[1] == [1] * (tiles + 1)


def test_batches_of_tiles_run_at_once_and_find_the_same(tmp_path):
    import threading

    image = terrain(1024, 768)
    place_squares(image, [(300, 300), (700, 500), (120, 650)])
    found, most = {}, {}
    for runs in (1, 2):
        predictor = Predictor.load(write_detector(tmp_path / f"r{runs}", batch=1), intra_op_threads=1, runs=runs)
        lock, state = threading.Lock(), {"now": 0, "most": 0}
        infer = predictor.infer

        def counted(tensor, infer=infer, lock=lock, state=state):
            with lock:
                state["now"] += 1
                state["most"] = max(state["most"], state["now"])
            try:
                time.sleep(0.005)  # long enough for the other run to start beside it
                return infer(tensor)
            finally:
                with lock:
                    state["now"] -= 1

        predictor.infer = counted  # type: ignore[method-assign]
        tiled = TiledPredictor(predictor, TileMode.parse("auto"), overlap=0.2)
        found[runs] = [(f.tile, f.prediction) for f in tiled.run(tiled.prepare(image))]
        most[runs] = state["most"]
    assert len(found[1]) == 3 and found[2] == found[1]  # the same findings, in the same order
    assert most == {1: 1, 2: 2}


def test_a_classifier_gives_a_grid_of_tiles(exports, tmp_path):
    image = np.full((768, 1024, 3), 128, np.uint8)
    image[0:300, 0:300] = (0, 0, 230)  # a red field in the top-left corner
    folder = tmp_path / "in"
    folder.mkdir()
    geotagged_jpeg(folder / "field.jpg", image, *BASE)
    assert run(exports["modern"], folder, "--out", tmp_path / "out", "--threshold", "0.6") == 0
    found = findings_of(tmp_path / "out")
    assert found and {f["properties"]["tagName"] for f in found} == {"red"}
    for f in found:
        box = f["properties"]["boundingBox"]
        assert box["left"] * 1024 < 300 and box["top"] * 768 < 300  # tiles that hold the field
        assert box["width"] * 1024 == pytest.approx(256, abs=1)  # the model's 256-pixel resize target


def test_flags_are_checked_in_one_line(detector_export, photos, tmp_path, capsys):
    (tmp_path / "file").write_text("")
    assert run(detector_export, photos, "--out", tmp_path / "file") == 1
    assert capsys.readouterr().err.strip() == f"edge-runtime: --out {tmp_path / 'file'}: File exists"
    for flags, words in ((["--tiles", "big"], "--tiles"), (["--overlap", "1.5"], "--overlap"),
                         (["--every", "0"], "--every"), (["--telemetry", str(tmp_path / "x.kml")], "telemetry")):
        assert run(detector_export, photos, "--out", tmp_path / "o", *flags) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and len(err.splitlines()) == 1


def test_without_the_survey_extra_the_error_names_it(detector_export, photos, tmp_path):
    code = ("import sys; sys.modules['tqdm'] = None; sys.modules['PIL'] = None\n"
            "from edge_runtime.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "survey", str(detector_export), str(photos), "--out",
                           str(tmp_path / "out")], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert proc.stderr.strip() == "edge-runtime: survey needs pillow and tqdm: pip install 'edge-runtime[survey]'"
    assert not (tmp_path / "out").exists()


def test_a_fixed_tile_size_is_used_as_given(detector_export, tmp_path):
    image = terrain(W, H)
    place_squares(image, [(1000, 700)])
    folder = tmp_path / "in"
    folder.mkdir()
    geotagged_jpeg(folder / "a.jpg", image, *BASE)
    assert run(detector_export, folder, "--out", tmp_path / "out", "--tiles", "640x480") == 0
    (finding,) = findings_of(tmp_path / "out")
    _, _, w, h = (int(v) for v in finding["properties"]["tile"].split(","))
    assert (w, h) == (640, 480)


def test_the_yolo_export_with_a_fixed_batch_still_runs(exports, tmp_path):
    """tests/models.py's YOLO export: its input is [1,3,H,W], so tiles run one at a time."""
    image = np.full((1200, 1600, 3), (40, 120, 60), np.uint8)
    image[100:164, 100:164] = (0, 0, 255)
    folder = tmp_path / "in"
    folder.mkdir()
    geotagged_jpeg(folder / "a.jpg", image, *BASE)
    assert run(exports["yolo"], folder, "--out", tmp_path / "out") == 0
    assert any(f["properties"]["tagName"] == "red" for f in findings_of(tmp_path / "out"))


def test_a_run_killed_midway_loses_nothing_on_resume(detector_export, tmp_path):
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(6):
        image = terrain(W, H, seed=20 + i)
        place_squares(image, [(400 + 100 * i, 600)])
        geotagged_jpeg(folder / f"P{i}.JPG", image, BASE[0] + i * 1e-4, BASE[1])
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "survey", str(detector_export), str(folder),
                             "--out", str(out)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    journal = out / "survey.jsonl"
    try:
        assert wait_for(lambda: journal.is_file() and '"type": "done"' in journal.read_text(), timeout=90)
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait(timeout=30)
    done_before = journal.read_text().count('"type": "done"')

    assert run(detector_export, folder, "--out", out, "--resume") == 0
    predictions = json.loads((out / "predictions.json").read_text())
    assert sorted(predictions) == [f"P{i}.JPG" for i in range(6)]
    assert sorted(f["properties"]["image"] for f in findings_of(out)) == [f"P{i}.JPG" for i in range(6)]
    lines = [json.loads(line) for line in journal.read_text().splitlines()]
    assert sorted(line["name"] for line in lines if line["type"] == "unit") == [f"P{i}.JPG" for i in range(6)]
    assert done_before >= 1
