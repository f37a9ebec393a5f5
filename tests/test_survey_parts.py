"""The survey's pure parts: tile plans, the merge across tiles, geotags, projection, tracks."""

from __future__ import annotations

import itertools
import math
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.errors import ConfigError
from edge_runtime.survey.geo import ImageGeo, ground_offset, locate, offset, read_geo, read_xmp
from edge_runtime.survey.inputs import collect
from edge_runtime.survey.telemetry import parse_srt, read_track
from edge_runtime.survey.tiling import Tile, TileMode, merge_boxes, tile_plan
from tests.conftest import jpeg_bytes
from tests.survey_util import dji_xmp, geotagged_jpeg, terrain

# -- tiling -------------------------------------------------------------------------------


@pytest.mark.parametrize(("width", "height"), [(2048, 1536), (5472, 3648), (1000, 513), (700, 3000)])
def test_tiles_cover_the_image_with_equal_tiles_that_overlap(width, height):
    tiles = tile_plan(width, height, TileMode.parse("auto"), (512, 512), overlap=0.2)
    *parts, whole = tiles
    assert whole == Tile(0, 0, width, height, full=True)
    assert {(t.width, t.height) for t in parts} == {(min(512, width), min(512, height))}
    covered = np.zeros((height, width), bool)
    for t in parts:
        assert t.x + t.width <= width and t.y + t.height <= height
        covered[t.y:t.y + t.height, t.x:t.x + t.width] = True
    assert covered.all()
    xs = sorted({t.x for t in parts})
    assert all(b - a <= 512 * 0.8 for a, b in itertools.pairwise(xs))  # at least 20% shared


def test_auto_leaves_small_images_whole_and_off_never_tiles():
    assert tile_plan(640, 480, TileMode.parse("auto"), (512, 512)) == [Tile(0, 0, 640, 480, full=True)]
    assert tile_plan(8000, 6000, TileMode.parse("off"), (512, 512)) == [Tile(0, 0, 8000, 6000, full=True)]
    assert len(tile_plan(1024, 1024, TileMode.parse("300x200"), (512, 512), full_pass=False)) == 5 * 7


@pytest.mark.parametrize("text", ["huge", "10x10", "512", "0x512"])
def test_bad_tile_modes_are_named(text):
    with pytest.raises(ConfigError, match="--tiles"):
        TileMode.parse(text)


def test_merge_uses_intersection_over_the_smaller_box_per_class():
    boxes = np.array([
        [100, 100, 20, 20],   # 0: a whole object
        [100, 100, 8, 20],    # 1: the same object cut by a tile border: IoU 0.4, IoS 1
        [100, 100, 20, 20],   # 2: same place, another class: kept
        [300, 300, 20, 20],   # 3: elsewhere
        [112, 100, 20, 20],   # 4: overlaps 0 by 40%: kept
    ], np.float64)
    scores = np.array([0.9, 0.95, 0.5, 0.6, 0.7])
    classes = np.array([0, 0, 1, 0, 0])
    assert merge_boxes(boxes, scores, classes) == [1, 4, 3, 2]
    assert merge_boxes(boxes, scores, classes, limit=2) == [1, 4]


def test_inputs_are_found_recursively_and_named_below_their_folder(tmp_path):
    for folder in ("100MEDIA", "101MEDIA"):
        (tmp_path / "card" / folder).mkdir(parents=True)
        (tmp_path / "card" / folder / "DJI_0001.JPG").write_bytes(b"x")
    (tmp_path / "card" / "101MEDIA" / "DJI_0002.MP4").write_bytes(b"x")
    (tmp_path / "card" / "101MEDIA" / "DJI_0002.SRT").write_text("")
    (tmp_path / "phone").mkdir()
    (tmp_path / "phone" / "IMG_1.jpg").write_bytes(b"x")
    alone = tmp_path / "IMG_1.jpg"
    alone.write_bytes(b"x")
    inputs, missing = collect([tmp_path / "card", tmp_path / "phone", alone, tmp_path / "card" / "100MEDIA",
                               tmp_path / "gone"])
    assert [(i.name, i.video) for i in inputs] == [
        ("100MEDIA/DJI_0001.JPG", False), ("101MEDIA/DJI_0001.JPG", False), ("101MEDIA/DJI_0002.MP4", True),
        (str(tmp_path / "phone" / "IMG_1.jpg"), False), (str(alone), False),  # two IMG_1.jpg: full paths
    ]
    assert missing == [tmp_path / "gone"]


# -- geotags and the projection -----------------------------------------------------------


def test_exif_gps_and_dji_xmp_are_read(tmp_path):
    path = geotagged_jpeg(tmp_path / "a.jpg", terrain(320, 240), -33.8567844, -151.2152967, alt=88.5,
                          f35=24, xmp=dji_xmp(45.2, -170.5, pitch=-89.9))
    geo = read_geo(path.read_bytes())
    assert geo is not None
    assert (geo.lat, geo.lon) == pytest.approx((-33.8567844, -151.2152967), abs=1e-7)
    assert geo.alt == pytest.approx(88.5) and geo.time == "2026-11-28T10:15:30"
    assert (geo.relative_alt, geo.yaw, geo.pitch, geo.f35) == (45.2, -170.5, -89.9, 24.0)
    assert geo.projectable
    assert read_geo(jpeg_bytes(terrain(64, 64))) is None
    assert read_geo(b"not an image") is None


def test_xmp_written_as_elements_is_read_too():
    packet = (b"<x:xmpmeta><rdf:Description><drone-dji:RelativeAltitude>+31.5</drone-dji:RelativeAltitude>"
              b"<drone-dji:GimbalYawDegree>12</drone-dji:GimbalYawDegree></rdf:Description></x:xmpmeta>")
    from edge_runtime.survey.geo import _xmp_value

    text = read_xmp(b"\xff\xd8junk" + packet + b"more")
    assert _xmp_value(text, "RelativeAltitude") == 31.5 and _xmp_value(text, "GimbalYawDegree") == 12.0


def test_the_projection_follows_the_yaw():
    geo = ImageGeo(lat=0.0, lon=0.0, relative_alt=100.0, pitch=-90.0, yaw=0.0, f35=36.0)
    # f35 36 and altitude 100 over a 1000-pixel width: 0.1 m per pixel
    assert ground_offset(geo, 600, 500, 1000, 1000) == pytest.approx((10.0, 0.0))  # right of centre: east
    assert ground_offset(geo, 500, 400, 1000, 1000) == pytest.approx((0.0, 10.0))  # up: north
    east, north = ground_offset(ImageGeo(0, 0, None, None, 100, -90, 90, 36), 500, 400, 1000, 1000)
    assert (east, north) == pytest.approx((10.0, 0.0))  # flying east, up in the photo is east
    east, north = ground_offset(ImageGeo(0, 0, None, None, 100, -90, 90, 36), 600, 500, 1000, 1000)
    assert (east, north) == pytest.approx((0.0, -10.0))  # and right is south
    assert locate(ImageGeo(1, 2, pitch=-60, relative_alt=50, yaw=0, f35=24), 0, 0, 10, 10) == (1, 2, "image")


def test_the_metre_offset_matches_the_ellipsoid():
    # One degree of latitude at the equator is 110574 m, of longitude 111320 m (WGS84).
    lat, lon = offset(0.0, 0.0, 111319.49, 110574.39)
    assert (lat, lon) == pytest.approx((1.0, 1.0), abs=2e-4)
    lat, _ = offset(60.0, 10.0, 0.0, 1000.0)
    assert (lat - 60.0) * 111412.0 == pytest.approx(1000.0, rel=1e-3)


# -- telemetry ----------------------------------------------------------------------------

SRT_OLD = """1
00:00:00,000 --> 00:00:01,000
HOME(8.5400,47.3700) 2017.08.05 14:11:51
GPS(8.5410,47.3710,16) BAROMETER:30.5
ISO:100 Shutter:60 EV: Fnum:2.2

2
00:00:01,000 --> 00:00:02,000
HOME(8.5400,47.3700) 2017.08.05 14:11:52
GPS(8.5430,47.3730,16) BAROMETER:32.5
ISO:100 Shutter:60 EV: Fnum:2.2
"""

SRT_NEW = """1
00:00:00,000 --> 00:00:00,033
<font size="28">FrameCnt: 1, DiffTime: 33ms
2023-05-10 11:23:41.164
[iso: 100] [fnum: 1.7] [latitude: 0.000000] [longtitude: 0.000000] [rel_alt: 0.0 abs_alt: 0.0]</font>

2
00:00:02,000 --> 00:00:02,033
<font size="28">FrameCnt: 61, DiffTime: 33ms
2023-05-10 11:23:43.164
[iso: 100] [latitude : 47.361234] [longtitude : 8.541234] [rel_alt: 50.100 abs_alt: 480.200] </font>

3
00:00:04,000 --> 00:00:04,033
<font size="28">FrameCnt: 121, DiffTime: 33ms
2023-05-10 11:23:45.164
[iso: 100] [latitude: 47.361434] [longitude: 8.541634] [rel_alt: 52.100 abs_alt: 482.200] </font>
"""


def test_both_dji_srt_styles_are_read_and_interpolated(tmp_path):
    old = parse_srt(SRT_OLD, Path("old.SRT"))
    lat, lon, alt, when = old.at(0.5)
    assert (lat, lon, alt) == pytest.approx((47.3720, 8.5420, 31.5))  # GPS(lon, lat, alt), BAROMETER height
    assert when == "2017-08-05T14:11:51.500000"
    new = parse_srt(SRT_NEW, Path("new.SRT"))  # "longtitude", spaces before colons, no fix at first
    assert len(new.seconds) == 2
    lat, lon, alt, when = new.at(3.0)
    assert (lat, lon, alt) == pytest.approx((47.361334, 8.541434, 51.1))
    assert when == "2023-05-10T11:23:44.164000"
    assert new.at(99.0)[:2] == pytest.approx((47.361434, 8.541634))  # held at the end


def test_gpx_and_csv_tracks(tmp_path):
    gpx = tmp_path / "flight.gpx"
    gpx.write_text("""<?xml version="1.0"?><gpx version="1.1" xmlns="http://www.topografix.com/GPX/1/1"><trk><trkseg>
      <trkpt lat="10.0" lon="20.0"><ele>100</ele><time>2026-11-28T10:00:00Z</time></trkpt>
      <trkpt lat="10.001" lon="20.002"><ele>110</ele><time>2026-11-28T10:00:10Z</time></trkpt>
    </trkseg></trk></gpx>""")
    lat, lon, alt, when = read_track(gpx).at(2.5)
    assert (lat, lon, alt) == pytest.approx((10.00025, 20.0005, 102.5))
    assert when == "2026-11-28T10:00:02.500000+00:00"
    seconds = tmp_path / "seconds.csv"
    seconds.write_text("time,lat,lon,alt\n0,1.0,2.0,30\n4,1.004,2.0,\n")
    lat, lon, alt, when = read_track(seconds).at(1.0)
    assert (lat, lon) == pytest.approx((1.001, 2.0)) and when is None and not math.isnan(alt or 0)
    dated = tmp_path / "dated.csv"
    dated.write_text("time,lat,lon\n2026-11-28T10:00:04Z,1.004,2\n2026-11-28T10:00:00Z,1.0,2\n")
    assert read_track(dated).at(2.0)[0] == pytest.approx(1.002)


@pytest.mark.parametrize(("name", "text", "words"), [
    ("a.kml", "<kml/>", "expected a .srt, .gpx or .csv"),
    ("a.csv", "when,where\n1,2\n", "header time,lat,lon"),
    ("a.csv", "time,lat,lon\n0,north,2\n", "line 2"),
    ("a.gpx", "<gpx><trk>", "not valid GPX"),
    ("a.csv", "time,lat,lon\n2026-11-28T10:00:00Z,1,2\n2026-11-28T10:00:04,1,2\n", "time zone"),
    ("a.csv", "time,lat,lon\n2026-11-28T10:00:00Z,1,2\n4,1,2\n", "mix dates and plain seconds"),
    ("a.srt", "1\n00:00:00,000 --> 00:00:01,000\nhello\n", "no positions"),
])
def test_bad_telemetry_is_named_in_one_line(tmp_path, name, text, words):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ConfigError, match=words) as caught:
        read_track(path)
    assert name in str(caught.value) and "\n" not in str(caught.value)
