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
from .evaluate import DetectionMetrics
from .metrics import Evaluation, classification_metrics
from .split import split

BACKBONE = DEMO_MODEL
FEATURES = "features"
VALIDATION_SHARE = 0.2
SMALL_SET = 50  # images per tag below which more augmented copies are made
REGULARISATION = 1.0  # scikit-learn's C; features are standardised first
FOLDS = 3  # cross-validation folds over the training split, to choose the recipe


@dataclass(frozen=True)
class Recipe:
    """How the training images are augmented and how strongly the probe is regularised."""

    name: str
    copies: int  # augmented copies of each training image
    flips: bool
    c: float  # scikit-learn's C

    def describe(self) -> str:
        kind = "no augmentation" if not self.copies else (
            f"{self.copies} copies each, {'flipped, ' if self.flips else ''}cropped and colour-jittered")
        return f"{self.name} ({kind}, C={self.c:g})"


def recipes(copies: int) -> list[Recipe]:
    """The candidates, the plain probe first: on a tie the simplest wins. Flips are a
    candidate, not a rule: a left arrow flipped is a right one."""
    out = [Recipe("plain probe", 0, False, c) for c in (REGULARISATION, 0.1)]
    if copies:
        out += [Recipe("crops and colour", copies, False, REGULARISATION),
                Recipe("flips, crops and colour", copies, True, REGULARISATION)]
    return out

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class TrainResult:
    labels: list[str]
    multilabel: bool
    model: bytes
    metadata: dict[str, str]
    metrics: Evaluation | DetectionMetrics
    train_images: int
    validation_images: int
    seconds: float
    recipe: str = ""  # what cross-validation chose, and its score beside the others'
    candidates: tuple[tuple[str, float], ...] = ()  # (recipe, cross-validated score)
    domain: str = "Classification"  # the manifest's DomainType


def augment(image: np.ndarray, rng: np.random.Generator, flips: bool = True) -> np.ndarray:
    """A cropped (80-100%) and colour-jittered copy, flipped half the time with `flips`."""
    out = image[:, ::-1] if flips and rng.random() < 0.5 else image
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


def _fit(x: np.ndarray, y: np.ndarray, multilabel: bool, seed: int,
         c: float = REGULARISATION) -> tuple[np.ndarray, np.ndarray]:
    """Weights [features, tags] and bias [tags] over raw (unstandardised) features."""
    mean, std = x.mean(0), x.std(0) + 1e-6
    z = (x - mean) / std
    if multilabel:
        coefs, biases = [], []
        for k in range(y.shape[1]):
            if len(set(y[:, k])) < 2:  # a tag on every image, or on none (a small fold): a constant answer
                coefs.append(np.zeros(z.shape[1]))
                biases.append(8.0 if y[0, k] else -8.0)
                continue
            clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y[:, k])
            coefs.append(clf.coef_[0])
            biases.append(clf.intercept_[0])
        coef, bias = np.array(coefs), np.array(biases)
    else:
        clf = LogisticRegression(C=c, max_iter=2000, random_state=seed).fit(z, y.argmax(1))
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


def _score(truth: np.ndarray, scores: np.ndarray, multilabel: bool, threshold: float) -> tuple[float, float]:
    """(top-1 accuracy, or for multilabel the share of (image, tag) decisions right at the
    threshold; the mean log-probability of the truth, which breaks ties between recipes that
    are right as often)."""
    p = np.clip(scores, 1e-7, 1 - 1e-7)
    if multilabel:
        t = truth.astype(bool)
        return float(((scores >= threshold) == t).mean()), float(np.where(t, np.log(p), np.log(1 - p)).mean())
    return float((scores.argmax(1) == truth.argmax(1)).mean()), float(np.log(p[truth.astype(bool)]).mean())


def _fold_ids(y: np.ndarray, multilabel: bool, seed: int) -> np.ndarray:
    """A fold number for each training image, stratified by tag where tags are exclusive."""
    rng = np.random.default_rng(seed)
    folds = np.zeros(len(y), np.int64)
    groups = [np.arange(len(y))] if multilabel else [np.flatnonzero(y.argmax(1) == t) for t in range(y.shape[1])]
    offset = 0
    for members in groups:
        order = rng.permutation(members)
        folds[order] = (np.arange(len(order)) + offset) % FOLDS
        offset += len(order)
    return folds


def choose_recipe(originals: np.ndarray, augmented: dict[bool, np.ndarray], y: np.ndarray, multilabel: bool,
                  candidates: list[Recipe], threshold: float, seed: int) -> tuple[Recipe, list[float]]:
    """The candidate with the best cross-validated score on the training split, and each
    candidate's score: accuracy first, then the log-probability of the truth, then the
    simplest. `augmented[flips]` holds each image's copies as [images, copies, features]; a
    fold's held-out images are scored on their originals only."""
    folds = _fold_ids(y, multilabel, seed)
    scores: list[tuple[float, float]] = []
    for recipe in candidates:
        fold_scores: list[tuple[float, float]] = []
        for k in range(FOLDS):
            fit, held = folds != k, folds == k
            if not held.any() or (not multilabel and len(set(y[fit].argmax(1))) < 2):
                continue
            x, t = [originals[fit]], [y[fit]]
            if recipe.copies:
                copies = augmented[recipe.flips][fit][:, :recipe.copies]
                x.append(copies.reshape(-1, originals.shape[1]))
                t.append(np.repeat(y[fit], copies.shape[1], axis=0))
            w, b = _fit(np.concatenate(x), np.concatenate(t), multilabel, seed, recipe.c)
            fold_scores.append(_score(y[held], _probabilities(originals[held], w, b, multilabel), multilabel,
                                      threshold))
        scores.append((float(np.mean([f[0] for f in fold_scores])), float(np.mean([f[1] for f in fold_scores])))
                      if fold_scores else (0.0, -np.inf))
    best = max(range(len(candidates)), key=lambda i: (scores[i][0], scores[i][1], -i))
    return candidates[best], [s[0] for s in scores]


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
        raise DatasetError("train_local trains classifiers; detection sets go to detection.train.train_detector")
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
    total = len(train) * (1 + 2 * copies) + len(val)
    done = 0

    def feature(image: np.ndarray) -> np.ndarray:
        nonlocal done
        done += 1
        if progress:
            progress("features", done, total)
        return extract(image)

    originals = np.array([feature(images[i]) for i in train])
    candidates = recipes(copies)
    augmented = {flips: np.array([[feature(augment(images[i], rng, flips)) for _ in range(copies)] for i in train])
                 for flips in sorted({r.flips for r in candidates if r.copies})}
    chosen, cv_scores = choose_recipe(originals, augmented, y[train], multilabel, candidates, threshold, seed)
    x_train, y_train = [originals], [y[train]]
    if chosen.copies:
        x_train.append(augmented[chosen.flips].reshape(-1, originals.shape[1]))
        y_train.append(np.repeat(y[train], copies, axis=0))
    x_val = np.array([feature(images[i]) for i in val])
    weights, bias = _fit(np.concatenate(x_train), np.concatenate(y_train), multilabel, seed, chosen.c)
    scores = _probabilities(x_val, weights, bias, multilabel)
    metrics = classification_metrics(y[val], scores, dataset.tags, threshold, multiclass=not multilabel,
                                     source=f"local validation split, {len(val)} images")
    return TrainResult(
        labels=list(dataset.tags), multilabel=multilabel, model=build_model(weights, bias, multilabel, backbone),
        metadata=metadata(multilabel, backbone), metrics=metrics, train_images=len(train),
        validation_images=len(val), seconds=time.perf_counter() - start, recipe=chosen.describe(),
        candidates=tuple((r.describe(), round(sc, 4)) for r, sc in zip(candidates, cv_scores, strict=True)),
    )
