"""Run Custom Vision ONNX exports on edge devices."""

import os

# OpenCV reads this once, when it is first imported: it refuses to decode images with
# more pixels before allocating them (decompression bombs). 64 Mpx covers 48 Mpx phone
# photos. Set the variable yourself, before importing, to allow more.
MAX_IMAGE_PIXELS = int(os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 26)))

__version__ = "0.1.0"
