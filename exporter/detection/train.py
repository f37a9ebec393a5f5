"""Train a detector offline on a COCO set: the Custom Vision compact detection layout, in PyTorch CPU.

    result = train_detector(load_dataset(Path("boxes")))        # needs the `train` extra
    write_export(Path("out"), result.model, result.labels, result.metadata, domain=result.domain)

The recipe, sized for a laptop or a Raspberry Pi 5 with no accelerator:

1. Each training image is prepared as serving prepares it (`Stretch` to SIZE x SIZE, no crop).
2. A pool of augmented views (augment.py: mosaics, scale, shift, flip, colour), the plain
   images among them, goes once through the frozen trunk (model.py); its stride-16
   features are kept, so every later step runs only the part that is trained.
3. Steps of AdamW over the pool, with a warm-up and a cosine decay, as many as fit the
   time budget (measured on the first steps) or a fixed count.
4. The whole network goes to ONNX (opset 13, input `data` [1, 3, SIZE, SIZE], output
   `model_outputs0`), with the metadata a Custom Vision compact detector carries; the
   held-out images are then scored through the runtime itself on that export.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_runtime.errors import ConfigError, MissingExtraError
from edge_runtime.model.predictor import Predictor
from edge_runtime.paths import DEMO_MODEL
from edge_runtime.types import CropMethod, InputSpec, PixelRange, ResizeMethod

from ..dataset import Dataset, DatasetError, Kind, Report
from ..evaluate import DetectionMetrics, evaluate
from ..local import VALIDATION_SHARE, Progress, TrainResult
from ..local import metadata as classifier_metadata
from ..package import write_export
from ..split import split
from .augment import Sample, augmented, fit_anchors, network_sample

SIZE = 320  # network input, a multiple of 32
ANCHORS = 5  # as the service's compact detectors have
ANCHOR_SCALES = (0.4, 0.55, 0.75, 1.0, 1.2)  # the sizes augmentation shows each training box at
VIEWS = 480  # augmented views in the pool
BUDGET_S = 150.0  # seconds for the steps, unless a fixed count is asked for
MIN_STEPS, MAX_STEPS = 40, 2000
BATCH = 16
LR_HEAD, LR_TOP = 3e-3, 1e-3
WEIGHT_DECAY = 1e-4
WARMUP = 0.05  # of the steps
NMS_IOU = 0.45
OPSET = 13
INSTALL = "pip install 'edge-runtime[train]'"
ONNX_INPUT, ONNX_OUTPUT = "data", "model_outputs0"


@dataclass(frozen=True)
class Recipe:
    size: int = SIZE
    views: int = VIEWS
    budget_s: float = BUDGET_S
    steps: int | None = None  # a fixed count instead of the time budget
    batch: int = BATCH

    def __post_init__(self) -> None:
        if self.size < 64 or self.size % 32:
            raise ConfigError(f"--input-size must be a multiple of 32 from 64, not {self.size}")
        if self.views < 1 or self.batch < 1 or (self.steps is not None and self.steps < 1) or not self.budget_s > 0:
            raise ConfigError("--budget, --steps, --views and the batch must be positive numbers")


def require_torch() -> None:
    try:
        import torch  # noqa: F401
    except ImportError as exc:
        raise MissingExtraError(f"object detection trains locally with PyTorch, which is not installed: {INSTALL}"
                                ) from exc


def cores() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not Linux
        return max(1, os.cpu_count() or 1)


def input_spec(size: int, backbone: Path = DEMO_MODEL) -> InputSpec:
    """What the runtime will read from `detector_metadata`: training prepares images with it."""
    meta = classifier_metadata(False, backbone)
    mean = tuple(json.loads(meta["CustomVision.Preprocess.NormalizeMean"]))
    std = tuple(json.loads(meta["CustomVision.Preprocess.NormalizeStd"]))
    return InputSpec(name=ONNX_INPUT, dtype="float32", height=size, width=size, bgr=False,
                     pixel_range=PixelRange.NORMALIZED_0_1, mean=mean, std=std,
                     resize=ResizeMethod.STRETCH, target_width=size, target_height=size,
                     crop=CropMethod.NO_CROP, crop_width=0, crop_height=0)


def detector_metadata(size: int, anchors: np.ndarray, backbone: Path = DEMO_MODEL) -> dict[str, str]:
    """The backbone's pixel format and normalisation, a stretch with no crop, YOLO decoding."""
    meta = classifier_metadata(False, backbone)
    meta.update({
        "CustomVision.Postprocess.Method": "Yolo",
        "CustomVision.Postprocess.Yolo.Biases": json.dumps([round(float(v), 5) for v in anchors.reshape(-1)]),
        "CustomVision.Postprocess.Yolo.NmsThreshold": str(NMS_IOU),
        "CustomVision.Preprocess.ResizeMethod": "Stretch",
        "CustomVision.Preprocess.TargetWidth": str(size),
        "CustomVision.Preprocess.TargetHeight": str(size),
        "CustomVision.Preprocess.CropMethod": "NoCrop",
        "CustomVision.Preprocess.CropWidth": "0",
        "CustomVision.Preprocess.CropHeight": "0",
    })
    return meta


def _check(dataset: Dataset) -> None:
    if dataset.kind is not Kind.DETECTION:
        raise DatasetError("the detector trains on a COCO detection set (annotations.json)")
    if dataset.report.errors:
        raise DatasetError("; ".join(dataset.report.errors))
    if not any(item.regions for item in dataset.items):
        raise DatasetError(f"{dataset.root}: no image has a box to learn from")


def _anchors(samples: list[Sample], grid: int, seed: int) -> np.ndarray:
    boxes = np.concatenate([s.boxes for s in samples])
    sizes = (boxes[:, 2:] - boxes[:, :2]) * grid
    scaled = np.concatenate([sizes * s for s in ANCHOR_SCALES])
    return fit_anchors(np.maximum(scaled, 1e-3), ANCHORS, seed)


def _export(net: Any, size: int, meta: dict[str, str]) -> bytes:
    import onnx
    import torch

    with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
        path = Path(tmp) / "model.onnx"
        torch.onnx.export(net, (torch.zeros(1, 3, size, size),), str(path), input_names=[ONNX_INPUT],
                          output_names=[ONNX_OUTPUT], opset_version=OPSET, dynamo=False)
        proto = onnx.load(str(path))
    del proto.metadata_props[:]
    for key, value in sorted(meta.items()):
        proto.metadata_props.add(key=key, value=value)
    proto.producer_name = "edge-export local detector"
    onnx.checker.check_model(proto)
    data: bytes = proto.SerializeToString()
    return data


def score_export(model: bytes, labels: list[str], meta: dict[str, str], dataset: Dataset,
                 threshold: float) -> DetectionMetrics:
    """The held-out figures of the export itself, through the runtime's loader and decoding."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = write_export(Path(tmp) / "export", model, labels, meta, domain="ObjectDetection")
        metrics = evaluate(Predictor.load(folder), dataset, threshold)
    assert isinstance(metrics, DetectionMetrics)
    return metrics


def train_detector(dataset: Dataset, seed: int = 0, threshold: float = 0.5, progress: Progress | None = None,
                   recipe: Recipe | None = None, backbone: Path = DEMO_MODEL) -> TrainResult:
    _check(dataset)
    require_torch()
    import torch

    from .backbone import load_backbone
    from .model import STRIDE, Detector, yolo_loss

    recipe = recipe or Recipe()
    start = time.perf_counter()
    torch.set_num_threads(cores())
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    tags = list(dataset.tags)
    presence = np.array([[any(r.tag == t for r in item.regions) for t in tags] for item in dataset.items], np.float32)
    train, val = split(presence, VALIDATION_SHARE, True, seed)
    if not len(val) or not len(train):
        raise DatasetError(f"{dataset.root}: too few images to hold some out for validation")
    spec = input_spec(recipe.size, backbone)
    samples = [network_sample(dataset.items[i], tags, spec) for i in train]
    grid = recipe.size // STRIDE
    anchors = _anchors(samples, grid, seed)
    net = Detector(load_backbone(backbone / "model.onnx"), len(tags), anchors)
    net.eval().to(memory_format=torch.channels_last)  # type: ignore[call-overload]  # a third faster on CPU

    from edge_runtime.model.preprocess import to_tensor

    views = samples + [augmented(samples, rng) for _ in range(max(0, recipe.views - len(samples)))]
    features = []
    with torch.no_grad():
        for first in range(0, len(views), recipe.batch):
            chunk = views[first : first + recipe.batch]
            batch = torch.from_numpy(np.concatenate([to_tensor(v.image, spec) for v in chunk]))
            batch = batch.to(memory_format=torch.channels_last)
            features.append(net.trunk(batch))
            if progress:
                progress("views", first + len(chunk), len(views))
    pool = torch.cat(features)
    targets = [(v.boxes, v.classes) for v in views]

    top = [p for n, p in net.named_parameters() if p.requires_grad and n.startswith("backbone.")]
    head = [p for n, p in net.named_parameters() if p.requires_grad and not n.startswith("backbone.")]
    optimiser = torch.optim.AdamW([{"params": top, "lr": LR_TOP}, {"params": head, "lr": LR_HEAD}],
                                  weight_decay=WEIGHT_DECAY)
    bases = [LR_TOP, LR_HEAD]
    net.train()
    steps = recipe.steps or MAX_STEPS
    step, trained_since = 0, time.perf_counter()
    while step < steps:
        if recipe.steps is None and step == 5:  # the budget decides the count, from the first steps' pace
            pace = (time.perf_counter() - trained_since) / step
            steps = int(min(MAX_STEPS, max(MIN_STEPS, recipe.budget_s / pace)))
        warm = max(1, int(WARMUP * steps))
        factor = (step + 1) / warm if step < warm else 0.5 * (1 + np.cos(np.pi * (step - warm) / max(1, steps - warm)))
        for group, base in zip(optimiser.param_groups, bases, strict=True):
            group["lr"] = base * factor
        picked = rng.choice(len(views), min(recipe.batch, len(views)), replace=False)
        loss = yolo_loss(net.top(pool[picked]), [targets[i] for i in picked], anchors)
        optimiser.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        optimiser.step()
        step += 1
        if progress:
            progress("train", step, steps)
    net.eval().to(memory_format=torch.contiguous_format)  # type: ignore[call-overload]
    meta = detector_metadata(recipe.size, anchors, backbone)
    model = _export(net, recipe.size, meta)
    held_out = Dataset(dataset.root, Kind.DETECTION, tags, [dataset.items[i] for i in val], Report())
    metrics = score_export(model, tags, meta, held_out, threshold)
    metrics = DetectionMetrics(**{**metrics.__dict__, "source": f"local validation split, {len(val)} images"})
    described = (f"EfficientNet-Lite0 detector at {recipe.size}x{recipe.size}, {len(anchors)} anchors, "
                 f"{len(views)} augmented views, {steps} steps of {recipe.batch}")
    return TrainResult(labels=tags, multilabel=False, model=model, metadata=meta, metrics=metrics,
                       train_images=len(train), validation_images=len(val), seconds=time.perf_counter() - start,
                       recipe=described, domain="ObjectDetection")
