"""Hostile inputs: tiny images that ask for gigabytes, formats that write files, endless
files, zips and manifests that escape or crash, metadata that is not a sane number.

Each case ends in one ImageError or BundleError (a 400 from the server, one line from the
CLI) before any large allocation. The slow cases run `edge-runtime serve` in a
subprocess on loopback and watch its peak RSS (/proc/PID/status VmHWM) and a private
temporary folder: `pytest -m adversarial` runs only them.
"""

from __future__ import annotations

import concurrent.futures
import io
import json
import os
import re
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest
from PIL import Image

from edge_runtime.errors import (
    BundleError,
    ConfigError,
    ImageBusyError,
    ImageDecodeError,
    ImageFormatError,
    ImageShapeError,
    ImageTooLargeError,
    MetadataError,
)
from edge_runtime.model import limits
from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.bundle_cache import COMPLETE, PARTIAL_PREFIX, cache_root
from edge_runtime.model.imageio import decode_image, decoded, header_size, read_image, sniff
from edge_runtime.model.predictor import Predictor
from edge_runtime.model.preprocess import check_bounds
from tests import models
from tests.conftest import DEMO, jpeg_bytes, wait_for
from tests.server_util import free_port

MiB = 1024 * 1024


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    """Unpacked zips go to this test's own cache folder."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.delenv("CACHE_DIRECTORY", raising=False)
    monkeypatch.delenv("EDGE_RUNTIME_CACHE_DIR", raising=False)


@pytest.fixture
def set_limits(monkeypatch):
    """Change limits through their environment variables, as an operator would."""

    def apply(**values: int) -> None:
        for name, value in values.items():
            monkeypatch.setenv(f"EDGE_RUNTIME_{name.upper()}", str(value))
        limits.reset()

    yield apply
    monkeypatch.undo()
    limits.reset()


@pytest.fixture(scope="module")
def demo() -> Predictor:
    return Predictor.load(DEMO)


def encode(image: np.ndarray, fmt: str) -> bytes:
    if fmt in ("GIF", "WEBP"):
        buf = io.BytesIO()
        Image.fromarray(image[:, :, ::-1]).save(buf, fmt, **({"lossless": True} if fmt == "WEBP" else {}))
        return buf.getvalue()
    ok, data = cv2.imencode({"JPEG": ".jpg", "PNG": ".png", "BMP": ".bmp"}[fmt], image)
    assert ok
    return data.tobytes()


def one_line(text: str) -> bool:
    return "Traceback" not in text and len(text.strip().splitlines()) == 1


def cli(*args: object, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "edge_runtime.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=120, env={**os.environ, **(env or {})})


# --- formats: recognised by their first bytes, before any decoder runs -------------------

HOSTILE_FORMATS = {
    "hdr": b"#?RADIANCE\nFORMAT=32-bit_rle_rgbe\n\n-Y 30000 +X 30000\n" + b"\x02\x02" * 4000,
    "hdr-rgbe": b"#?RGBE\n\n-Y 8 +X 8\n" + b"\x80" * 256,
    "pfm": b"PF\n8 8\n-1.0\n" + b"\0" * 768,
    "ppm": b"P6\n8 8\n255\n" + b"\0" * 192,
    "pgm-ascii": b"P2\n2 2\n255\n0 0 0 0\n",
    "sunraster": b"\x59\xa6\x6a\x95" + b"\0" * 60,
    "tiff": b"II*\x00\x08\x00\x00\x00" + b"\0" * 64,
    "jpeg2000": b"\x00\x00\x00\x0cjP  \r\n\x87\n" + b"\0" * 64,
    "exr": b"\x76\x2f\x31\x01" + b"\0" * 64,
    "avif": b"\x00\x00\x00\x1cftypavif" + b"\0" * 64,
    "svg": b"<svg xmlns='http://www.w3.org/2000/svg' width='1' height='1'/>",
    "html": b"<html><body>not a picture</body></html>",
}


@pytest.mark.parametrize("name", sorted(HOSTILE_FORMATS))
def test_other_formats_are_refused_and_write_nothing(name, tmp_path, monkeypatch):
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    monkeypatch.setenv("OPENCV_TEMP_PATH", str(scratch))  # where OpenCV's decoders write temp files
    monkeypatch.setenv("TMPDIR", str(scratch))
    for _ in range(3):
        with pytest.raises(ImageFormatError, match="JPEG, PNG, BMP, GIF or WebP"):
            decode_image(HOSTILE_FORMATS[name])
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "BMP", "GIF", "WEBP"])
@pytest.mark.parametrize("size", [(37, 23), (300, 17), (16, 320)])
def test_accepted_formats_decode_and_their_header_size_is_read(fmt, size):
    rng = np.random.default_rng(sum(size))
    image = rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)
    data = encode(image, fmt)
    assert header_size(data, sniff(data)) == size
    assert decode_image(data).shape == (size[1], size[0], 3)


def test_header_size_of_format_variants():
    rgb = np.zeros((23, 37, 3), np.uint8)
    variants = []
    for kwargs in ({"progressive": True}, {"exif": Image.Exif().tobytes(), "quality": 50}):
        buf = io.BytesIO()
        Image.fromarray(rgb).save(buf, "JPEG", **kwargs)
        variants.append(buf.getvalue())
    for mode, kwargs in (("RGBA", {}), ("RGB", {"quality": 80})):  # VP8X (alpha) and lossy VP8
        buf = io.BytesIO()
        Image.fromarray(rgb).convert(mode).save(buf, "WEBP", **kwargs)
        variants.append(buf.getvalue())
    jpeg = encode(rgb, "JPEG")
    variants.append(jpeg[:2] + jpeg[2:].replace(b"\xff\xdb", b"\0\0\xff\xdb", 1))  # stray bytes before a segment
    bmp = bytearray(encode(rgb, "BMP"))
    bmp[22:26] = (-23).to_bytes(4, "little", signed=True)  # top-down rows
    variants.append(bytes(bmp))
    for data in variants:
        assert header_size(data, sniff(data)) == (37, 23), data[:16]
        assert decode_image(data).shape == (23, 37, 3)


@pytest.mark.parametrize("data", [b"\xff\xd8\xff\xe0\x00\x10JFIF", b"\x89PNG\r\n\x1a\n\0\0", b"BM\0\0",
                                  b"RIFF\0\0\0\0WEBPVP8 ", b"GIF89a\0\0\0\0"])
def test_cut_off_headers_are_one_decode_error(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


# --- shapes: bounded before any resize ---------------------------------------------------

THIN = [(1, 65535), (65535, 1), (4, 20000), (20000, 4), (1, 20000), (3, 64)]


@pytest.mark.parametrize("fmt", ["PNG", "GIF", "BMP", "JPEG"])
@pytest.mark.parametrize("size", THIN)
def test_long_thin_images_are_refused_before_decoding(fmt, size, demo):
    if fmt == "JPEG":
        size = (min(size[0], 65500), min(size[1], 65500))  # the largest side libjpeg writes
    data = encode(np.zeros((size[1], size[0], 3), np.uint8), fmt)
    started = time.perf_counter()
    with pytest.raises(ImageShapeError, match=r"at most 20 times .*EDGE_RUNTIME_MAX_ASPECT_RATIO"):
        decode_image(data, spec=demo.spec.input)
    with pytest.raises(ImageShapeError):
        decode_image(data)  # also without a model
    assert time.perf_counter() - started < 2


def test_a_png_claiming_a_million_pixels_in_one_row(demo):
    data = encode(np.zeros((1, 20, 3), np.uint8), "PNG")
    patched = data[:16] + (1_000_000).to_bytes(4, "big") + data[20:]  # the IHDR width (CRC now wrong)
    with pytest.raises(ImageShapeError, match="1000000x1"):
        decode_image(patched, spec=demo.spec.input)


def test_every_resize_step_is_bounded(demo, set_limits):
    check_bounds(640, 480, demo.spec.input)
    set_limits(max_work_pixels=50_000)  # ByShorterSide 256 makes 341x256 = 87,296 pixels from 640x480
    with pytest.raises(ImageShapeError, match=r"341x256.*EDGE_RUNTIME_MAX_WORK_PIXELS"):
        check_bounds(640, 480, demo.spec.input)
    with pytest.raises(ImageShapeError):
        demo.predict(np.zeros((480, 640, 3), np.uint8))  # camera frames take the same path


def test_aspect_limit_can_be_changed(demo, set_limits):
    thin = np.zeros((10, 300, 3), np.uint8)
    with pytest.raises(ImageShapeError, match="at most 20 times"):
        demo.predict(thin)
    set_limits(max_aspect_ratio=40)
    assert demo.predict(thin).predictions


@pytest.mark.parametrize("value", ["0", "-3", "many", "1.5"])
def test_a_bad_limit_is_a_config_error_naming_the_variable(value, set_limits):
    set_limits(max_aspect_ratio=value)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="EDGE_RUNTIME_MAX_ASPECT_RATIO"):
        limits.current()


def test_camera_frames_are_bounded_like_uploads(demo):
    with pytest.raises(ImageShapeError):
        demo.prepare(np.zeros((2000, 4, 3), np.uint8))
    with pytest.raises(ImageShapeError):
        demo.prepare(np.zeros((4, 2000), np.uint8))  # grey, as some cameras give


def test_large_jpegs_are_decoded_at_reduced_size_small_ones_exactly(demo):
    coffee = cv2.imread(str(DEMO / "samples" / "coffee.jpg"))
    big = cv2.resize(coffee, (4000, 3000), interpolation=cv2.INTER_CUBIC)
    data = jpeg_bytes(big, quality=90)
    reduced = decode_image(data, spec=demo.spec.input)
    assert reduced.shape == (750, 1000, 3)  # 1/4: still 2.9x the 256 pixels the model needs
    full = decode_image(data)
    assert full.shape == (3000, 4000, 3)
    assert demo.predict(reduced).predictions[0].tag_name == demo.predict(full).predictions[0].tag_name == "espresso"
    small = jpeg_bytes(cv2.resize(big, (640, 480), interpolation=cv2.INTER_AREA))
    assert np.array_equal(decode_image(small, spec=demo.spec.input), decode_image(small))


# --- the memory budget shared by every decode ---------------------------------------------

def test_budget_makes_a_second_decode_wait_and_nesting_is_free():
    budget = limits.MemoryBudget(100, wait_s=5)
    order = []

    def second() -> None:
        with budget.reserve(80):
            order.append("second")

    with budget.reserve(80):
        with budget.reserve(80):  # same thread: already counted
            pass
        thread = threading.Thread(target=second)
        thread.start()
        assert wait_for(lambda: budget.waiting == 1, timeout=5)  # the other thread waits for room
        order.append("first done")
    thread.join(5)
    assert order == ["first done", "second"] and budget.in_use == 0
    with budget.reserve(10_000):  # more than the whole budget: waits for all of it, then runs
        assert budget.in_use == 100


def test_decodes_wait_for_the_budget_then_give_up_but_camera_frames_go_on(demo, set_limits):
    set_limits(decode_budget_mb=4, decode_wait_s=0)
    budget = limits.decode_budget()
    frame = np.zeros((480, 640, 3), np.uint8)
    data = jpeg_bytes(frame)
    errors: list[Exception] = []
    prepared: list[object] = []

    def other_thread() -> None:
        prepared.append(demo.prepare(frame))  # a camera frame already exists: it never waits
        try:
            decode_image(data)
        except ImageBusyError as exc:
            errors.append(exc)

    with budget.reserve(budget.total):  # another request holds it all
        thread = threading.Thread(target=other_thread)
        thread.start()
        thread.join(10)
    assert len(prepared) == 1 and len(errors) == 1 and "EDGE_RUNTIME_DECODE_BUDGET_MB" in str(errors[0])
    assert budget.in_use == 0
    with decoded(data, spec=demo.spec.input) as image:
        assert budget.in_use == 640 * 480 * 6 and demo.predict(image).predictions  # nested: no deadlock
    assert budget.in_use == 0


def test_a_full_budget_is_a_503_and_the_server_keeps_serving(demo):
    from edge_runtime.config import load_settings
    from edge_runtime.serve import build_services
    from edge_runtime.server import create_app
    from tests.server_util import running

    settings = load_settings(env={}, overrides={"limits": {"decode_wait_s": 0}})  # serve installs its limits
    app = create_app(build_services(settings, predictor=demo, env={}))
    coffee = (DEMO / "samples" / "coffee.jpg").read_bytes()
    with running(app) as url:
        budget = limits.decode_budget()
        with budget.reserve(budget.total):
            busy = httpx.post(f"{url}/image", content=coffee, timeout=30)
        assert busy.status_code == 503 and busy.json()["code"] == "ServiceUnavailable"
        assert httpx.post(f"{url}/image", content=coffee, timeout=30).status_code == 200


@pytest.mark.parametrize(("fmt", "side"), [("PNG", 5300), ("BMP", 5300), ("GIF", 4700), ("WEBP", 4700)])
def test_an_image_that_alone_needs_more_than_the_budget_is_refused_unread(fmt, side, demo):
    small = encode(np.zeros((64, 64, 3), np.uint8), fmt)
    kind = sniff(small)
    claimed = bytearray(small)  # the same bytes with a header claiming side x side pixels
    at = {"png": (16, ">II"), "bmp": (18, "<ii"), "gif": (6, "<HH")}.get(kind)
    if at is None:  # lossless WebP: 14-bit sides minus one after the 0x2f signature
        claimed[21:25] = ((side - 1) | (side - 1) << 14).to_bytes(4, "little")
    else:
        struct.pack_into(at[1], claimed, at[0], side, side)
    assert header_size(bytes(claimed), kind) == (side, side)
    with pytest.raises(ImageTooLargeError, match="EDGE_RUNTIME_DECODE_BUDGET_MB"):
        decode_image(bytes(claimed), spec=demo.spec.input)


# --- files: never read without a cap ----------------------------------------------------------

def test_reading_an_endless_file_stops_at_the_cap(set_limits):
    set_limits(max_image_file_bytes=MiB)
    started = time.perf_counter()
    with pytest.raises(ImageDecodeError, match="/dev/zero: larger than the 1048576-byte limit"):
        read_image("/dev/zero")
    assert time.perf_counter() - started < 2


def test_predict_on_dev_zero_is_one_line(exports):
    proc = cli("predict", exports["modern"], "/dev/zero", env={"EDGE_RUNTIME_MAX_IMAGE_FILE_BYTES": str(8 * MiB)})
    assert proc.returncode == 1 and one_line(proc.stderr) and "limit" in proc.stderr, proc.stderr


def test_predict_refuses_hostile_images_in_one_line_each_and_goes_on(exports, tmp_path):
    files = {"thin.png": encode(np.zeros((20000, 4, 3), np.uint8), "PNG"), "radiance.hdr": HOSTILE_FORMATS["hdr"],
             "ok.png": encode(np.full((48, 64, 3), (0, 0, 255), np.uint8), "PNG")}
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    proc = cli("predict", exports["modern"], *(tmp_path / n for n in files),
               env={"TMPDIR": str(scratch), "OPENCV_TEMP_PATH": str(scratch)})
    assert proc.returncode == 1 and "red" in proc.stdout, proc.stderr
    errors = proc.stderr.strip().splitlines()
    assert len(errors) == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert "thin.png" in errors[0] and "EDGE_RUNTIME_MAX_ASPECT_RATIO" in errors[0]
    assert "radiance.hdr" in errors[1] and "JPEG, PNG, BMP, GIF or WebP" in errors[1]
    assert list(scratch.iterdir()) == []


@pytest.mark.parametrize("name", ["labels.txt", "cvexport.manifest", "metadata_properties.json"])
def test_oversized_bundle_files_are_refused(name, exports, tmp_path):
    folder = copy_export(exports["modern"], tmp_path)
    with open(folder / name, "wb") as f:
        f.write(b"a\n" * (3 * MiB))
    with pytest.raises(BundleError, match="limit"):
        open_bundle(folder)


def test_the_opset_reader_skips_the_graph_and_stops_on_endless_input():
    from edge_runtime.model.onnx_header import read_opsets

    assert read_opsets(DEMO / "model.onnx") == {"": 13}
    started = time.perf_counter()
    assert read_opsets(Path("/dev/zero")) == {}
    assert time.perf_counter() - started < 5


# --- zips: unpacked once into a cache keyed by their hash, never into /tmp -------------------

def copy_export(folder: Path, tmp_path: Path, name: str = "copy") -> Path:
    target = tmp_path / name
    target.mkdir()
    for f in folder.iterdir():
        (target / f.name).write_bytes(f.read_bytes())
    return target


def test_zips_are_unpacked_once_into_the_cache_and_old_ones_pruned(exports, tmp_path):
    zips = []
    for i in range(5):
        folder = copy_export(exports["modern"], tmp_path, f"e{i}")
        (folder / "notes.txt").write_text(str(i))  # a different hash each
        zips.append(models.zip_folder(folder, tmp_path / f"e{i}.zip"))
    first = open_bundle(zips[0]).root
    assert first.is_relative_to(tmp_path / "cache" / "edge-runtime" / "bundles") and (first / COMPLETE).is_file()
    stamp = (first / "model.onnx").stat().st_mtime_ns
    assert open_bundle(zips[0]).root == first
    assert (first / "model.onnx").stat().st_mtime_ns == stamp  # reused, not unpacked again
    stale = first.parent / f"{PARTIAL_PREFIX}dead"
    stale.mkdir()
    os.utime(stale, (0, 0))
    for z in zips[1:]:
        open_bundle(z)
    assert sorted(p.name for p in first.parent.iterdir()) == sorted(
        open_bundle(z).root.name for z in zips[2:])  # three kept; the oldest and the dead partial gone


def test_cache_goes_where_systemd_says_else_a_private_temporary_folder(tmp_path):
    assert cache_root({"CACHE_DIRECTORY": str(tmp_path / "sd")}) == tmp_path / "sd" / "bundles"
    fallback = cache_root({"XDG_CACHE_HOME": "/proc/no-such-place", "HOME": "/proc"})
    assert fallback.parent.name == f"edge-runtime-{os.getuid()}"
    assert fallback.parent.stat().st_mode & 0o077 == 0


def test_a_killed_server_leaves_nothing_in_tmp(exports, tmp_path):
    """The zip is unpacked into the cache, so SIGTERM (re-raised by uvicorn) leaks nothing."""
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    zipped = models.zip_folder(exports["modern"], tmp_path / "modern.zip")
    env = {"TMPDIR": str(tmp), "OPENCV_TEMP_PATH": str(tmp), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    for _ in range(2):
        with running_server(zipped, env) as (_url, _proc):
            pass
    assert list(tmp.iterdir()) == []
    assert len(list((tmp_path / "cache" / "edge-runtime" / "bundles").iterdir())) == 1


# --- manifests: names stay inside the bundle, values have the right type -------------------

@pytest.mark.parametrize(("key", "name"), [
    ("LabelFileName", "/etc/passwd"), ("LabelFileName", "../../etc/passwd"), ("LabelFileName", "..\\..\\x"),
    ("MetadataPropsFileName", "/proc/self/environ"), ("MetadataPropsFileName", "sub/../../x.json"),
    ("ModelFileName", "../copy/model.onnx"), ("ModelFileName", "/dev/zero"), ("LabelFileName", "C:x"),
    ("LabelFileName", "link.txt"),
])
def test_manifest_names_that_leave_the_bundle_are_refused(key, name, exports, tmp_path):
    folder = copy_export(exports["modern"], tmp_path)
    (folder / "link.txt").symlink_to("/etc/passwd")
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest[key] = name
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"{key} .* is outside the bundle folder"):
        open_bundle(folder)


@pytest.mark.parametrize(("key", "value"), [("ModelFileName", 5), ("LabelFileName", ["labels.txt"]),
                                            ("MetadataPropsFileName", {"a": 1}), ("ModelFileSHA1", 1.5),
                                            ("DomainType", True), ("IterationId", [])])
def test_manifest_values_of_the_wrong_type(key, value, exports, tmp_path):
    folder = copy_export(exports["modern"], tmp_path)
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest[key] = value
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    with pytest.raises(BundleError, match=f"{key} should be text"):
        open_bundle(folder)


@pytest.mark.parametrize("name", ["cvexport.manifest", "metadata_properties.json", "bundle.json"])
@pytest.mark.parametrize("nest", ["[", '{"a":'])
def test_deeply_nested_json(name, nest, exports, tmp_path):
    folder = copy_export(exports["modern"], tmp_path)
    (folder / name).write_text(nest * 100_000)
    with pytest.raises(BundleError, match=f"{name}: not valid JSON"):
        open_bundle(folder)


# --- zips that crash extraction --------------------------------------------------------------

def _patch_zip(path: Path, method: int | None = None, flags: int | None = None) -> None:
    data = bytearray(path.read_bytes())
    for signature, method_at, flags_at in ((b"PK\x03\x04", 8, 6), (b"PK\x01\x02", 10, 8)):
        start = data.find(signature)
        while start >= 0:
            if method is not None:
                data[start + method_at: start + method_at + 2] = method.to_bytes(2, "little")
            if flags is not None:
                data[start + flags_at: start + flags_at + 2] = flags.to_bytes(2, "little")
            start = data.find(signature, start + 4)
    path.write_bytes(bytes(data))


def hostile_zip(kind: str, tmp_path: Path) -> Path:
    path = tmp_path / f"{kind}.zip"
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("model.onnx", models.color_classifier())
        zf.writestr("labels.txt", "\n".join(models.COLOR_TAGS))
        if kind == "file-and-folder":
            zf.writestr("labels.txt/inner.txt", "x")
        elif kind == "folder-then-file":
            zf.writestr("sub/", "")
            zf.writestr("sub", "x")
        elif kind == "long-name":
            zf.writestr("a" * 300 + ".txt", "x")
        elif kind == "long-path":
            zf.writestr("/".join(["d" * 200] * 8) + "/x.txt", "x")
        elif kind == "duplicate":
            with pytest.warns(UserWarning):
                zf.writestr("labels.txt", "x")
    if kind == "deflate64":
        _patch_zip(path, method=9)
    elif kind == "encrypted":
        _patch_zip(path, flags=1)
    elif kind == "unknown-method":
        _patch_zip(path, method=99)
    elif kind == "huge-directory":  # the end record claims a 4 GB list of members
        data = bytearray(path.read_bytes())
        struct.pack_into("<I", data, data.rfind(b"PK\x05\x06") + 12, 0xFFFFFF00)
        path.write_bytes(bytes(data))
    return path


ZIP_CASES = ["deflate64", "encrypted", "unknown-method", "file-and-folder", "folder-then-file", "long-name",
             "long-path", "duplicate", "huge-directory"]


@pytest.mark.parametrize("kind", ZIP_CASES)
def test_hostile_zip_members_are_one_bundle_error(kind, tmp_path):
    path = hostile_zip(kind, tmp_path)
    with pytest.raises(BundleError) as caught:
        open_bundle(path)
    assert "\n" not in str(caught.value)
    bundles = tmp_path / "cache" / "edge-runtime" / "bundles"
    assert not bundles.exists() or list(bundles.iterdir()) == []  # nothing half-unpacked is left


# --- metadata numbers: finite and within range, with the key named ---------------------------

BAD_METADATA = [
    ("CustomVision.Preprocess.TargetWidth", "Infinity"), ("CustomVision.Preprocess.TargetWidth", "1e12"),
    ("CustomVision.Preprocess.TargetWidth", "100000"), ("CustomVision.Preprocess.TargetHeight", "NaN"),
    ("CustomVision.Preprocess.TargetHeight", "-inf"), ("CustomVision.Preprocess.TargetHeight", "2"),
    ("CustomVision.Preprocess.CropWidth", "1e308"), ("CustomVision.Preprocess.CropHeight", "5000"),
    ("CustomVision.Preprocess.MaxDimension", "1"), ("CustomVision.Preprocess.MaxDimension", "Infinity"),
    ("CustomVision.Preprocess.MinDimension", "Infinity"), ("CustomVision.Preprocess.MaxScale", "NaN"),
    ("CustomVision.Preprocess.NormalizeMean", "[NaN, 0, 0]"),
    ("CustomVision.Preprocess.NormalizeMean", "[Infinity, 0, 0]"),
    ("CustomVision.Preprocess.NormalizeMean", "[1e9, 0, 0]"),
    ("CustomVision.Preprocess.NormalizeStd", "[-1, 1, 1]"), ("CustomVision.Preprocess.NormalizeStd", "[NaN]"),
    ("CustomVision.Preprocess.NormalizeStd", "[Infinity, 1, 1]"),
    ("CustomVision.Preprocess.NormalizeStd", "[" * 5000 + "]" * 5000),
    ("CustomVision.Postprocess.Yolo.NmsThreshold", "5"),
]


@pytest.mark.parametrize(("key", "value"), BAD_METADATA)
def test_metadata_numbers_out_of_range_name_the_key(key, value, tmp_path):
    folder = models.write_export(tmp_path / "e", models.color_classifier(metadata={}), models.COLOR_TAGS,
                                 metadata=models.modern_metadata(**{key: value}))
    with pytest.raises(MetadataError, match=re.escape(key)) as caught:
        Predictor.load(folder, warm_up=False)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("value", ["[NaN, 1]", "[1, 2, 3]", "[-1, 2]", "[1e300, 1]"])
def test_yolo_anchors_out_of_range_name_the_key(value, tmp_path):
    meta = {"CustomVision.Postprocess.Method": "Yolo", "CustomVision.Postprocess.Yolo.Biases": value}
    folder = models.write_export(tmp_path / "y", models.yolo_detector(metadata={}), ("red", "green"),
                                 metadata=meta, domain="ObjectDetection")
    with pytest.raises(MetadataError, match="Yolo.Biases"):
        Predictor.load(folder, warm_up=False)


@pytest.mark.parametrize("case", ["zip:deflate64", "zip:encrypted", "zip:file-and-folder", "zip:long-name",
                                  "json", "manifest", "metadata"])
def test_the_cli_prints_one_line_for_hostile_bundles(case, exports, tmp_path):
    if case.startswith("zip:"):
        target = hostile_zip(case[4:], tmp_path)
    else:
        target = copy_export(exports["modern"], tmp_path)
        if case == "json":
            (target / "cvexport.manifest").write_text("[" * 100_000)
        elif case == "manifest":
            (target / "cvexport.manifest").write_text(json.dumps({"LabelFileName": "/etc/passwd"}))
        else:
            meta = models.modern_metadata(**{"CustomVision.Preprocess.TargetWidth": "Infinity"})
            (target / "metadata_properties.json").write_text(json.dumps(meta))
            (target / "model.onnx").write_bytes(models.color_classifier(metadata={}))
            (target / "cvexport.manifest").unlink()
    proc = cli("inspect", target, env={"XDG_CACHE_HOME": str(tmp_path / "cache")})
    assert proc.returncode == 1 and one_line(proc.stderr), proc.stderr


# --- the real server: peak memory and temporary files under hostile uploads (slow) -----------

class running_server:
    """`edge-runtime serve MODEL` in a subprocess on a free loopback port; SIGTERM on exit."""

    def __init__(self, model: Path, env: dict[str, str]) -> None:
        self.model, self.env = model, env

    def __enter__(self) -> tuple[str, subprocess.Popen[str]]:
        port = free_port()
        env = {**os.environ, **self.env}
        env.pop("EDGE_RUNTIME_TOKEN", None)
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "edge_runtime.cli", "serve", str(self.model), "--port", str(port)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        url = f"http://127.0.0.1:{port}"

        def up() -> bool:
            try:
                return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
            except httpx.HTTPError:
                return self.proc.poll() is not None

        assert wait_for(up, timeout=90) and self.proc.poll() is None, self.proc.communicate()[0]
        return url, self.proc

    def __exit__(self, *exc: object) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.communicate(timeout=20)
        finally:
            self.proc.kill()


def peak_rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024  # type: ignore[union-attr]


def post_many(url: str, bodies: list[bytes]) -> list[httpx.Response]:
    def one(body: bytes) -> httpx.Response:
        return httpx.post(f"{url}/image", content=body, timeout=180)

    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        return list(pool.map(one, bodies))


@pytest.mark.adversarial
@pytest.mark.slow
def test_served_uploads_under_4_mb_keep_peak_memory_and_tmp_bounded(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    zipped = models.zip_folder(DEMO, tmp_path / "demo.zip")
    env = {"TMPDIR": str(tmp), "OPENCV_TEMP_PATH": str(tmp), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    thin = [encode(np.zeros((h, w, 3), np.uint8), "PNG") for w, h in [(1, 65535), (1, 20000), (4, 20000)]]
    thin.append(encode(np.zeros((1, 20, 3), np.uint8), "PNG")[:16] + (1_000_000).to_bytes(4, "big")
                + encode(np.zeros((1, 20, 3), np.uint8), "PNG")[20:])
    huge_png = encode(np.zeros((8192, 8192, 3), np.uint8), "PNG")  # 64 megapixels: 384 MiB to decode
    big_png = encode(np.zeros((5000, 5000, 3), np.uint8), "PNG")  # 25 megapixels: within the budget
    y, x = np.mgrid[0:6000, 0:6000]
    big_jpeg = jpeg_bytes(np.dstack([x % 256, y % 256, (x // 24) % 256]).astype(np.uint8), quality=60)
    assert all(len(b) < 4 * MiB for b in [*thin, huge_png, big_png, big_jpeg])

    with running_server(zipped, env) as (url, proc):
        normal = httpx.post(f"{url}/image", content=(DEMO / "samples" / "coffee.jpg").read_bytes(), timeout=60)
        assert normal.status_code == 200
        before = peak_rss_mb(proc.pid)
        for body in thin:
            r = httpx.post(f"{url}/image", content=body, timeout=60)
            assert r.status_code == 400 and "EDGE_RUNTIME_MAX_ASPECT_RATIO" in r.json()["message"], r.text
        assert {r.status_code for r in post_many(url, thin[2:3] * 6)} == {400}
        refused = post_many(url, [huge_png] * 16)
        assert {r.status_code for r in refused} == {400}
        assert "EDGE_RUNTIME_DECODE_BUDGET_MB" in refused[0].json()["message"]
        for body in (big_png, big_jpeg):  # decoded one or a few at a time; a 503 asks to retry
            codes = [r.status_code for r in post_many(url, [body] * 16)]
            assert set(codes) <= {200, 503} and 200 in codes, codes
            print(f"16 at once: {codes.count(200)} answered, {codes.count(503)} asked to retry")
        hdr = HOSTILE_FORMATS["hdr"] + b"\0" * 100_000
        assert {r.status_code for r in post_many(url, [hdr] * 16)} == {400}
        growth = peak_rss_mb(proc.pid) - before
        print(f"serve: peak RSS {before:.0f} MB after a normal upload, grew {growth:.0f} MB under attack")
        assert httpx.get(f"{url}/healthz", timeout=5).status_code == 200
        assert growth < 300, f"peak RSS grew by {growth:.0f} MB"
        assert list(tmp.iterdir()) == []
    assert list(tmp.iterdir()) == []  # nothing left after SIGTERM either


@pytest.mark.timeout(20)
def test_a_fifo_in_an_image_folder_is_refused_not_waited_on(tmp_path):
    os.mkfifo(tmp_path / "frame.jpg")
    with pytest.raises(ImageDecodeError, match="not a regular file"):
        read_image(tmp_path / "frame.jpg")
    with pytest.raises(ImageDecodeError, match="not a regular file|Is a directory"):
        read_image(tmp_path)
