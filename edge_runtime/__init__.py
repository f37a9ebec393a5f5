"""Run Custom Vision ONNX exports on edge devices."""

import os

# onnxruntime's Linux builds start a telemetry uploader on import, which also writes a
# session file into the temporary folder; a device that runs offline has no use for it.
# It reads this once, before its first use; set ORT_DISABLE_TELEMETRY=0 yourself to keep it.
os.environ.setdefault("ORT_DISABLE_TELEMETRY", "1")

__version__ = "0.1.0"
