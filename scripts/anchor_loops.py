"""Three ways other projects run a Custom Vision export over a video, to compare with ours.

    python scripts/anchor_loops.py sequential   CLIP [MODEL] [--seconds 20]
    python scripts/anchor_loops.py iotedge      CLIP [MODEL] [--seconds 20]
    python scripts/anchor_loops.py onnx-sample  CLIP [MODEL] [--seconds 20]

Each prints the frames per second it sustained over a looped clip.

- sequential: read a frame with OpenCV, predict, repeat (this runtime's predictor, no overlap).
- iotedge: the shape of Azure IoT Edge's Custom Vision sample: a capture module re-encodes
  each frame as JPEG and POSTs it over HTTP to a classifier module (here `edge-runtime
  serve` with no camera), one request at a time.
- onnx-sample: the Python path of Microsoft's ONNX export sample: PIL converts and resizes
  each frame, NumPy builds the tensor, onnxruntime runs it, NumPy picks the top tag.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

DEMO = Path(__file__).resolve().parent.parent / "edge_runtime" / "demo"


def frames(clip: Path) -> Callable[[], np.ndarray]:
    """A reader that loops the clip forever."""
    cap = cv2.VideoCapture(str(clip))

    def read() -> np.ndarray:
        nonlocal cap
        ok, frame = cap.read()
        if not ok:
            cap.release()
            cap = cv2.VideoCapture(str(clip))
            ok, frame = cap.read()
        assert ok, f"cannot read {clip}"
        return frame

    return read


def rate(step: Callable[[], object], seconds: float) -> float:
    for _ in range(5):  # warm up
        step()
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
        step()
        count += 1
    return count / (time.perf_counter() - start)


def sequential(clip: Path, model: Path, seconds: float) -> float:
    from edge_runtime.model.predictor import Predictor

    predictor = Predictor.load(model)
    read = frames(clip)
    return rate(lambda: predictor.predict(read()), seconds)


def iotedge(clip: Path, model: Path, seconds: float) -> float:
    import socket

    import requests

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", str(model), "--port", str(port)],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/image"
        session = requests.Session()
        deadline = time.monotonic() + 60
        while True:
            try:
                session.get(f"http://127.0.0.1:{port}/healthz", timeout=1)
                break
            except requests.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        read = frames(clip)

        def step() -> None:
            _, jpeg = cv2.imencode(".jpg", read())
            response = session.post(url, data=jpeg.tobytes(), headers={"Content-Type": "application/octet-stream"})
            response.raise_for_status()

        return rate(step, seconds)
    finally:
        server.terminate()
        server.wait(10)


def onnx_sample(clip: Path, model: Path, seconds: float) -> float:
    import onnxruntime as ort
    from PIL import Image

    from edge_runtime.model.bundle import open_bundle

    bundle = open_bundle(model)
    session = ort.InferenceSession(str(bundle.model_path), providers=["CPUExecutionProvider"])
    info = session.get_inputs()[0]
    height, width = info.shape[2], info.shape[3]
    output = session.get_outputs()[0].name
    labels = bundle.labels or ()
    read = frames(clip)

    def step() -> str:
        image = Image.fromarray(cv2.cvtColor(read(), cv2.COLOR_BGR2RGB)).convert("RGB")
        image = image.resize((width, height), Image.BILINEAR)
        inputs = np.array(image, dtype=np.float32)[np.newaxis] / 255.0
        inputs = np.ascontiguousarray(np.transpose(inputs, (0, 3, 1, 2)))
        scores = session.run([output], {info.name: inputs})[0][0]
        return labels[int(np.argmax(scores))] if labels else str(int(np.argmax(scores)))

    return rate(step, seconds)


LOOPS: dict[str, Callable[[Path, Path, float], float]] = {
    "sequential": sequential, "iotedge": iotedge, "onnx-sample": onnx_sample,
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("loop", choices=sorted(LOOPS))
    parser.add_argument("clip", type=Path)
    parser.add_argument("model", type=Path, nargs="?", default=DEMO)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args()
    print(f"{args.loop}: {LOOPS[args.loop](args.clip, args.model, args.seconds):.1f} frames/s")


if __name__ == "__main__":
    main()
