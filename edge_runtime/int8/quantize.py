"""Static INT8 exports: QDQ, per-channel, calibrated on real frames through the export's own
preprocessing, and checked against their float32 parent before they are written.

    report = quantize_export(Path("export.zip"), Path("frames/"), Path("export-int8"))
    print(format_report(report))

The result is a Custom Vision style folder (model.onnx, labels.txt, metadata, a manifest
with Flavor "ONNX-INT8" and the true SHA-1) plus bundle.json recording the parent and the
figures. It is not written when it loses more than `max_drop` points on the figure a user
can act on (Figures.judged_on): accuracy on `--eval` when given; else agreement with the
parent on the decisions it made clearly (agreement.py), since near-ties flip under any 8-bit
model; else, when the parent made none clearly, agreement on all of them, and the report
says so and asks for `--eval`. Unless forced, the Report then says `written=False` and why
(format_report), and the CLI exits 1. Needs the `onnx` package (the `quantize` extra).

The target decides the weights' range (Target): 7-bit for x86 without VNNI, whose u8 x s8
kernels saturate 8-bit products; full 8 bits for x86 with VNNI and for arm64.

After onnxruntime's quantiser has chosen the scales, each conv's integer weights are
re-chosen by GPTQ to keep the layer's output on the calibration frames (rounding.py): same
graph, same speed, output KL divergence to FP32 on photos not used for calibration 2.7x
lower on the demo model.

The recipe (see _quantize, float_nodes, depthwise_overrides) was measured for target
x86-avx2 on the demo model (EfficientNet-Lite0) on a 2-core AVX2 x86 machine without VNNI,
against FP32 on 500 crops, flips and rescalings of 20 real photographs. Tried and not taken: u8 weights (U8U8: exact,
but 7x slower than FP32 through the depthwise convs, and no faster than FP32 on the
pointwise ones alone); 8-bit weights everywhere (the x86 u8 x s8 kernels saturate: same
agreement as 7-bit, and exact only with onnxruntime's `session.x64quantprecision`, which is
slower than FP32); S8S8 and symmetric activations (slower, no better); Entropy,
Percentile and moving-average calibration (no better, Entropy and Percentile 10x slower to
calibrate); QOperator format (same results); no pre-processing (slower and worse); per-tensor
weights (much worse). Keeping the next three blocks in float too buys up to 6 more points
on frames FP32 is unsure of (none where it is sure) at a small cost in speed.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np

from ..capture.sources.images import IMAGE_SUFFIXES
from ..errors import ConfigError, EdgeRuntimeError, ImageError, first_line
from ..model.bench import elapsed_ms
from ..model.bundle import BUNDLE_INFO, DEFAULT_LABELS, DEFAULT_METADATA, MANIFEST
from ..model.cpu import saturates_8_bit_weights
from ..model.hashing import file_sha1
from ..model.imageio import read_image
from ..model.postprocess import DETECTION_THRESHOLD
from ..model.predictor import Predictor
from ..types import Variant
from .agreement import CLEAR_LEAD, NOTHING, Agreement, agreement
from .rounding import PARTIAL_SUFFIX, improve_rounding, is_depthwise
from .target import Target

log = logging.getLogger(__name__)
FLAVOR = "ONNX-INT8"
MIN_FRAMES = 4
MIN_FRAME_STD = 1.0  # grey levels: a calibration frame flatter than this shows no scene
WORK_SUFFIX = ".work"  # beside the INT8 model: the quantiser's working files, its temporary ones too
SPEED_RUNS = 50
MULTILABEL_THRESHOLD = 0.5  # a multilabel tag's decision, unless bundle.json records the training's
VIDEO_SUFFIXES = {".mp4", ".avi", ".mkv", ".mov", ".webm", ".m4v", ".mjpeg", ".mjpg"}


class QuantizeError(EdgeRuntimeError):
    """The export or the calibration data cannot be used for quantisation."""


@dataclass(frozen=True)
class Figures:
    frames: int  # calibration frames
    agreement: float  # agreement with the parent on the calibration frames' decisions, 0..1 (agreement.py)
    fp32_run_ms: float  # bare session.run, median
    int8_run_ms: float
    fp32_predict_ms: float  # preprocess + run + postprocess, median
    int8_predict_ms: float
    eval_images: int = 0
    fp32_accuracy: float | None = None  # on --eval, 0..1: top-1 accuracy, or a detector's mAP@0.5
    int8_accuracy: float | None = None
    skipped: int = 0  # calibration or evaluation images that could not be read
    clear_decisions: int = 0  # of the decisions, those the parent made clearly (CLEAR_LEAD from flipping)
    clear_agreement: float | None = None  # agreement on those (near-ties are coin tosses for INT8)
    rounded_layers: int | None = None  # layers whose weights GPTQ re-rounded; None: it failed, nearest kept
    variant: str = Variant.MULTICLASS.value  # what a decision is: a frame's top tag, a (frame, tag), a box
    decisions: int = 0  # what `agreement` counts
    threshold: float | None = None  # multilabel and detection: the probability a decision is made at
    eval_metric: str = "top-1 accuracy"  # what fp32_accuracy and int8_accuracy measure

    @property
    def speedup_run(self) -> float:
        return self.fp32_run_ms / self.int8_run_ms

    @property
    def speedup_predict(self) -> float:
        return self.fp32_predict_ms / self.int8_predict_ms

    @property
    def judged_on(self) -> str:
        """The figure the verdict uses: "eval" accuracy, agreement on "clear" decisions, or on "all"
        of them when the parent made none clearly."""
        if self.fp32_accuracy is not None and self.int8_accuracy is not None:
            return "eval"
        return "clear" if self.clear_agreement is not None else "all"

    @property
    def drop_points(self) -> float:
        """The loss the verdict weighs, in percentage points (see judged_on)."""
        if self.fp32_accuracy is not None and self.int8_accuracy is not None:
            return 100.0 * (self.fp32_accuracy - self.int8_accuracy)
        return 100.0 * (1.0 - (self.clear_agreement if self.clear_agreement is not None else self.agreement))


@dataclass(frozen=True)
class Report:
    out: Path | None  # None when refused
    figures: Figures
    written: bool


# -- calibration frames ---------------------------------------------------------------------
def iter_frames(source: Path, limit: int, skipped: list[str] | None = None) -> Iterator[np.ndarray]:
    """Frames from an image folder (recursive, name order) or a video (evenly spaced)."""
    if source.is_dir():
        paths = sorted(p for p in source.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
        if len(paths) > limit:  # spread over the whole folder, not only its first tags
            paths = [paths[round(i * (len(paths) - 1) / (limit - 1))] for i in range(limit)] if limit > 1 else paths[:1]
        for path in paths:
            try:
                yield read_image(path)
            except ImageError as exc:
                if skipped is not None:
                    skipped.append(str(exc))
        return
    if source.is_file() and source.suffix.lower() in VIDEO_SUFFIXES:
        capture = cv2.VideoCapture(str(source))
        if not capture.isOpened():
            raise QuantizeError(f"{source}: cannot open as a video")
        try:
            count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT)) or limit
            n = min(limit, count)
            wanted = {round(i * (count - 1) / max(1, n - 1)) for i in range(n)}
            index = 0
            while wanted:
                ok, frame = capture.read()
                if not ok:
                    break
                if index in wanted:
                    wanted.discard(index)
                    yield frame
                index += 1
        finally:
            capture.release()
        return
    raise QuantizeError(f"{source}: expected a folder of images or a video file for calibration")


def _varied(frames: Iterable[np.ndarray]) -> tuple[list[np.ndarray], int, int]:
    """The frames worth calibrating on, and how many were blank (one flat colour: a dead or
    covered camera) or repeated exactly. Blank frames set every range to nothing, so the
    INT8 model would agree with its parent on them and on nothing else; repeats weigh one
    scene as if it were many."""
    kept: list[np.ndarray] = []
    seen: set[bytes] = set()
    blank = repeated = 0
    for frame in frames:
        digest = hashlib.sha1(np.ascontiguousarray(frame).tobytes()).digest()
        if digest in seen:
            repeated += 1
        elif float(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY).std() if frame.ndim == 3 else frame.std()) < MIN_FRAME_STD:
            blank += 1
        else:
            kept.append(frame)
        seen.add(digest)
    return kept, blank, repeated


class _Reader:
    """onnxruntime.quantization's CalibrationDataReader protocol over prepared tensors."""

    def __init__(self, name: str, tensors: Sequence[np.ndarray]) -> None:
        self._feeds = iter([{name: t} for t in tensors])

    def get_next(self) -> dict[str, np.ndarray] | None:
        return next(self._feeds, None)

    def rewind(self) -> None:  # pragma: no cover - only some calibrators call it
        pass


# -- quantisation ----------------------------------------------------------------------------
MIN_QUANTIZER = (1, 17)  # onnxruntime's quantiser: per-tensor overrides, and QDQ that loads everywhere


def _check_quantizer() -> None:
    import onnxruntime

    version = tuple(int(part) for part in onnxruntime.__version__.split(".")[:2] if part.isdigit())
    if version < MIN_QUANTIZER:
        raise QuantizeError(f"quantize needs onnxruntime {'.'.join(map(str, MIN_QUANTIZER))} or newer "
                            f"(this is {onnxruntime.__version__}); the INT8 exports it writes load on older ones")


def _quantize(model: Path, out: Path, input_name: str, tensors: Sequence[np.ndarray],
              target: Target = Target.X86_AVX2) -> int | None:
    """Writes the INT8 model to `out`; returns how many layers GPTQ re-rounded (None: it failed)."""
    try:
        import onnx
        from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError as exc:
        raise QuantizeError("quantize needs the onnx package: pip install 'edge-runtime[quantize]'") from exc
    with _work_folder(out) as work:
        prepared = work / "prepared.onnx"
        try:  # shape inference and fusions make better INT8 graphs; not every model takes them
            with _quiet("onnxruntime.quantization.shape_inference"):  # it logs its tracebacks
                quant_pre_process(str(model), str(prepared), skip_symbolic_shape=True)
        except OSError:  # a full disk is not the model's fault
            raise
        except Exception as exc:  # the quantizer raises plain Exceptions of many kinds
            log.info("pre-processing skipped (%s); quantising the model as it is", first_line(exc))
            shutil.copy(model, prepared)
        graph = onnx.load(str(prepared))
        for i, node in enumerate(graph.graph.node):  # exclusions are by name
            node.name = node.name or f"edge_runtime_node_{i}"
        onnx.save(graph, str(prepared))
        try:
            quantize_static(
                str(prepared), str(out), _Reader(input_name, tensors),
                quant_format=QuantFormat.QDQ, per_channel=True,
                # 7-bit weights for x86 without VNNI, whose u8 x s8 matrix products saturate
                # otherwise; VNNI and arm64 kernels sum in 32 bits and take all 8. Depthwise convs
                # do not go through those kernels and keep all 8 bits (see depthwise_overrides).
                reduce_range=target.weight_bits == 7,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                calibrate_method=CalibrationMethod.MinMax,
                nodes_to_exclude=float_nodes(graph.graph),
                extra_options={"TensorQuantOverrides": depthwise_overrides(graph.graph)},
            )
        except Exception as exc:
            raise QuantizeError(f"{model.name}: quantisation failed: {first_line(exc)}") from exc
        layers: int | None
        try:  # an improvement, not a requirement: the quantiser's own rounding stands without it
            layers = improve_rounding(prepared, out, list(tensors), input_name, target.weight_limit)
            log.info("weights of %d layers rounded to keep their outputs on the calibration frames", layers)
        except OSError:  # a full disk fails the next write too: say it once, as what it is
            raise
        except (Exception, MemoryError) as exc:  # onnxruntime raises plain Exceptions of many kinds
            log.warning("GPTQ rounding skipped (%s); the weights keep the quantiser's rounding", first_line(exc))
            layers = None
    _tidy(model, out)
    return layers


@contextmanager
def _work_folder(out: Path) -> Iterator[Path]:
    """A folder beside `out` for the quantiser's files, its temporary ones included (its tools
    use tempfile): inside quantize's locked staging folder, so a kill -9 leaves nothing in
    TMPDIR that no one removes."""
    work = out.with_name(out.name + WORK_SUFFIX)
    work.mkdir()
    saved, tempfile.tempdir = tempfile.tempdir, str(work)
    try:
        yield work
    finally:
        tempfile.tempdir = saved
        shutil.rmtree(work, ignore_errors=True)


@contextmanager
def _quiet(logger: str) -> Iterator[None]:
    target = logging.getLogger(logger)
    level = target.level
    target.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        target.setLevel(level)


COMPUTE_OPS = {"Conv", "Gemm", "MatMul"}
POOL_OPS = {"GlobalAveragePool", "ReduceMean"}
ACTIVATION_OPS = {"Clip", "Relu"}
MAX_STEM_CONVS = 4


def _pointwise(node: Any, weights: dict[str, Any]) -> bool:
    weight = weights.get(node.input[1]) if len(node.input) > 1 else None
    return bool(node.op_type == "Conv" and weight is not None and list(weight.dims[2:]) == [1, 1]
                and not is_depthwise(node, weights))


def _stem(graph: Any) -> list[Any]:
    """The convs before the network's first 8-bit-worthy layer: the first conv (it sees raw
    pixels), and in a separable network the whole first block up to the pointwise conv after
    the first depthwise one. They run at the highest resolution, where int8 depthwise convs
    are no faster than float here, and their errors reach every later layer."""
    weights = {w.name: w for w in graph.initializer}
    convs = [n for n in graph.node if n.op_type == "Conv"][:MAX_STEM_CONVS]
    first_dw = next((i for i, n in enumerate(convs) if is_depthwise(n, weights)), None)
    if first_dw is not None:
        end = next((j for j in range(first_dw + 1, len(convs)) if _pointwise(convs[j], weights)), None)
        if end is not None:
            return convs[:end + 1]
    inputs = {i.name for i in graph.input}
    return [n for n in convs if inputs & set(n.input)][:1]


def float_nodes(graph: Any) -> list[str]:
    """The nodes kept in float, where 8 bits cost the most agreement for the least time.

    - The stem (see _stem) and the activations right after it. On the demo model
      (EfficientNet-Lite0) keeping its stem conv and first block in float raised top-1
      agreement with FP32 on crops of real photos from 71% to 83% (96% -> 100% on frames
      FP32 is sure of), at no cost in speed.
    - The classifier head: from each output back to the last Conv/Gemm/MatMul or global
      pooling. A 1x1 conv before the pooling stays in 8 bits: keeping it in float cost 0.3 ms
      and no agreement."""
    producer = {out: node for node in graph.node for out in node.output}
    stem = _stem(graph)
    stem_outputs = {out for node in stem for out in node.output}
    keep = [n.name for n in stem]
    keep += [n.name for n in graph.node if n.op_type in ACTIVATION_OPS and n.input and n.input[0] in stem_outputs]
    for output in graph.output:
        node = producer.get(output.name)
        seen = 0
        while node is not None and seen < 8:  # walk back through softmax, reshapes, casts
            keep.append(node.name)
            if node.op_type in COMPUTE_OPS | POOL_OPS:
                break
            node = next((producer[i] for i in node.input if i in producer), None)
            seen += 1
    return sorted(set(keep))


def depthwise_overrides(graph: Any) -> dict[str, list[dict[str, Any]]]:
    """Full 8-bit weights for depthwise convs: onnxruntime's depthwise kernels add the
    products in 32 bits, so the 7-bit limit that matrix products need on x86 only costs
    them precision (measured on the demo model: 65% -> 71% top-1 agreement, same speed)."""
    weights = {w.name: w for w in graph.initializer}
    return {n.input[1]: [{"axis": 0, "reduce_range": False}] for n in graph.node if is_depthwise(n, weights)}


def _tidy(parent: Path, child: Path) -> None:
    """Make the INT8 model as portable as its parent.

    - The export's own metadata_props drive preprocessing: carry them over if the
      quantiser dropped them.
    - The quantiser's tools stamp every operator domain they know (ai.onnx.ml 5,
      com.microsoft, ...) into the model, and older onnxruntime releases refuse a model
      stamped with a domain version newer than theirs: keep only the domains its nodes use.
    """
    import onnx

    source = onnx.load(str(parent), load_external_data=False)
    target = onnx.load(str(child))
    have = {p.key for p in target.metadata_props}
    for prop in source.metadata_props:
        if prop.key not in have:
            target.metadata_props.add(key=prop.key, value=prop.value)
    used = _domains(target.graph) | {"", "ai.onnx"}
    for function in target.functions:
        used |= {function.domain} | {d for node in function.node for d in _node_domains(node)}
    kept = [o for o in target.opset_import if o.domain in used]
    del target.opset_import[:]
    target.opset_import.extend(kept)
    onnx.save(target, str(child))


def _node_domains(node: Any) -> set[str]:
    """The operator domains a node uses, its subgraphs' (If, Loop, Scan) included."""
    found = {node.domain}
    for attribute in node.attribute:
        for graph in [attribute.g, *attribute.graphs] if attribute.HasField("g") else attribute.graphs:
            found |= _domains(graph)
    return found


def _domains(graph: Any) -> set[str]:
    return {d for node in graph.node for d in _node_domains(node)}


def _paired_ms(first: Callable[[], object], second: Callable[[], object], runs: int) -> tuple[float, float]:
    """Median milliseconds of each, timed in alternation so that a machine whose speed
    drifts (another process, a thermal limit) slows both alike."""
    first(), second()
    pairs = [(elapsed_ms(first), elapsed_ms(second)) for _ in range(runs)]
    return statistics.median(p[0] for p in pairs), statistics.median(p[1] for p in pairs)


def _top1(predictor: Predictor, frame: np.ndarray) -> str | None:
    ranked = sorted(predictor.predict(frame).predictions, key=lambda p: -p.probability)
    return ranked[0].tag_name if ranked else None


def decision_threshold(parent: Predictor) -> float | None:
    """Where a multilabel tag or a box is decided: the threshold serving reports at (detection),
    or the one the training was measured at (bundle.json), MULTILABEL_THRESHOLD when unknown."""
    if parent.spec.variant.is_detection:
        return DETECTION_THRESHOLD if parent.options.threshold is None else parent.options.threshold
    if parent.spec.variant is Variant.MULTILABEL:
        metrics = parent.bundle.info.get("metrics")
        recorded = metrics.get("threshold") if isinstance(metrics, dict) else None
        return float(recorded) if isinstance(recorded, (int, float)) and 0 < recorded < 1 else MULTILABEL_THRESHOLD
    return None


def _agreement(parent: Predictor, int8: Predictor, frames: Sequence[np.ndarray], threshold: float | None) -> Agreement:
    tags = len(parent.spec.labels or ())
    total = NOTHING
    for frame in frames:
        total += agreement(parent.spec.variant, parent.predict(frame).predictions, int8.predict(frame).predictions,
                           tags, threshold or 0.0)
    return total


def _judge_on_eval(fp32: Predictor, int8: Predictor, source: Path, limit: int,
                   skipped: list[str]) -> tuple[int, float, float, str]:
    """(images, FP32's figure, INT8's, what it is): mAP@0.5 on a COCO set for a detector, else
    top-1 accuracy on a folder per tag."""
    from .coco import coco_file, mean_ap, read_coco

    coco = coco_file(source)
    if fp32.spec.variant.is_detection:
        if coco is None:
            raise QuantizeError(f"{source}: --eval for a detector is a COCO set (annotations.json and its images)")
        truth = read_coco(coco)
        return len(truth.images), mean_ap(fp32, truth, skipped), mean_ap(int8, truth), "mAP@0.5"
    if coco is not None and source.is_file():
        raise QuantizeError(f"{source}: a COCO set evaluates a detector; this model classifies (--eval DIR/<tag>/)")
    total, acc32, acc8 = _accuracy(fp32, int8, source, limit, skipped)
    return total, acc32, acc8, "top-1 accuracy"


def _accuracy(
    fp32: Predictor, int8: Predictor, folder: Path, limit: int, skipped: list[str]
) -> tuple[int, float, float]:
    """Top-1 accuracy of both on a folder-per-tag set (the tag is the image's folder name)."""
    right32 = right8 = total = 0
    tag_dirs = sorted(p for p in folder.iterdir() if p.is_dir())
    unknown = sorted(d.name for d in tag_dirs if d.name not in set(fp32.spec.labels or ()))
    if unknown:
        raise QuantizeError(f"{folder}: --eval has tags the model does not know: {', '.join(unknown)}")
    for tag_dir in tag_dirs:
        for frame in iter_frames(tag_dir, limit, skipped):
            total += 1
            right32 += _top1(fp32, frame) == tag_dir.name
            right8 += _top1(int8, frame) == tag_dir.name
    if total == 0:
        raise QuantizeError(f"{folder}: no images in tag folders (expected {folder}/<tag>/*.jpg)")
    return total, right32 / total, right8 / total


def _write_export(parent: Predictor, model: Path, folder: Path) -> None:
    """The INT8 model beside the parent's labels and metadata, with its own manifest."""
    bundle = parent.bundle
    folder.mkdir(parents=True)
    shutil.copy(model, folder / "model.onnx")
    labels = bundle.labels or parent.spec.labels
    if labels is not None:
        (folder / DEFAULT_LABELS).write_text("\n".join(labels) + "\n")
    (folder / DEFAULT_METADATA).write_text(json.dumps(bundle.metadata, indent=2, sort_keys=True) + "\n")
    manifest = {**bundle.manifest, "Flavor": FLAVOR, "ModelFileName": "model.onnx",
                "LabelFileName": DEFAULT_LABELS, "MetadataPropsFileName": DEFAULT_METADATA,
                "ModelFileSHA1": file_sha1(folder / "model.onnx")}
    manifest.setdefault("Platform", "ONNX")
    manifest.setdefault("DomainType", "ObjectDetection" if parent.spec.variant.is_detection else "Classification")
    (folder / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")


def _write_info(parent: Predictor, folder: Path, figures: Figures, calibrate: Path, target: Target) -> None:
    bundle = parent.bundle
    info: dict[str, Any] = {k: v for k, v in bundle.info.items() if k in ("tagIds", "project", "domain")}
    info.update({
        "flavor": FLAVOR,
        "parent": {"source": str(bundle.source.resolve()), "modelSha1": file_sha1(bundle.model_path),
                   "iteration": parent.iteration, "flavor": bundle.manifest.get("Flavor")},
        "calibration": str(calibrate.resolve()),
        "int8": {"target": target.value, "weightBits": target.weight_bits},
        "figures": {**asdict(figures), "judgedOn": figures.judged_on, "dropPoints": round(figures.drop_points, 3),
                    "speedupRun": round(figures.speedup_run, 3), "speedupPredict": round(figures.speedup_predict, 3)},
    })
    (folder / BUNDLE_INFO).write_text(json.dumps(info, indent=2) + "\n")
    for path in folder.iterdir():  # readable by the service user, whoever made it
        os.chmod(path, 0o644)
    os.chmod(folder, 0o755)


STAGING_PREFIX = ".edge-runtime-int8-"
STAGING_LOCK = ".lock"
STAGING_GRACE_S = 60  # a folder this young may not have its lock yet
STAGED_MODEL, STAGED_BUNDLE = "quantized.onnx", "bundle"
STAGING_ENTRIES = {STAGING_LOCK, STAGED_MODEL, STAGED_MODEL + PARTIAL_SUFFIX, STAGED_MODEL + WORK_SUFFIX, STAGED_BUNDLE}


@contextmanager
def _staging(folder: Path) -> Iterator[Path]:
    """A hidden working folder beside the output, locked while this process uses it. Those
    whose process died (kill -9, power lost) are removed by the next quantize into `folder`."""
    for old in folder.glob(STAGING_PREFIX + "*"):
        _remove_if_abandoned(old)
    with tempfile.TemporaryDirectory(prefix=STAGING_PREFIX, dir=folder) as tmp, \
            open(Path(tmp) / STAGING_LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield Path(tmp)


def _remove_if_abandoned(path: Path) -> None:
    """Remove a staging folder whose quantize died: unlocked, over a minute old (a live one
    locks it within moments of making it), and holding only what quantize puts there."""
    try:
        if (not path.is_dir() or path.is_symlink() or time.time() - path.lstat().st_mtime < STAGING_GRACE_S
                or not {p.name for p in path.iterdir()} <= STAGING_ENTRIES):
            return
        with open(path / STAGING_LOCK) as lock:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)  # held by a live quantize: BlockingIOError
            shutil.rmtree(path, ignore_errors=True)
    except FileNotFoundError:  # killed before it made its lock
        shutil.rmtree(path, ignore_errors=True)
    except OSError:  # locked, or a lock this filesystem cannot give: leave it
        return


def quantize_export(
    model: Path,
    calibrate: Path,
    out: Path,
    eval_dir: Path | None = None,
    max_drop: float = 1.0,
    force: bool = False,
    max_frames: int = 200,
    target: Target = Target.X86_AVX2,
) -> Report:
    """Quantise for `target`, measure against the parent, and write `out` unless the drop is too large."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ConfigError(f"--out {out}: exists and is not an empty folder")
    if out.is_dir() and os.path.ismount(out):  # the export is renamed into place, which a mount refuses
        raise ConfigError(f"--out {out}: is a mount point; name a new folder inside it")
    if max_drop < 0:
        raise ConfigError("--max-drop must be 0 or more (percentage points)")
    if max_frames < MIN_FRAMES:
        raise ConfigError(f"--max-frames must be at least {MIN_FRAMES}")
    _check_quantizer()
    if target.weight_bits == 8 and saturates_8_bit_weights():
        log.warning("quantising for %s on an x86 processor without VNNI: its 8-bit weights saturate here, so the "
                    "agreement measured here can be lower than on the target", target.value)
    parent = Predictor.load(model, providers=["cpu"])
    if parent.spec.input.dtype != "float32":
        raise QuantizeError(f"{model}: a {parent.spec.input.dtype} export; quantise the float32 (ONNX) flavor")
    skipped: list[str] = []
    frames, blank, repeated = _varied(iter_frames(calibrate, max_frames, skipped))
    if blank or repeated:
        log.warning("%s: %d blank and %d repeated frames left out of calibration", calibrate, blank, repeated)
    if len(frames) < MIN_FRAMES:
        raise QuantizeError(f"{calibrate}: {len(frames)} usable frames ({blank} blank, {repeated} repeated); "
                            f"calibration needs at least {MIN_FRAMES} of real scenes")
    tensors = [parent.prepare(f).tensor for f in frames]
    out.parent.mkdir(parents=True, exist_ok=True)
    # staged beside `out`, so that it appears whole or not at all (one rename on one disk)
    with _staging(out.parent) as tmp:
        quantized, staging = tmp / STAGED_MODEL, tmp / STAGED_BUNDLE
        rounded = _quantize(parent.bundle.model_path, quantized, parent.spec.input.name, tensors, target)
        _write_export(parent, quantized, staging)
        int8 = Predictor.load(staging, providers=["cpu"])
        threshold = decision_threshold(parent)
        agreed = _agreement(parent, int8, frames, threshold)
        tensor, frame = tensors[0], frames[0]
        run_ms = _paired_ms(lambda: parent.infer(tensor), lambda: int8.infer(tensor), SPEED_RUNS)
        predict_ms = _paired_ms(lambda: parent.predict(frame), lambda: int8.predict(frame), SPEED_RUNS)
        figures = Figures(
            frames=len(frames), agreement=agreed.rate, clear_decisions=agreed.clear,
            clear_agreement=agreed.clear_rate, rounded_layers=rounded, variant=parent.spec.variant.value,
            decisions=agreed.decisions, threshold=threshold,
            fp32_run_ms=run_ms[0], int8_run_ms=run_ms[1], fp32_predict_ms=predict_ms[0], int8_predict_ms=predict_ms[1],
            skipped=len(skipped),
        )
        if eval_dir is not None:
            total, acc32, acc8, metric = _judge_on_eval(parent, int8, eval_dir, max_frames * 10, skipped)
            figures = Figures(**{**asdict(figures), "eval_images": total, "fp32_accuracy": acc32,
                                 "int8_accuracy": acc8, "skipped": len(skipped), "eval_metric": metric})
        if figures.drop_points > max_drop and not force:
            return Report(None, figures, written=False)
        _write_info(parent, staging, figures, calibrate, target)
        if out.exists():
            out.rmdir()
        os.replace(staging, out)
    Predictor.load(out, providers=["cpu"])  # what was written loads through the runtime
    return Report(out, figures, written=True)


def _agreement_rows(f: Figures) -> list[tuple[str, str, str, str]]:
    """Agreement on every decision and on the clear ones, named for what a decision is."""
    threshold = f"{f.threshold:g}" if f.threshold is not None else ""
    if f.variant == Variant.MULTILABEL.value:
        every = f"tag agreement at {threshold} ({f.decisions} tags x frames)"
        clear = f"  where FP32 is {CLEAR_LEAD:g}+ from {threshold} ({f.clear_decisions})"
    elif f.variant in (Variant.YOLO.value, Variant.S1.value):
        every = f"box agreement ({f.decisions} boxes, {f.frames} frames)"
        clear = f"  boxes {CLEAR_LEAD:g}+ above {threshold} ({f.clear_decisions})"
    else:
        every = f"top-1 agreement ({f.frames} frames)"
        clear = f"  where FP32 leads by {CLEAR_LEAD:g}+ ({f.clear_decisions})"
    clear_value = f"{f.clear_agreement:.1%}" if f.clear_agreement is not None else "none clear"
    return [(every, "", f"{f.agreement:.1%}", ""), (clear, "", clear_value, "")]


JUDGED_ON = {
    "eval": "{metric} on --eval",
    "clear": "agreement where FP32 is clear",
    "all": "agreement on every decision",
}
NONE_CLEAR = "FP32 made no decision clearly, so all of them counted; --eval LABELLED_DIR gives a fair figure"


def format_report(report: Report, max_drop: float) -> str:
    f = report.figures
    rows = [
        ("", "FP32", "INT8", "ratio"),
        ("bare run (ms, median)", f"{f.fp32_run_ms:.2f}", f"{f.int8_run_ms:.2f}", f"{f.speedup_run:.2f}x"),
        ("full predict (ms, median)", f"{f.fp32_predict_ms:.2f}", f"{f.int8_predict_ms:.2f}",
         f"{f.speedup_predict:.2f}x"),
        *_agreement_rows(f),
    ]
    if f.fp32_accuracy is not None and f.int8_accuracy is not None:
        rows.append((f"{f.eval_metric} ({f.eval_images} images)", f"{f.fp32_accuracy:.1%}", f"{f.int8_accuracy:.1%}",
                     ""))
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(c.ljust(width[i]) if i == 0 else c.rjust(width[i]) for i, c in enumerate(r)) for r in rows]
    lost = f"{f.drop_points:.2f} points of {JUDGED_ON[f.judged_on].format(metric=f.eval_metric)} lost"
    verdict = (f"written to {report.out} ({lost})" if report.written
               else f"not written: {lost}, more than --max-drop {max_drop:g} (--force writes it anyway)")
    if f.judged_on == "all":
        verdict += f"; {NONE_CLEAR}"
    if f.skipped:
        verdict += f"; {f.skipped} images could not be read"
    return "\n".join([*lines, verdict])
