"""Decoding uploads: orientation, odd pixel formats, and everything that is not an image."""

from __future__ import annotations

import io
import struct

import cv2
import numpy as np
import pytest
from PIL import Image

from edge_runtime.errors import ImageDecodeError, ImageTooLargeError
from edge_runtime.model.imageio import decode_image, read_image, to_bgr8
from tests.conftest import jpeg_bytes


def test_exif_orientation_is_applied():
    rgb = np.zeros((20, 40, 3), np.uint8)
    rgb[:, :20] = (255, 0, 0)  # left half red
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, "JPEG", exif=exif.tobytes(), quality=95)
    image = decode_image(buf.getvalue())
    assert image.shape[:2] == (40, 20)
    assert image[5, 10, 2] > 200 and image[35, 10, 2] < 50  # red is now on top


def test_grayscale_alpha_and_16_bit_become_bgr8():
    gray = np.tile(np.arange(0, 256, 4, dtype=np.uint8), (8, 1))
    for array, ext in [(gray, ".png"), (np.dstack([gray, gray, gray, gray]), ".png"),
                       ((gray.astype(np.uint16) * 257), ".png"), (gray, ".jpg")]:
        ok, data = cv2.imencode(ext, array)
        assert ok
        image = decode_image(data.tobytes())
        assert image.dtype == np.uint8 and image.shape == (8, 64, 3), (array.dtype, array.shape, ext)
        assert abs(int(image[0, 10, 0]) - 40) <= 2


def test_frames_from_libraries_are_normalised():
    assert to_bgr8(np.zeros((4, 4), np.uint8)).shape == (4, 4, 3)
    assert to_bgr8(np.zeros((4, 4, 4), np.uint8)).shape == (4, 4, 3)
    assert to_bgr8(np.full((4, 4, 3), 65535, np.uint16)).max() == 255
    with pytest.raises(ImageDecodeError):
        to_bgr8(np.zeros((4, 4, 3), np.float64))


def test_truncated_jpeg_is_refused():
    data = jpeg_bytes(np.random.default_rng(0).integers(0, 255, (200, 200, 3), dtype=np.uint8))
    with pytest.raises(ImageDecodeError, match="truncated"):
        decode_image(data[: len(data) // 2])
    decode_image(data + b"\0" * 16)  # padding after the end marker is fine


@pytest.mark.parametrize("data", [b"", b"hello, world", b"\x89PNG\r\n\x1a\n" + b"\0" * 40, b"GIF89a" + b"\0" * 4])
def test_not_an_image(data):
    with pytest.raises(ImageDecodeError):
        decode_image(data)


def test_decompression_bomb_is_refused_before_decoding():
    data = bytearray(jpeg_bytes(np.zeros((16, 16, 3), np.uint8)))
    sof = data.find(b"\xff\xc0")
    struct.pack_into(">HH", data, sof + 5, 40_000, 40_000)  # claim 40,000 x 40,000
    with pytest.raises(ImageTooLargeError):
        decode_image(bytes(data))


def test_pixel_limit_can_be_lowered():
    data = jpeg_bytes(np.zeros((100, 100, 3), np.uint8))
    with pytest.raises(ImageTooLargeError, match="100x100"):
        decode_image(data, max_pixels=5_000)


def test_read_image_names_the_file(tmp_path):
    path = tmp_path / "notes.jpg"
    path.write_text("not a picture")
    with pytest.raises(ImageDecodeError, match="notes.jpg"):
        read_image(path)
    with pytest.raises(ImageDecodeError, match="missing.jpg"):
        read_image(tmp_path / "missing.jpg")
