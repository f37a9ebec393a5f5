"""The offline trainer: the demo EfficientNet-Lite0 as a frozen backbone plus a trained head.

    result = train_local(load_dataset(Path("photos")))
    write_export(Path("out"), result.model, result.labels, result.metadata)

Features are the backbone's pooled 1280-d output, taken with the runtime's own
preprocessing (so training and serving see identical tensors), with flipped, cropped
and colour-jittered copies of the training images for small sets. The head is
scikit-learn's logistic regression: softmax over tags for multiclass sets, one sigmoid
per tag for multilabel ones. The result is one ONNX model, backbone and head, whose
`model_output` the runtime reads like any Custom Vision export.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx
from onnx import helper, numpy_helper
from sklearn.linear_model import LogisticRegression

from edge_runtime.model.imageio import decode_image
from edge_runtime.model.predictor import Predictor
from edge_runtime.paths import DEMO_MODEL

from .dataset import Dataset, DatasetError, Kind
from .metrics import Evaluation, classification_metrics
from .split import split

BACKBONE = DEMO_MODEL
FEATURES = "features"
VALIDATION_SHARE = 0.2
SMALL_SET = 50  # images per tag below which more augmented copies are made
REGULARISATION = 1.0  # scikit-learn's C; features are standardised first

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainResult:
    labels: list[str]
    multilabel: bool
    model: bytes
    metadata: dict[str, str]
    metrics: Evaluation
    train_images: int
    validation_images: int
    seconds: float


def augment(image: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A flipped, cropped (80-100%) and colour-jittered copy."""
    out = image[:, ::-1] if rng.random() < 0.5 else image
    h, w = out.shape[:2]
    scale = rng.uniform(0.8, 1.0)
    ch, cw = max(1, int(h * scale)), max(1, int(w * scale))
    y, x = rng.integers(0, h - ch + 1), rng.integers(0, w - cw + 1)
    out = out[y : y + ch, x : x + cw].astype(np.float32)
    out = out * rng.uniform(0.8, 1.2) + rng.uniform(-20, 20)  # contrast, brightness
    out = out * rng.uniform(0.9, 1.1, size=3)  # a slight colour cast
    return np.clip(out, 0, 255).astype(np.uint8)


class FeatureExtractor:
    def __init__(self, backbone: Path = BACKBONE) -> None:
        self.predictor = Predictor.load(backbone)
        if FEATURES not in {o.name for o in self.predictor.model.outputs}:
            raise DatasetError(f"{backbone} has no '{FEATURES}' output to train on")

    def __call__(self, image: np.ndarray) -> np.ndarray:
        prepared = self.predictor.prepare(image)
        (features,) = self.predictor.model.run({self.predictor.spec.input.name: prepared.tensor}, [FEATURES])
        return np.asarray(features, np.float32).reshape(-1)


def _targets(dataset: Dataset) -> np.ndarray:
    index = {tag: i for i, tag in enumerate(dataset.tags)}
    y = np.zeros((len(dataset.items), len(dataset.tags)), np.float32)
    for row, item in enumerate(dataset.items):
        for tag in item.tags:
            y[row, index[tag]] = 1
    return y


def _fit(x: np.ndarray, y: np.ndarray, multilabel: bool, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Weights [features, tags] and bias [tags] over raw (unstandardised) features."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    if multilabel:
        coefs, biases = [], []
        for k in range(y.shape[1]):
            clf = LogisticRegression(C=REGULARISATION, max_iter=2000, random_state=seed).fit(z, y[:, k])
            coefs.append(clf.coef_[0])
            biases.append(clf.intercept_[0])
        coef, bias = np.array(coefs), np.array(biases)
    else:
        clf = LogisticRegression(C=REGULARISATION, max_iter=2000, random_state=seed).fit(z, y.argmax(1))
        coef, bias = clf.coef_, clf.intercept_
        if coef.shape[0] == 1:  # scikit-learn keeps one row for two classes
            coef, bias = np.vstack([-coef / 2, coef / 2]), np.array([-bias[0] / 2, bias[0] / 2])
    weights = (coef / std).T  # fold the standardisation into the layer
    return weights.astype(np.float32), (bias - (coef * mean / std).sum(1)).astype(np.float32)


def _probabilities(x: np.ndarray, w: np.ndarray, b: np.ndarray, multilabel: bool) -> np.ndarray:
    logits: np.ndarray = x @ w + b
    if multilabel:
        return np.asarray(1 / (1 + np.exp(-logits)))
    e = np.exp(logits - logits.max(1, keepdims=True))
    return np.asarray(e / e.sum(1, keepdims=True))


def build_model(weights: np.ndarray, bias: np.ndarray, multilabel: bool, backbone: Path = BACKBONE) -> bytes:
    """Backbone up to its pooled features, then Gemm + Softmax/Sigmoid as `model_output`."""
    model = onnx.load(str(backbone / "model.onnx"))
    graph = model.graph
    keep: set[int] = set()
    wanted = [FEATURES]
    producers = {out: node for node in graph.node for out in node.output}
    while wanted:  # walk back from the features to find the backbone's nodes
        name = wanted.pop()
        node = producers.get(name)
        if node is not None and id(node) not in keep:
            keep.add(id(node))
            wanted.extend(node.input)
    nodes = [n for n in graph.node if id(n) in keep]
    used = {i for n in nodes for i in n.input}
    inits = [i for i in graph.initializer if i.name in used]
    tags = weights.shape[1]
    activation = (helper.make_node("Sigmoid", ["head_logits"], ["model_output"], name="head_activation")
                  if multilabel else
                  helper.make_node("Softmax", ["head_logits"], ["model_output"], name="head_activation", axis=1))
    nodes += [helper.make_node("Gemm", [FEATURES, "head_weight", "head_bias"], ["head_logits"], name="head"),
              activation]
    inits += [numpy_helper.from_array(weights, "head_weight"), numpy_helper.from_array(bias, "head_bias")]
    outputs = [helper.make_tensor_value_info("model_output", onnx.TensorProto.FLOAT, [1, tags]),
               next(o for o in graph.output if o.name == FEATURES)]
    new_graph = helper.make_graph(nodes, "edge_export_local", list(graph.input), outputs, inits)
    new = helper.make_model(new_graph, opset_imports=list(model.opset_import), producer_name="edge-export local")
    new.ir_version = model.ir_version
    onnx.checker.check_model(new)
    data: bytes = new.SerializeToString()
    return data


def metadata(multilabel: bool, backbone: Path = BACKBONE) -> dict[str, str]:
    meta: dict[str, str] = json.loads((backbone / "metadata_properties.json").read_text())
    meta["CustomVision.Postprocess.Method"] = "ClassificationMultiLabel" if multilabel else "ClassificationMultiClass"
    return meta


def train_local(dataset: Dataset, seed: int = 0, threshold: float = 0.5, copies: int | None = None,
                progress: Progress | None = None, backbone: Path = BACKBONE) -> TrainResult:
    if dataset.kind is Kind.DETECTION:
        raise DatasetError("the local backend trains classifiers only; object detection needs --backend customvision")
    if dataset.report.errors:
        raise DatasetError("; ".join(dataset.report.errors))
    start = time.perf_counter()
    multilabel = dataset.kind is Kind.MULTILABEL
    y = _targets(dataset)
    train, val = split(y, VALIDATION_SHARE, multilabel, seed)
    per_tag = min(dataset.counts().values())
    copies = copies if copies is not None else (3 if per_tag < SMALL_SET else 1)
    rng = np.random.default_rng(seed)
    extract = FeatureExtractor(backbone)
    images = [decode_image(item.data) for item in dataset.items]
    total = len(train) * (1 + copies) + len(val)
    done = 0

    def feature(image: np.ndarray) -> np.ndarray:
        nonlocal done
        done += 1
        if progress:
            progress("features", done, total)
        return extract(image)

    x_train, y_train = [], []
    for i in train:
        x_train.append(feature(images[i]))
        y_train.append(y[i])
        for _ in range(copies):
            x_train.append(feature(augment(images[i], rng)))
            y_train.append(y[i])
    x_val = np.array([feature(images[i]) for i in val])
    weights, bias = _fit(np.array(x_train), np.array(y_train), multilabel, seed)
    scores = _probabilities(x_val, weights, bias, multilabel)
    metrics = classification_metrics(y[val], scores, dataset.tags, threshold, multiclass=not multilabel,
                                     source=f"local validation split, {len(val)} images")
    return TrainResult(
        labels=list(dataset.tags), multilabel=multilabel, model=build_model(weights, bias, multilabel, backbone),
        metadata=metadata(multilabel, backbone), metrics=metrics, train_images=len(train),
        validation_images=len(val), seconds=time.perf_counter() - start,
    )
