"""Run Custom Vision ONNX exports on edge devices."""

import os

# OpenCV reads this once, when it is first imported: it refuses to decode images with
# more pixels before allocating them (decompression bombs). 64 Mpx covers 48 Mpx phone
# photos. Set the variable yourself, before importing, to allow more.
MAX_IMAGE_PIXELS = int(os.environ.setdefault("OPENCV_IO_MAX_IMAGE_PIXELS", str(1 << 26)))

# onnxruntime's Linux builds start a telemetry uploader on import, which also writes a
# session file into the temporary folder; a device that runs offline has no use for it.
# It reads this once, before its first use; set ORT_DISABLE_TELEMETRY=0 yourself to keep it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
