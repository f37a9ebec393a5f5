"""INT8 against FP32 on real photos: agreement, speed, and where the time goes.

    python scripts/bench_int8.py --photos DIR [MODEL] [--crops 24] [--frames 200] [--rounds 5]

The photos are split in two by name order: every other one calibrates, the rest are only
ever evaluated. Each photo gives `--crops` camera-like frames (random crops of 25-100% of
the area, flips, downscaling, brightness and contrast changes) put through the export's own
preprocessing. Two INT8 models are made from the same calibration frames with the recipe
`edge-runtime quantize` uses: with onnxruntime's rounding of each weight to its nearest
step, and with GPTQ rounding (edge_runtime/int8/rounding.py, what quantize writes). For each:

- top-1 agreement with FP32 on all evaluation frames, on those FP32 is sure of
  (probability above 0.5), on those where FP32's top-1 leads its second by 0.1 or more,
  and on near-ties (a lead under 0.01); the mean KL divergence of its probabilities from
  FP32's, and the median error of the probability of FP32's top-1;
- bare `session.run` speed against FP32, timed in alternation, with one thread and with
  onnxruntime's default threads (median over rounds of the per-round ratio);
- onnxruntime's own kernel times by kind of conv (one thread), which bound what INT8 can
  gain on this processor.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from collections import Counter
from pathlib import Path
from unittest import mock

import cv2
import numpy as np
import onnx
import onnxruntime as ort

from edge_runtime.capture.sources.images import IMAGE_SUFFIXES
from edge_runtime.int8 import quantize
from edge_runtime.int8.target import Target
from edge_runtime.model.bench import elapsed_ms, machine
from edge_runtime.model.predictor import Predictor
from edge_runtime.paths import DEMO_MODEL

SURE = 0.5
LEAD = 0.1  # FP32's top-1 ahead of its second by this much
TIE = 0.01  # ... or by less than this: a coin toss for any approximation of it


def camera_like(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    h, w = image.shape[:2]
    area, aspect = rng.uniform(0.25, 1.0), np.exp(rng.uniform(np.log(3 / 4), np.log(4 / 3)))
    cw, ch = int(min(w, np.sqrt(area * w * h * aspect))), int(min(h, np.sqrt(area * w * h / aspect)))
    x, y = rng.integers(0, w - cw + 1), rng.integers(0, h - ch + 1)
    out = image[y:y + ch, x:x + cw]
    if rng.random() < 0.5:
        out = out[:, ::-1]
    scale = rng.uniform(0.3, 1.0)
    if scale < 0.95:
        size = (max(32, int(out.shape[1] * scale)), max(32, int(out.shape[0] * scale)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA)
    if rng.random() < 0.3:
        gain, offset = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
        out = np.clip(out.astype(np.float32) * gain + offset, 0, 255).astype(np.uint8)
    return np.ascontiguousarray(out)


def frames(predictor: Predictor, photos: list[Path], crops: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    tensors = []
    for path in photos:
        image = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if image is None:
            raise SystemExit(f"{path}: not an image OpenCV can read")
        tensors += [predictor.prepare(camera_like(image, rng)).tensor for _ in range(crops)]
    return np.concatenate(tensors)


def session(path: Path, threads: int, profile: str | None = None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.log_severity_level = 3
    if profile:
        options.enable_profiling = True
        options.profile_file_prefix = profile
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def probabilities(path: Path, inputs: np.ndarray, name: str, output: str) -> np.ndarray:
    run = session(path, 0)
    return np.concatenate([run.run([output], {name: inputs[i:i + 1]})[0] for i in range(len(inputs))])


def agreement(reference: np.ndarray, other: np.ndarray) -> dict[str, float]:
    same = reference.argmax(1) == other.argmax(1)
    sure = reference.max(1) > SURE
    top2 = np.sort(reference, axis=1)[:, -2:]
    margin = top2[:, 1] - top2[:, 0]  # how far FP32's top-1 leads its second
    kl = (reference * (np.log(reference + 1e-12) - np.log(other + 1e-12))).sum(1)
    return {"all": same.mean(), "sure": same[sure].mean(), "sure_frames": int(sure.sum()), "kl": kl.mean(),
            "lead": same[margin >= LEAD].mean(), "lead_frames": int((margin >= LEAD).sum()),
            "tie": same[margin < TIE].mean(), "tie_frames": int((margin < TIE).sum()),
            "error": float(np.median(np.abs(other - reference)[np.arange(len(reference)), reference.argmax(1)]))}


def speed(paths: dict[str, Path], x: dict[str, np.ndarray], rounds: int, threads: int
          ) -> dict[str, tuple[float, float]]:
    """Median ms of each model and the median over rounds of FP32's time / its time."""
    sessions = {label: session(path, threads) for label, path in paths.items()}
    per: dict[str, list[float]] = {label: [] for label in sessions}
    for s in sessions.values():
        for _ in range(5):
            s.run(None, x)
    for _ in range(rounds):
        for label, s in sessions.items():
            per[label].append(statistics.median(elapsed_ms(lambda s=s: s.run(None, x)) for _ in range(20)))
    return {label: (statistics.median(ms), statistics.median(f / q for f, q in zip(per["FP32"], ms, strict=True)))
            for label, ms in per.items()}


def conv_kinds(graph: onnx.GraphProto) -> dict[str, str]:
    weights = {w.name: list(w.dims) for w in graph.initializer}
    kinds = {}
    for node in graph.node:
        if node.op_type == "Conv" and node.input[1] in weights:
            dims = weights[node.input[1]]
            kinds[node.name] = "depthwise" if dims[1] == 1 else "pointwise" if dims[2:] == [1, 1] else "other conv"
    return kinds


def kernel_ms(path: Path, x: dict[str, np.ndarray], kinds: dict[str, str], runs: int = 100) -> Counter[str]:
    """onnxruntime's kernel times per run, one thread, by kind of conv (the rest as 'other')."""
    with tempfile.TemporaryDirectory() as tmp:
        s = session(path, 1, profile=str(Path(tmp) / "profile"))
        for _ in range(runs):
            s.run(None, x)
        events = json.loads(Path(s.end_profiling()).read_text())
    totals: Counter[str] = Counter()
    for event in events:
        if event.get("cat") != "Node" or not event["name"].endswith("_kernel_time"):
            continue
        args, node = event["args"], event["name"].removesuffix("_kernel_time")
        kind = next((k for name, k in kinds.items() if node.startswith(name)), None)
        if kind is None and args.get("op_name") == "Conv":  # FP32's fused convs are named by output
            shape = next(iter(args["input_type_shape"][1].values()))
            kind = "depthwise" if shape[1] == 1 else "pointwise" if shape[2:] == [1, 1] else "other conv"
        totals[kind or "other"] += event["dur"] / runs / 1000
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", nargs="?", type=Path, default=DEMO_MODEL)
    parser.add_argument("--photos", type=Path, required=True, help="a folder of real photographs")
    parser.add_argument("--crops", type=int, default=24, help="frames made from each photo")
    parser.add_argument("--frames", type=int, default=200, help="calibration frames")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--target", type=Target, default=Target.X86_AVX2, choices=list(Target),
                        help="the chip the INT8 weights are for: 7-bit on x86-avx2, 8-bit on x86-vnni and arm64; "
                        "speed counts only when run on that chip")
    args = parser.parse_args()

    photos = sorted(p for p in args.photos.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    calibrating, evaluating = photos[0::2], photos[1::2]
    parent = Predictor.load(args.model, providers=["cpu"])
    name, output = parent.spec.input.name, parent.spec.output
    per_photo = -(-args.frames // max(1, len(calibrating)))
    calibration = frames(parent, calibrating, per_photo, args.seed)[:args.frames]
    evaluation = frames(parent, evaluating, args.crops, args.seed + 1)
    with tempfile.TemporaryDirectory() as tmp:
        paths = {"FP32": parent.bundle.model_path, "INT8, nearest rounding": Path(tmp) / "nearest.onnx",
                 "INT8, GPTQ rounding": Path(tmp) / "gptq.onnx"}
        batches = [calibration[i:i + 1] for i in range(len(calibration))]
        with mock.patch.object(quantize, "improve_rounding", lambda *a: 0):
            quantize._quantize(paths["FP32"], paths["INT8, nearest rounding"], name, batches, args.target)
        quantize._quantize(paths["FP32"], paths["INT8, GPTQ rounding"], name, batches, args.target)
        reference = probabilities(paths["FP32"], evaluation, name, output)
        figures = {label: agreement(reference, probabilities(path, evaluation, name, output))
                   for label, path in paths.items() if label != "FP32"}
        x = {name: evaluation[:1]}
        one, default = speed(paths, x, args.rounds, 1), speed(paths, x, args.rounds, 0)
        kinds = conv_kinds(onnx.load(str(paths["FP32"])).graph)
        kernels = {label: kernel_ms(path, x, kinds) for label, path in paths.items()}

    print(f"machine: {machine()}; onnxruntime {ort.__version__}; INT8 target {args.target.value} "
          f"({args.target.weight_bits}-bit weights)")
    g = figures["INT8, GPTQ rounding"]
    print(f"photos: {len(calibrating)} calibrate ({len(calibration)} frames), {len(evaluating)} held out "
          f"({len(evaluation)} frames; FP32 sure of {g['sure_frames']}, top-1 ahead by {LEAD:g} or more on "
          f"{g['lead_frames']}, by less than {TIE:g} on {g['tie_frames']})\n")
    print(f"| model | top-1 agreement, all | FP32 sure (p > {SURE:g}) | FP32 ahead by {LEAD:g}+ "
          f"| FP32 ahead by < {TIE:g} | KL to FP32 | median top-1 probability error | 1 thread ms | x FP32 "
          "| default threads ms | x FP32 |")
    print("|---|" + "---:|" * 10)
    for label in paths:
        f = figures.get(label)
        cells = ([f"{f['all']:.1%}", f"{f['sure']:.1%}", f"{f['lead']:.1%}", f"{f['tie']:.1%}", f"{f['kl']:.4f}",
                  f"{f['error']:.4f}"] if f else [""] * 6)
        print(f"| {label} | {' | '.join(cells)} | {one[label][0]:.2f} | {one[label][1]:.2f}x "
              f"| {default[label][0]:.2f} | {default[label][1]:.2f}x |")
    print("\n| kernel time, 1 thread (ms) | " + " | ".join(paths) + " | FP32 / INT8 (GPTQ) |")
    print("|---|" + "---:|" * (len(paths) + 1))
    for kind in ("pointwise", "depthwise", "other conv", "other"):
        values = [kernels[label][kind] for label in paths]
        ratio = values[0] / values[-1] if values[-1] else float("nan")
        print(f"| {kind} | " + " | ".join(f"{v:.2f}" for v in values) + f" | {ratio:.2f}x |")
    totals = [sum(kernels[label].values()) for label in paths]
    print("| all | " + " | ".join(f"{v:.2f}" for v in totals) + f" | {totals[0] / totals[-1]:.2f}x |")


if __name__ == "__main__":
    main()
