"""Decode uploaded or stored images into BGR uint8 frames, refusing what is not one.

OpenCV's IMREAD_COLOR already applies EXIF orientation and turns grayscale, alpha and
16-bit images into 8-bit BGR, as the exported container does with PIL's convert("RGB").

Nothing reaches a decoder before its cost is known. The format is recognised by its
first bytes (JPEG, PNG, BMP, GIF and WebP, the formats Custom Vision takes: OpenCV's
other decoders include some that write the upload to a temporary file), and the size is
read from the header (the few documented bytes of each format, so no decoder runs).
Then the shape is checked against the limits, the decoder's memory is reserved from the
process-wide decode budget (or the image refused if it alone would exceed it), and a
large JPEG is decoded at 1/2, 1/4 or 1/8 size when the network needs far fewer pixels
(libjpeg scales while decoding, so the full image never exists).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import cv2
import numpy as np

from ..errors import ImageDecodeError, ImageFormatError, ImageTooLargeError
from ..types import InputSpec
from .limits import MAX_IMAGE_PIXELS, current, decode_budget, read_file_capped
from .preprocess import check_aspect, check_bounds, reduction

JPEG_SOI, JPEG_SOS, JPEG_EOI = b"\xff\xd8", b"\xff\xda", b"\xff\xd9"
ACCEPTED = "JPEG, PNG, BMP, GIF or WebP"
# Peak bytes per decoded pixel, measured with OpenCV 5 (the decoder's buffer, then the
# BGR result it is copied into); GIF and WebP decode through a 4-channel canvas.
DECODE_BYTES_PER_PIXEL = {"jpeg": 6, "png": 6, "bmp": 6, "gif": 8, "webp": 8}
REDUCED_FLAGS = {1: cv2.IMREAD_COLOR, 2: cv2.IMREAD_REDUCED_COLOR_2, 4: cv2.IMREAD_REDUCED_COLOR_4,
                 8: cv2.IMREAD_REDUCED_COLOR_8}
# JPEG start-of-frame markers: C0-CF except DHT (C4), JPG (C8) and DAC (CC).
JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC}
JPEG_STANDALONE = frozenset(range(0xD0, 0xD8)) | {0x01}


def sniff(data: bytes) -> str:
    """The format named by the first bytes; ImageFormatError for anything not accepted."""
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data.startswith(b"BM"):
        return "bmp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "gif"
    if data.startswith(b"RIFF") and data[8:12] == b"WEBP":
        return "webp"
    raise ImageFormatError(f"not a {ACCEPTED} image (recognised by its first bytes)")


def _jpeg_size(data: bytes) -> tuple[int, int]:
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:  # stray bytes between segments: libjpeg skips them too
            pos = data.find(b"\xff", pos)
            if pos < 0:
                break
            continue
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in JPEG_STANDALONE:
            pos += 2
            continue
        if marker == JPEG_SOS[1]:
            break
        (length,) = struct.unpack_from(">H", data, pos + 2)
        if marker in JPEG_SOF and pos + 9 <= len(data):
            height, width = struct.unpack_from(">HH", data, pos + 5)
            return width, height
        pos += 2 + length
    raise ImageDecodeError("not a decodable image (a JPEG without a frame header)")


def _webp_size(data: bytes) -> tuple[int, int]:
    chunk = data[12:16]
    if chunk == b"VP8 " and data[23:26] == b"\x9d\x01\x2a":
        width, height = struct.unpack_from("<HH", data, 26)
        return width & 0x3FFF, height & 0x3FFF
    if chunk == b"VP8L" and data[20:21] == b"\x2f":
        (bits,) = struct.unpack_from("<I", data, 21)
        return (bits & 0x3FFF) + 1, ((bits >> 14) & 0x3FFF) + 1
    if chunk == b"VP8X":
        width = int.from_bytes(data[24:27], "little") + 1
        height = int.from_bytes(data[27:30], "little") + 1
        return width, height
    raise ImageDecodeError("not a decodable image (a WebP without a known image chunk)")


def header_size(data: bytes, kind: str) -> tuple[int, int]:
    """(width, height) as the header states them; what a decoder would allocate."""
    try:
        if kind == "jpeg":
            return _jpeg_size(data)
        if kind == "png" and data[12:16] == b"IHDR":
            width, height = struct.unpack_from(">II", data, 16)
            return width, height
        if kind == "gif":
            width, height = struct.unpack_from("<HH", data, 6)
            return width, height
        if kind == "bmp":
            (header,) = struct.unpack_from("<I", data, 14)
            if header == 12:  # OS/2 BITMAPCOREHEADER
                width, height = struct.unpack_from("<HH", data, 18)
                return width, height
            width, height = struct.unpack_from("<ii", data, 18)
            return abs(width), abs(height)
        if kind == "webp":
            return _webp_size(data)
    except struct.error:
        pass
    raise ImageDecodeError(f"not a decodable image (the {kind.upper()} header is cut short or damaged)")


@contextmanager
def decoded(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, spec: InputSpec | None = None) -> Iterator[np.ndarray]:
    """Decode within the limits and hold its share of the decode budget while in use.

        with decoded(upload, spec=predictor.spec.input) as frame:
            result = predictor.predict(frame)

    With a `spec`, the work its preprocessing would do is checked first, and a large JPEG
    may be decoded at reduced size; without one, the image is decoded at full size.
    """
    if not data:
        raise ImageDecodeError("empty image")
    kind = sniff(data)
    width, height = header_size(data, kind)
    if width < 1 or height < 1:
        raise ImageDecodeError(f"not a decodable image (its header says {width}x{height} pixels)")
    if width * height > max_pixels:  # server.max_image_pixels may raise or lower the default
        raise ImageTooLargeError(f"image is {width}x{height}; at most {max_pixels} pixels")
    if spec is None:
        check_aspect(width, height)
        factor = 1
    else:
        check_bounds(width, height, spec)
        factor = reduction(width, height, spec) if kind == "jpeg" else 1
    if kind == "jpeg" and data.rfind(JPEG_EOI) < data.rfind(JPEG_SOS):
        # OpenCV 4 returns a half-grey picture for a cut-off JPEG; refuse it on every version.
        raise ImageDecodeError("truncated JPEG: the data ends before the image does")
    cost = -(-width // factor) * -(-height // factor) * DECODE_BYTES_PER_PIXEL[kind]
    budget = decode_budget()
    if cost > budget.total:
        raise ImageTooLargeError(
            f"decoding this {width}x{height} {kind.upper()} needs about {cost >> 20} MiB; "
            f"at most {budget.total >> 20} MiB (EDGE_RUNTIME_DECODE_BUDGET_MB)"
        )
    with budget.reserve(cost):
        try:
            image = cv2.imdecode(np.frombuffer(data, np.uint8), REDUCED_FLAGS[factor])
        except cv2.error as exc:
            if "MAX_IMAGE_PIXELS" in str(exc) or "validateInputImageSize" in str(exc):
                raise ImageTooLargeError(f"image has more than {MAX_IMAGE_PIXELS} pixels") from exc
            raise ImageDecodeError("not a decodable image") from exc
        if image is None:
            raise ImageDecodeError("not a decodable image (corrupt or truncated data)")
        if image.shape[0] * image.shape[1] > max_pixels:  # the header lied
            raise ImageTooLargeError(f"image is {image.shape[1]}x{image.shape[0]}; at most {max_pixels} pixels")
        yield image


def decode_image(data: bytes, max_pixels: int = MAX_IMAGE_PIXELS, spec: InputSpec | None = None) -> np.ndarray:
    """Bytes of an image file -> BGR uint8 array; ImageError if they are not a usable image."""
    with decoded(data, max_pixels, spec) as image:
        return image


def read_image_bytes(path: str | Path) -> bytes:
    """An image file's bytes, at most EDGE_RUNTIME_MAX_IMAGE_FILE_BYTES of them."""
    return read_file_capped(Path(path), current().max_image_file_bytes, ImageDecodeError)


def read_image(path: str | Path, max_pixels: int = MAX_IMAGE_PIXELS, spec: InputSpec | None = None) -> np.ndarray:
    data = read_image_bytes(path)
    try:
        return decode_image(data, max_pixels, spec)
    except (ImageDecodeError, ImageTooLargeError) as exc:
        raise type(exc)(f"{path}: {exc}") from exc


def to_bgr8(frame: np.ndarray) -> np.ndarray:
    """Any camera or library frame (gray, BGRA, 16-bit) -> BGR uint8."""
    if frame.ndim >= 2 and frame.shape[0] * frame.shape[1] > MAX_IMAGE_PIXELS:
        raise ImageTooLargeError(f"frame is {frame.shape[1]}x{frame.shape[0]}; at most {MAX_IMAGE_PIXELS} pixels")
    if frame.dtype == np.uint16:
        frame = (frame >> 8).astype(np.uint8)
    elif frame.dtype != np.uint8:
        raise ImageDecodeError(f"frames must be uint8 or uint16, not {frame.dtype}")
    if frame.ndim == 2 or (frame.ndim == 3 and frame.shape[2] == 1):
        return cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
    if frame.ndim == 3 and frame.shape[2] == 4:
        return cv2.cvtColor(frame, cv2.COLOR_BGRA2BGR)
    if frame.ndim == 3 and frame.shape[2] == 3:
        return frame
    raise ImageDecodeError(f"cannot use a frame shaped {frame.shape}")
