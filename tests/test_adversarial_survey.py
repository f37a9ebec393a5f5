"""Hostile flight data for `edge-runtime survey`: values that are not numbers or not on the
globe, GPX points that are not points, journals that are damaged or from another run,
and a million-point track.

Every output is read back with a strict JSON parser (NaN and Infinity are not JSON, and
report.html's JSON.parse stops at them). A bad value makes a position unknown and is
listed as a problem; it never reaches the files. The memory case parses a real 1,000,000
point GPX file in a subprocess and reads its peak RSS: `pytest -m adversarial` runs it.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_runtime.cli import main
from edge_runtime.errors import ConfigError
from edge_runtime.survey.geo import ImageGeo, locate
from edge_runtime.survey.outputs import write_outputs
from edge_runtime.survey.records import Journal, UnitRecord
from edge_runtime.survey.report import PLACEHOLDER, render
from edge_runtime.survey.telemetry import parse_gpx, parse_srt, read_track
from tests.survey_util import (
    BASE,
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


def strict(text: str) -> object:
    """json.loads that refuses NaN and Infinity, as JSON.parse in a browser does."""
    def refuse(constant: str) -> None:
        raise ValueError(f"{constant} is not JSON")
    return json.loads(text, parse_constant=refuse)


def report_json(out: Path) -> dict[str, Any]:
    html = (out / "report.html").read_text()
    match = re.search(r'<script id="survey-data" type="application/json">(.*?)</script>', html, re.S)
    assert match and match[1] != PLACEHOLDER
    data = strict(match[1].replace("<\\/", "</"))
    assert isinstance(data, dict)
    return data


def read_outputs(out: Path) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """(findings.geojson features, report data), every file checked to be strict JSON."""
    features = strict((out / "findings.geojson").read_text())["features"]  # type: ignore[index]
    strict((out / "predictions.json").read_text())
    for line in (out / "survey.jsonl").read_text().splitlines():
        strict(line)
    return features, report_json(out)


def survey(*args: object) -> int:
    return main(["survey", *(str(a) for a in args)])


@pytest.fixture(scope="module")
def detector(tmp_path_factory) -> Path:
    return write_detector(tmp_path_factory.mktemp("adv-survey-model") / "export")


def photo(path: Path, xmp: bytes | None = None, lat: float = BASE[0], lon: float = BASE[1], **kw) -> Path:
    image = terrain(640, 480)
    place_squares(image, [(200, 150)])  # up and left of the centre: a ground position moves away
    return geotagged_jpeg(path, image, lat, lon, xmp=xmp, **kw)


# -- 1 and 2: values that are not finite, or not on the globe ---------------------------------


def test_non_finite_and_out_of_range_attitude_keeps_the_image_position(detector, tmp_path, capsys):
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "good.jpg", dji_xmp(60, 30))
    photo(folder / "inf-alt.jpg", dji_xmp(math.inf, 30))
    photo(folder / "nan-yaw.jpg", dji_xmp(60, math.nan))
    photo(folder / "inf-pitch.jpg", dji_xmp(60, 30, pitch=-math.inf))
    photo(folder / "high.jpg", dji_xmp(1e7, 30))
    photo(folder / "gps-alt.jpg", dji_xmp(60, 30), alt=1e7)
    photo(folder / "old.jpg", dji_xmp(60, 30), when="1900:01:01 00:00:00")
    photo(folder / "south.jpg", dji_xmp(60, 30), lat=95.0)  # 95 degrees: written in EXIF as it is

    out = tmp_path / "out"
    assert survey(detector, folder, "--out", out) == 1
    features, data = read_outputs(out)
    assert "7 images and frames, 7 findings, 1 skipped, 6 problems" in capsys.readouterr().out
    by_image = {f["properties"]["image"]: f for f in features}
    assert by_image["good.jpg"]["properties"]["position"] == "ground"
    for name in ("inf-alt.jpg", "nan-yaw.jpg", "inf-pitch.jpg", "high.jpg"):
        assert by_image[name]["properties"]["position"] == "image", name
        assert by_image[name]["geometry"]["coordinates"] == pytest.approx([BASE[1], BASE[0]], abs=1e-7)
    assert by_image["gps-alt.jpg"]["properties"]["position"] == "ground"  # the height above sea is not needed
    assert by_image["old.jpg"]["properties"]["time"] is None
    notes = {n["input"]: n["reason"] for n in data["notes"]}
    assert notes == {
        "inf-alt.jpg": "RelativeAltitude inf is not a finite number",
        "nan-yaw.jpg": "GimbalYawDegree nan is not a finite number",
        "inf-pitch.jpg": "GimbalPitchDegree -inf is not a finite number",
        "high.jpg": "RelativeAltitude 1e+07 is out of range (-1000 to 10000 m)",
        "gps-alt.jpg": "GPS altitude 1e+07 is out of range (-1000 to 10000 m)",
        "old.jpg": "time 1900-01-01T00:00:00 is out of range (1980 to 2200)",
    }
    assert [b["reason"] for b in data["bad"]] == ["GPS latitude 95 is out of range (-90 to 90)"]
    units = [json.loads(line) for line in (out / "survey.jsonl").read_text().splitlines()]
    assert all(u["alt"] is None for u in units if u.get("name") == "gps-alt.jpg")


def nadir(lat: float, lon: float, f35: float, yaw: float, relative_alt: float = 100.0) -> ImageGeo:
    return ImageGeo(lat, lon, pitch=-90.0, relative_alt=relative_alt, f35=f35, yaw=yaw)


def test_projections_that_leave_the_globe_give_the_image_position():
    # f35 1e-9: 5e12 metres a pixel
    assert locate(nadir(47.0, 8.0, f35=1e-9, yaw=0.0), 0, 0, 640, 480) == (47.0, 8.0, "image")
    assert locate(nadir(47.0, 8.0, f35=1.0, yaw=0.0, relative_alt=9000.0), 0, 0, 1000, 1000) \
        == (47.0, 8.0, "image")  # 230 km from the centre: not a photo's footprint
    # 10 m north of a point 1 m from the pole is past it
    assert locate(nadir(89.99999, 8.0, f35=36.0, yaw=0.0), 500, 400, 1000, 1000) == (89.99999, 8.0, "image")
    # 10 m east across the antimeridian: the longitude wraps, the position is good
    lat, lon, how = locate(nadir(0.0, 179.99995, f35=36.0, yaw=90.0), 500, 400, 1000, 1000)
    assert how == "ground" and -180 <= lon < -179.9999 and lat == pytest.approx(0.0, abs=1e-9)
    for bad in (math.nan, math.inf):
        assert locate(nadir(47.0, 8.0, f35=36.0, yaw=bad), 0, 0, 640, 480)[2] == "image"


def test_a_csv_row_of_nan_and_inf_is_skipped_and_counted(detector, tmp_path, capsys):
    video = write_flight_video(tmp_path / "clip.avi")
    telemetry = tmp_path / "track.csv"
    telemetry.write_text("time,lat,lon,alt\n0,nan,inf,50\n" + "".join(
        f"{t},{track(t)[0]:.7f},{track(t)[1]:.7f},{alt}\n" for t, alt in ((0.0, 50), (1.5, "inf"), (4.0, 1e7))
    ) + "2,1e999,8,50\ninfinity,47,8,50\n" + "".join(f"{t},{track(t)[0]:.7f},{track(t)[1]:.7f},50\n"
                                                        for t in (1.0, 4.0)))
    out = tmp_path / "out"
    assert survey(detector, video, "--out", out, "--telemetry", telemetry, "--every", "1") == 1
    assert "4 images and frames, 3 findings, 0 skipped, 1 problems" in capsys.readouterr().out
    features, data = read_outputs(out)
    for feature in features:
        t = float(feature["properties"]["image"].split("@")[1][:-1])
        lon, lat = feature["geometry"]["coordinates"]
        assert metres_apart((lat, lon), track(t)) < 0.05
    (note,) = data["notes"]
    assert note == {"input": str(telemetry), "reason": "5 of 8 track points skipped "
                    "(first at line 2: latitude nan is not a finite number)"}

    telemetry.write_text("time,lat,lon\n0,nan,inf\n1,999,8\n")  # nothing left: the video has no positions
    assert survey(detector, video, "--out", tmp_path / "none", "--telemetry", telemetry) == 1
    err = capsys.readouterr().err.strip()
    assert err == ("edge-runtime: telemetry track.csv: no positions found (2 track points skipped; "
                   "first at line 2: latitude nan is not a finite number)")


def test_srt_latitudes_off_the_globe_are_skipped(detector, tmp_path):
    video = write_flight_video(tmp_path / "DJI_0100.AVI")
    steps = [0.7 * i for i in range(6)]
    blocks = [SRT_NEW.format(n=i + 1, start=srt_time(t), end=srt_time(t + 0.7), sec=30 + t,
                             lat=999.0 if i in (2, 4) else track(t)[0], lon=track(t)[1])
              for i, t in enumerate(steps)]
    video.with_suffix(".SRT").write_text("\n".join(blocks))
    out = tmp_path / "out"
    assert survey(detector, video, "--out", out) == 1
    features, data = read_outputs(out)
    assert len(features) == 4
    for feature in features:
        t = float(feature["properties"]["image"].split("@")[1][:-1])
        lon, lat = feature["geometry"]["coordinates"]
        assert metres_apart((lat, lon), track(t)) < 0.05  # the track is a line: skipping points keeps it
    assert data["notes"] == [{"input": "DJI_0100.AVI", "reason": "2 of 6 track points skipped "
                              "(first at subtitle 3: latitude 999 is out of range (-90 to 90))"}]
    assert survey(detector, video, "--out", out, "--resume") == 1  # the note is kept with its video
    assert read_outputs(out)[1]["notes"] == data["notes"]


def test_srt_dates_that_are_not_dates_leave_frames_without_a_time():
    text = ("1\n00:00:00,000 --> 00:00:01,000\n2023-13-45 11:23:41.164\n[latitude: 47.1] [longitude: 8.1]\n\n"
            "2\n00:00:01,000 --> 00:00:02,000\n2023-13-45 11:23:42.164\n[latitude: 47.2] [longitude: 8.1]\n")
    track_ = parse_srt(text, Path("a.SRT"))
    assert track_.start is None and track_.at(0.5)[:2] == pytest.approx((47.15, 8.1))
    huge = parse_srt(text.replace("00:00:00,000", "9" * 5000 + ":00:00,000"), Path("a.SRT"))  # int() refuses
    assert list(huge.seconds) == [1.0]
    old = parse_srt(text.replace("2023-13-45", "1903-01-01"), Path("a.SRT"))
    assert old.start is None and old.problems == ("subtitle 1: time 1903-01-01T11:23:41.164000 is out of range "
                                                  "(1980 to 2200); its frames have no time",)


def test_findings_the_model_gives_without_finite_numbers_are_dropped(detector, tmp_path, monkeypatch):
    from edge_runtime.survey.tiled import Found, TiledPredictor
    from edge_runtime.types import BoundingBox, Prediction

    run_tiles = TiledPredictor.run

    def with_bad_boxes(self, prepared):  # what exp() of a large logit gives a hostile model's boxes
        return [*run_tiles(self, prepared),
                Found(Prediction(0, "person", 0.9, "", BoundingBox(0.1, 0.1, math.inf, 0.1)), "full"),
                Found(Prediction(0, "person", math.inf, "", BoundingBox(0.1, 0.1, 0.1, 0.1)), "full")]

    monkeypatch.setattr(TiledPredictor, "run", with_bad_boxes)
    folder = tmp_path / "in"
    folder.mkdir()
    photo(folder / "a.jpg", dji_xmp(60, 30))
    assert survey(detector, folder, "--out", tmp_path / "out") == 1
    features, data = read_outputs(tmp_path / "out")
    assert len(features) == 1 and features[0]["properties"]["position"] == "ground"
    assert data["notes"] == [{"input": "a.jpg", "reason": "2 findings dropped: the model gave a box or "
                              "probability that is not a finite number"}]


def test_every_json_writer_refuses_nan_instead_of_writing_it(tmp_path):
    unit = UnitRecord("/in/a.jpg", "a.jpg", 640, 480, math.nan, 8.0, None, None, {"predictions": []})
    with pytest.raises(ValueError):
        write_outputs(tmp_path, [unit])
    with pytest.raises(ValueError):
        render({"settings": {}, "images": [{"lat": math.inf}], "bad": [], "notes": []})
    journal = Journal.open(tmp_path / "out", resume=False, settings={})
    with pytest.raises(ValueError):
        journal.add_unit(unit)
    journal.close()


# -- 3: GPX points that are not points ------------------------------------------------------

GPX = """<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
{points}
</trkseg></trk></gpx>"""


def test_gpx_points_that_are_not_points_are_skipped_and_counted(tmp_path):
    points = "\n".join([
        '<trkpt lat="10.0" lon="20.0"><ele>100</ele><time>2026-11-28T10:00:00Z</time></trkpt>',
        '<trkpt lat="abc" lon="20.0"><time>2026-11-28T10:00:01Z</time></trkpt>',
        '<trkpt lat="10.0" lon="20.0"><time>yesterday</time></trkpt>',
        '<trkpt lon="20.0"><time>2026-11-28T10:00:02Z</time></trkpt>',
        '<trkpt lat="10.0" lon="20.0"></trkpt>',
        '<trkpt lat="NaN" lon="20.0"><time>2026-11-28T10:00:03Z</time></trkpt>',
        '<trkpt lat="10.0" lon="200"><time>2026-11-28T10:00:03Z</time></trkpt>',
        '<trkpt lat="10.0" lon="20.0"><ele>1e7</ele><time>2026-11-28T10:00:03Z</time></trkpt>',
        '<trkpt lat="10.0" lon="20.0"><time>0001-01-01T00:00:00Z</time></trkpt>',
        '<trkpt lat="10.001" lon="20.002"><ele>110</ele><time>2026-11-28T10:00:10</time></trkpt>',  # no zone: UTC
    ])
    path = tmp_path / "flight.gpx"
    path.write_text(GPX.format(points=points))
    result = read_track(path)
    assert len(result.seconds) == 2
    lat, lon, alt, when = result.at(2.5)
    assert (lat, lon, alt) == pytest.approx((10.00025, 20.0005, 102.5))
    assert when == "2026-11-28T10:00:02.500000+00:00"
    assert result.problems == ("8 of 10 track points skipped (first at line 3: latitude 'abc' is not a number)",)

    path.write_text(GPX.format(points='<trkpt lat="abc" lon="1"><time>2026-11-28T10:00:00Z</time></trkpt>'))
    with pytest.raises(ConfigError, match=r"flight.gpx: no positions found \(1 track points skipped"):
        read_track(path)


def test_a_video_on_a_gpx_track_with_bad_points_runs(detector, tmp_path, capsys):
    video = write_flight_video(tmp_path / "clip.avi")
    telemetry = tmp_path / "flight.gpx"
    telemetry.write_text(GPX.format(points="\n".join([
        f'<trkpt lat="{BASE[0]}" lon="{BASE[1]}"><time>2026-11-28T10:00:00Z</time></trkpt>',
        '<trkpt lat="abc"><time>yesterday</time></trkpt>',
        f'<trkpt lat="{BASE[0] + 0.001}" lon="{BASE[1]}"><time>2026-11-28T10:00:04Z</time></trkpt>',
    ])))
    assert survey(detector, video, "--out", tmp_path / "out", "--telemetry", telemetry) == 1
    assert "3 findings, 0 skipped, 1 problems" in capsys.readouterr().out
    features, data = read_outputs(tmp_path / "out")
    assert len(features) == 4 and data["notes"][0]["reason"].startswith("1 of 3 track points skipped")


@pytest.mark.parametrize("doctype", [
    # billion laughs: ten levels of ten
    "<!DOCTYPE gpx [<!ENTITY a0 'aaaaaaaaaa'>" + "".join(
        f"<!ENTITY a{i} '{f'&a{i - 1};' * 10}'>" for i in range(1, 10)) + "]>",
    "<!DOCTYPE gpx [<!ENTITY a9 SYSTEM 'file:///etc/passwd'>]>",
    "<!DOCTYPE gpx [<!ENTITY % p SYSTEM 'file:///etc/passwd'> %p;]>",
    "<!DOCTYPE gpx [<!ENTITY a9 '2026-11-28T10:00:00Z'>]>",  # small and harmless, and refused all the same
])
def test_gpx_entities_are_refused(tmp_path, doctype):
    path = tmp_path / "a.gpx"
    path.write_text(f'<?xml version="1.0"?>{doctype}<gpx><trk><trkseg><trkpt lat="1" lon="2">'
                    '<time>&a9;</time></trkpt></trkseg></trk></gpx>')
    for from_text in (False, True):  # read from the file in chunks, and from a string
        with pytest.raises(ConfigError, match="a.gpx: not valid GPX .*entit") as caught:
            parse_gpx(path.read_text(), path) if from_text else read_track(path)
        assert "\n" not in str(caught.value)


# -- 4: journals that are damaged or from another run -------------------------------------------


@pytest.fixture()
def done_run(detector, tmp_path) -> tuple[Path, Path]:
    folder = tmp_path / "in"
    folder.mkdir()
    for i in range(4):
        photo(folder / f"P{i}.jpg", lat=BASE[0] + i * 1e-4)
    out = tmp_path / "out"
    assert survey(detector, folder, "--out", out) == 0
    return folder, out


def ids(out: Path) -> dict[str, str]:
    return {name: p["id"] for name, p in json.loads((out / "predictions.json").read_text()).items()}


def test_damaged_journal_lines_are_skipped_and_their_inputs_run_again(detector, done_run, capsys):
    folder, out = done_run
    before = ids(out)
    journal = out / "survey.jsonl"
    lines = journal.read_bytes().splitlines(keepends=True)
    units = {json.loads(line)["name"]: i for i, line in enumerate(lines) if b'"type": "unit"' in line}

    def edit(name: str, change) -> None:
        item = json.loads(lines[units[name]])
        change(item)
        lines[units[name]] = json.dumps(item).encode() + b"\n"

    edit("P0.jpg", lambda u: u.pop("width"))
    edit("P1.jpg", lambda u: u.update(extra=1))
    edit("P2.jpg", lambda u: u.update(annotated="../../../etc/shadow.jpg"))
    lines[2:2] = [b"\xff\xfe\x00\x89PNG garbage\n", b"5\n", b"[1, 2]\n", b'{"type": "unit", "lat": NaN}\n',
                  b"[" * 100000 + b"\n", b'{"type": "done", "input": 5}\n']
    journal.write_bytes(b"".join(lines))

    assert survey(detector, folder, "--out", out, "--resume") == 1
    assert "4 images and frames, 4 findings, 0 skipped, 1 problems" in capsys.readouterr().out
    after = ids(out)
    assert set(after) == set(before)
    assert {name for name in before if before[name] != after[name]} == {"P0.jpg", "P1.jpg", "P2.jpg"}
    features, data = read_outputs(out)
    assert len(features) == 4
    (note,) = data["notes"]
    assert note["input"] == "survey.jsonl"
    assert note["reason"] == ("9 damaged lines skipped (first, line 2: a unit record without width); "
                              "3 inputs with records lost are run again")

    assert survey(detector, folder, "--out", out, "--resume") == 0  # written afresh: nothing is damaged now
    assert ids(out) == after


def test_a_journal_of_another_model_or_other_settings_is_refused(detector, done_run, tmp_path, capsys):
    folder, out = done_run
    journal = out / "survey.jsonl"
    kept = journal.read_bytes()
    other = write_detector(tmp_path / "other", batch=1)  # the same outputs from another file: another SHA-1
    for flags, words in (([other], "was written by another model (SHA-1 "),
                         ([detector, "--threshold", "0.3"], "was written with other settings (threshold 0.1, now 0.3)"),
                         ([detector, "--tiles", "off"], "was written with other settings (tiles auto, now off)"),
                         ([detector, "--every", "2"], "was written with other settings (every 1.0, now 2.0)")):
        assert survey(flags[0], folder, "--out", out, "--resume", *flags[1:]) == 1
        err = capsys.readouterr().err.strip()
        assert words in err and err.endswith("; run without --resume to start again") and "\n" not in err
        assert journal.read_bytes() == kept
    assert survey(detector, folder, "--out", out, "--resume") == 0  # its own settings: accepted
    journal.write_bytes(b"\n".join(journal.read_bytes().splitlines()[1:]) + b"\n")  # no settings line
    assert survey(detector, folder, "--out", out, "--resume") == 1
    assert "has no settings line" in capsys.readouterr().err


# -- 5: a million-point track --------------------------------------------------------------------

# The child's own high-water mark (VmHWM): ru_maxrss would start from pytest's, which exec keeps.
PEAK_CODE = """
import json, re, sys
from pathlib import Path
from edge_runtime.survey.telemetry import read_track
def hwm():
    return int(re.search(r"VmHWM:\\s+(\\d+) kB", Path("/proc/self/status").read_text())[1])
base = hwm()
track = read_track(Path(sys.argv[1]))
print(json.dumps({"points": len(track.seconds), "base_kb": base, "peak_kb": hwm(),
                  "last": track.at(1e9)[:2], "problems": getattr(track, "problems", [])}))
"""


def write_big_track(path: Path, points: int) -> None:
    with path.open("w") as f:
        if path.suffix == ".gpx":
            f.write('<?xml version="1.0"?>\n<gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1">'
                    "<trk><trkseg>\n")
        else:
            f.write("time,lat,lon,alt\n")
        for i in range(points):
            lat, lon, alt = 47 + i * 1e-7, 8 + i * 1e-7, 400 + i % 100
            if path.suffix == ".gpx":
                stamp = f"2026-01-{1 + i // 86400:02d}T{i // 3600 % 24:02d}:{i // 60 % 60:02d}:{i % 60:02d}Z"
                f.write(f'<trkpt lat="{lat:.7f}" lon="{lon:.7f}"><ele>{alt:.1f}</ele><time>{stamp}</time></trkpt>\n')
            else:
                f.write(f"{i},{lat:.7f},{lon:.7f},{alt:.1f}\n")
        if path.suffix == ".gpx":
            f.write("</trkseg></trk></gpx>\n")


@pytest.mark.slow
@pytest.mark.adversarial
@pytest.mark.timeout(300)
@pytest.mark.parametrize("suffix", [".gpx", ".csv"])
def test_a_million_point_track_is_read_in_little_memory(tmp_path, suffix):
    path = tmp_path / f"big{suffix}"
    write_big_track(path, 1_000_000)
    if suffix == ".gpx":
        assert path.stat().st_size > 90e6  # the size that took 1.4 GB
    proc = subprocess.run([sys.executable, "-c", PEAK_CODE, str(path)], capture_output=True, text=True,
                          timeout=240)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    assert result["points"] == 1_000_000 and result["problems"] == []
    assert result["last"] == pytest.approx([47.0999999, 8.0999999])
    assert result["peak_kb"] < 200 * 1024, result
    # 32 bytes a point in columns, sorted once: not one Python object per value
    assert result["peak_kb"] - result["base_kb"] < 100 * 1024, result
