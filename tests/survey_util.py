"""What the survey tests share: a small-object detector in the Custom Vision YOLO layout,
drone-like scenes for it, geotagged photos with DJI XMP, and a flight with its SRT track.

The detector finds solid red squares of at least SMALLEST pixels, and only at the scale
it is fed: it erodes a redness mask with a 7x7 minimum filter, so a 14-pixel square that
preprocessing shrinks to 4 pixels (a 2048x1536 photo fed whole at 512x512) vanishes,
while a 512x512 tile keeps it. Each 32-pixel cell looks at a 64-pixel window around
itself and fires only when the mask's centroid lies in the cell, so a square across a
cell border is found once; the box is centred on the centroid and sized from the mask's
area, so tiles that see the same square report the same box.
"""


from __future__ import annotations

import io
import math
from pathlib import Path

import cv2
import numpy as np
from onnx import TensorProto, helper, numpy_helper

from tests import models

ERODE = 7
CELL, WINDOW = 32, 64
SQUARE = 14  # side of the test objects, in pixels
SMALLEST = 10  # squares below this are never found
RED_BGR = (0, 0, 255)
TAGS = ("person",)


def small_object_detector(batch: int | str = "N") -> bytes:
    """`data` [batch,3,H,W] RGB 0-1 -> `model_outputs0` [batch,6,H/32,W/32]; one anchor (1,1), one tag."""
    ramp = np.arange(WINDOW, dtype=np.float32) + 0.5
    inits = [
        numpy_helper.from_array(np.array([1, -1, -1], np.float32).reshape(1, 3, 1, 1), "w_red"),
        numpy_helper.from_array(np.ones((1, 1, WINDOW, WINDOW), np.float32), "w_mass"),
        numpy_helper.from_array(np.tile(ramp, (WINDOW, 1)).reshape(1, 1, WINDOW, WINDOW), "w_x"),
        numpy_helper.from_array(np.tile(ramp[:, None], (1, WINDOW)).reshape(1, 1, WINDOW, WINDOW), "w_y"),
        *(numpy_helper.from_array(np.array(v, np.float32), n) for n, v in (
            ("half", 0.5), ("four", 4.0), ("zero", 0.0), ("one", 1.0), ("eps", 1e-6),
            ("lo", (WINDOW - CELL) / 2), ("hi", (WINDOW + CELL) / 2), ("cell", float(CELL)),
            ("pmin", 1e-3), ("pmax", 1 - 1e-3), ("grow", float(ERODE - 1)),
            ("mass_gain", 0.5), ("mass_min", 8.0),
        )),
    ]
    pad = ERODE // 2
    win_pad = (WINDOW - CELL) // 2
    n = helper.make_node
    nodes = [
        n("Conv", ["data", "w_red"], ["red"]),
        n("Neg", ["red"], ["neg"]),
        n("MaxPool", ["neg"], ["negmin"], kernel_shape=[ERODE, ERODE], pads=[pad] * 4),
        n("Neg", ["negmin"], ["eroded"]),
        n("Sub", ["eroded", "half"], ["e0"]),
        n("Mul", ["e0", "four"], ["e1"]),
        n("Clip", ["e1", "zero", "one"], ["mask"]),
    ]
    for name in ("mass", "x", "y"):
        nodes.append(n("Conv", ["mask", f"w_{name}"], [f"s_{name}"], strides=[CELL, CELL], pads=[win_pad] * 4))
    nodes += [
        n("Add", ["s_mass", "eps"], ["mass_e"]),
        n("Div", ["s_x", "mass_e"], ["cx"]),
        n("Div", ["s_y", "mass_e"], ["cy"]),
        n("Sub", ["cx", "lo"], ["gx0"]), n("Sub", ["hi", "cx"], ["gx1"]),
        n("Sub", ["cy", "lo"], ["gy0"]), n("Sub", ["hi", "cy"], ["gy1"]),
        n("Min", ["gx0", "gx1", "gy0", "gy1"], ["inside"]),
        n("Mul", ["inside", "four"], ["g_logit"]),
        n("Mul", ["s_mass", "mass_gain"], ["m0"]), n("Sub", ["m0", "mass_min"], ["m_logit"]),
        n("Min", ["g_logit", "m_logit"], ["obj"]),
    ]
    for axis in ("x", "y"):  # t = logit((c - lo) / cell): the centre within the cell
        nodes += [
            n("Div", ["gx0" if axis == "x" else "gy0", "cell"], [f"f{axis}"]),
            n("Clip", [f"f{axis}", "pmin", "pmax"], [f"p{axis}"]),
            n("Sub", ["one", f"p{axis}"], [f"q{axis}"]),
            n("Div", [f"p{axis}", f"q{axis}"], [f"r{axis}"]),
            n("Log", [f"r{axis}"], [f"t{axis}"]),
        ]
    nodes += [  # side = sqrt(eroded area) + 6 pixels; t = log(side / cell) with anchor 1
        n("Sqrt", ["s_mass"], ["root"]), n("Add", ["root", "grow"], ["side"]),
        n("Div", ["side", "cell"], ["side_cells"]), n("Log", ["side_cells"], ["tw"]),
        n("Mul", ["s_mass", "zero"], ["cls"]),
        n("Concat", ["tx", "ty", "tw", "tw", "obj", "cls"], ["model_outputs0"], axis=1),
    ]
    graph = helper.make_graph(
        nodes, "small_objects",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [batch, 3, "H", "W"])],
        [helper.make_tensor_value_info("model_outputs0", TensorProto.FLOAT, [batch, 6, "gh", "gw"])],
        inits,
    )
    meta = models.yolo_metadata([1.0, 1.0])
    return models._finish(graph, meta, [helper.make_opsetid("", models.MODERN_OPSET)], models.MODERN_IR)


def write_detector(folder: Path, batch: int | str = "N") -> Path:
    return models.write_export(folder, small_object_detector(batch), TAGS, domain="ObjectDetection")


def terrain(width: int, height: int, seed: int = 0) -> np.ndarray:
    """Green-grey ground with texture and roads; nothing in it is red."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 60, (height // 64 + 1, width // 64 + 1, 1), np.uint8)
    import cv2

    base = cv2.resize(coarse, (width, height), interpolation=cv2.INTER_LINEAR)[..., None]
    image = np.concatenate([base + 50, base + 90, base + 70], axis=2).astype(np.uint8)  # B, G, R
    cv2.line(image, (0, height // 3), (width, height // 2), (150, 150, 150), max(4, width // 200))
    return image


def place_squares(image: np.ndarray, centres: list[tuple[int, int]], side: int = SQUARE) -> None:
    """Solid red squares whose pixel-area centres are the given (x, y) in continuous coordinates."""
    for x, y in centres:
        x0, y0 = x - side // 2, y - side // 2
        image[y0:y0 + side, x0:x0 + side] = RED_BGR


def dji_xmp(relative_alt: float, yaw: float, pitch: float = -90.0, flight_yaw: float | None = None,
            gimbal_yaw: bool = True) -> bytes:
    """An XMP packet laid out as DJI cameras write it (attributes of rdf:Description)."""
    fields = {"AbsoluteAltitude": f"{relative_alt + 400:+.2f}", "RelativeAltitude": f"{relative_alt:+.2f}",
              "GimbalRollDegree": "+0.00", "GimbalPitchDegree": f"{pitch:+.2f}"}
    if gimbal_yaw:
        fields["GimbalYawDegree"] = f"{yaw:+.2f}"
    fields["FlightYawDegree"] = f"{(flight_yaw if flight_yaw is not None else yaw):+.2f}"
    attributes = " ".join(f'drone-dji:{k}="{v}"' for k, v in fields.items())
    return (
        '<?xpacket begin="\ufeff" id="W5M0MpCehiHzreSzNTczkc9d"?>'
        '<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
        f'<rdf:Description rdf:about="DJI Meta Data" xmlns:drone-dji="http://www.dji.com/drone-dji/1.0/" {attributes}/>'
        '</rdf:RDF></x:xmpmeta><?xpacket end="w"?>'
    ).encode()


def _rational(value: float, scale: int = 10000) -> tuple[int, int]:
    return round(value * scale), scale


def geotagged_jpeg(path: Path, image: np.ndarray, lat: float, lon: float, alt: float = 420.0,
                   when: str = "2026:11:28 10:15:30", f35: int | None = 24, xmp: bytes | None = None) -> Path:
    """A JPEG with EXIF GPS written by piexif and, when given, an XMP packet in its own APP1."""
    import piexif

    from tests.conftest import jpeg_bytes

    def dms(value: float) -> tuple[tuple[int, int], ...]:
        value = abs(value)
        d, rest = int(value), (abs(value) - int(value)) * 60
        m = int(rest)
        return (d, 1), (m, 1), _rational((rest - m) * 60, 100000)

    gps = {
        piexif.GPSIFD.GPSLatitudeRef: b"N" if lat >= 0 else b"S", piexif.GPSIFD.GPSLatitude: dms(lat),
        piexif.GPSIFD.GPSLongitudeRef: b"E" if lon >= 0 else b"W", piexif.GPSIFD.GPSLongitude: dms(lon),
        piexif.GPSIFD.GPSAltitudeRef: 0, piexif.GPSIFD.GPSAltitude: _rational(alt, 100),
    }
    exif = {piexif.ExifIFD.DateTimeOriginal: when.encode()}
    if f35:
        exif[piexif.ExifIFD.FocalLengthIn35mmFilm] = f35
    out = io.BytesIO()
    piexif.insert(piexif.dump({"0th": {}, "Exif": exif, "GPS": gps}), jpeg_bytes(image), out)
    data = out.getvalue()
    if xmp is not None:  # after the EXIF segment, where cameras put it
        payload = b"http://ns.adobe.com/xap/1.0/\x00" + xmp
        segment = b"\xff\xe1" + (len(payload) + 2).to_bytes(2, "big") + payload
        at = 2 + 2 + int.from_bytes(data[4:6], "big") if data[2:4] == b"\xff\xe1" else 2
        data = data[:at] + segment + data[at:]
    path.write_bytes(data)
    return path


BASE = (47.3769, 8.5417)
EARTH = 6371008.8  # mean radius: the check below is spherical, the runtime's ellipsoidal


def metres_apart(a: tuple[float, float], b: tuple[float, float]) -> float:
    """Haversine distance between two (lat, lon)."""
    p1, p2 = math.radians(a[0]), math.radians(b[0])
    dp, dl = p2 - p1, math.radians(b[1] - a[1])
    h = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH * math.asin(math.sqrt(h))


SRT_NEW = """{n}
{start} --> {end}
<font size="28">FrameCnt: {n}, DiffTime: 700ms
2026-11-28 10:20:{sec:06.3f}
[iso: 100] [shutter: 1/1000.0] [fnum: 1.7] [ev: 0] [focal_len: 24.00] [latitude: {lat:.7f}] \
[longitude: {lon:.7f}] [rel_alt: 50.000 abs_alt: 460.000] [ct: 5500] </font>
"""


def srt_time(t: float) -> str:
    return f"00:00:{int(t):02d},{round((t % 1) * 1000):03d}"


def track(t: float) -> tuple[float, float]:
    return BASE[0] + 0.0001 * t, BASE[1] + 0.0002 * t


def write_flight_video(video: Path) -> Path:
    """3.5 s at 10 fps; the frames sampled at 1, 2 and 3 s hold a square."""
    writer = cv2.VideoWriter(str(video), cv2.VideoWriter.fourcc(*"MJPG"), 10.0, (640, 480))
    for i in range(35):
        frame = terrain(640, 480, seed=3)
        if i in (10, 20, 30):
            place_squares(frame, [(320, 240)])
        writer.write(frame)
    writer.release()
    return video
