"""Run Custom Vision ONNX exports on edge devices."""

import os

# The default limit on the pixels of one image (decompression bombs): 64 Mpx covers 48 Mpx
# phone photos. The server's limit is `server.max_image_pixels`, which may raise or lower
# it. It is checked by our own code, so it does not depend on when OpenCV was imported:
# OpenCV reads OPENCV_IO_MAX_IMAGE_PIXELS once, when it loads, and its own default
# (2**30 pixels) stays in place as a last backstop.
MAX_IMAGE_PIXELS = 1 << 26

# onnxruntime's Linux builds start a telemetry uploader on import, which also writes a
# session file into the temporary folder; a device that runs offline has no use for it.
# It reads this once, before its first use; set ORT_DISABLE_TELEMETRY=0 yourself to keep it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
