"""Decide what a loaded model is and how to feed it: variant, input spec, decoding.

Outputs are trusted over metadata (one S1 export said ClassificationMultiClass). Where
an export states nothing, the exported container's behaviour is the fallback.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from ..errors import BundleError, LabelsError, MetadataError
from ..types import CropMethod, InputSpec, PixelRange, ResizeMethod, Variant
from . import metadata as md
from .bundle import Bundle
from .ids import ModelIds
from .session import OnnxModel, TensorInfo

S1_OUTPUTS = ("detected_boxes", "detected_scores", "detected_classes")
YOLO_OUTPUT = "model_outputs0"
PROBS_OUTPUT = "model_output"
ZIPMAP_TYPE_PREFIX = "seq(map("

# The anchors in the export zip's object_detection.py, for exports whose metadata has none.
DEFAULT_ANCHORS = ((0.573, 0.677), (1.87, 2.06), (3.34, 5.47), (7.88, 3.53), (9.77, 9.17))
DEFAULT_NMS_IOU = 0.45
# Container fallback for classification without metadata: longer side at most 1600,
# centre square, 256 x 256, then a centre crop to the network size.
CONTAINER_MAX_DIMENSION = 1600
CONTAINER_RESIZE = 256
# ByPixelCountAlign32 aims at this many pixels when an export names no target.
DEFAULT_DETECTION_TARGET = 512
# [S1] detection takes RGB 0-255 (its exported README and code say so) although its
# metadata has been seen saying Normalized_0_1: the code that ships with it wins.
S1_PIXEL_RANGE = PixelRange.NOMINAL_0_255
# [S1] models suppress overlaps themselves; an IoU limit of 1 keeps every box they return.
S1_NMS_IOU = 1.0
# 2018 ZipMap classifiers state only Bgr8; they take BGR 0-255 (format doc, section 3).
LEGACY_PIXEL_RANGE = PixelRange.NOMINAL_0_255


@dataclass(frozen=True)
class ModelSpec:
    variant: Variant
    input: InputSpec
    labels: tuple[str, ...] | None  # None only for a ZipMap model without labels.txt
    tag_ids: tuple[str, ...] | None
    output: str  # the output decoded (first of the three for S1)
    anchors: tuple[tuple[float, float], ...] = DEFAULT_ANCHORS
    nms_iou: float = DEFAULT_NMS_IOU
    metadata: tuple[tuple[str, str], ...] = ()
    domain: str = ""

    output_type: str = "tensor(float)"
    ids: ModelIds | None = None  # project, iteration and tag UUIDs (None only for hand-built specs)

    @functools.cached_property
    def anchor_array(self) -> np.ndarray:
        """The YOLO anchors as a [A,2] float32 array, built once."""
        return np.asarray(self.anchors, np.float32)

    @property
    def zipmap(self) -> bool:
        return self.output_type.startswith(ZIPMAP_TYPE_PREFIX)

    @property
    def output_names(self) -> tuple[str, ...]:
        return S1_OUTPUTS if self.variant is Variant.S1 else (self.output,)


def describe(bundle: Bundle, model: OnnxModel) -> ModelSpec:
    meta = md.merge(model.metadata, bundle.metadata)
    md.check_unsupported(meta)
    outputs = {o.name: o for o in model.outputs}
    variant, output = _variant(outputs, meta)
    input_spec = _input_spec(model, meta, variant, outputs[output])
    anchors, nms = _yolo_params(meta)  # checked for every model: no number goes unvalidated
    if variant is not Variant.YOLO:
        anchors, nms = DEFAULT_ANCHORS, DEFAULT_NMS_IOU
    if variant is Variant.S1:
        nms = S1_NMS_IOU
    labels = bundle.labels
    _check_labels(labels, variant, outputs[output], len(anchors))
    ids = ModelIds.of(bundle)
    return ModelSpec(
        variant=variant,
        input=input_spec,
        labels=labels,
        tag_ids=ids.tag_ids(labels) if labels else None,
        output=output,
        anchors=anchors,
        nms_iou=nms,
        metadata=tuple(sorted(meta.items())),
        domain=str(bundle.manifest.get("DomainType") or ""),
        output_type=outputs[output].type,
        ids=ids,
    )


def _variant(outputs: dict[str, TensorInfo], meta: dict[str, str]) -> tuple[Variant, str]:
    method = md.choice(meta, md.POSTPROCESS, md.POSTPROCESS_METHODS)
    multilabel = method == "ClassificationMultiLabel"
    if all(name in outputs for name in S1_OUTPUTS):
        return Variant.S1, S1_OUTPUTS[0]
    four_d = [o.name for o in outputs.values() if len(o.shape) == 4 and o.type.startswith("tensor(float")]
    if YOLO_OUTPUT in outputs or (len(outputs) == 1 and four_d):
        return Variant.YOLO, YOLO_OUTPUT if YOLO_OUTPUT in outputs else four_d[0]
    kind = Variant.MULTILABEL if multilabel else Variant.MULTICLASS
    if PROBS_OUTPUT in outputs:
        return kind, PROBS_OUTPUT
    zipmaps = [o.name for o in outputs.values() if o.type.startswith(ZIPMAP_TYPE_PREFIX)]
    if zipmaps:
        return kind, "loss" if "loss" in zipmaps else zipmaps[0]
    two_d = [o.name for o in outputs.values() if len(o.shape) == 2 and o.type.startswith("tensor(float")]
    if len(two_d) == 1:
        return kind, two_d[0]
    names = ", ".join(f"{o.name} {o.type} {list(o.shape)}" for o in outputs.values())
    raise BundleError(f"cannot tell what this model computes from its outputs: {names}")


def _input_spec(model: OnnxModel, meta: dict[str, str], variant: Variant, output: TensorInfo) -> InputSpec:
    images = [i for i in model.inputs if i.type in ("tensor(float)", "tensor(float16)")]
    if len(images) != 1 or len(images[0].shape) != 4:
        found = ", ".join(f"{i.name} {i.type} {list(i.shape)}" for i in model.inputs)
        raise BundleError(f"expected one float image input shaped [N,3,H,W]; the model has: {found}")
    image = images[0]
    if image.dim(1) not in (None, 3):
        raise BundleError(f"input {image.name} has {image.dim(1)} channels; 3 expected")
    height, width = image.dim(2), image.dim(3)
    legacy = output.type.startswith(ZIPMAP_TYPE_PREFIX)

    pixel_format = md.choice(meta, md.PIXEL_FORMAT, md.PIXEL_FORMATS)
    bgr = pixel_format == "Bgr8" if pixel_format else legacy
    pixel_range = md.enum_value(meta, md.PIXEL_RANGE, PixelRange)
    if variant is Variant.S1:
        pixel_range = S1_PIXEL_RANGE
    elif pixel_range is None:
        pixel_range = LEGACY_PIXEL_RANGE if legacy else PixelRange.NORMALIZED_0_1
    mean = md.triple(meta, md.MEAN, 0.0)
    std = md.triple(meta, md.STD, 1.0)
    if 0.0 in std:
        raise MetadataError(f"metadata {md.STD}={meta[md.STD]!r} has a zero: cannot divide by it")
    md.check_range(meta, md.MEAN, mean, md.MEAN_RANGE)
    md.check_range(meta, md.STD, std, md.STD_RANGE)

    resize = md.enum_value(meta, md.RESIZE, ResizeMethod)
    crop = md.enum_value(meta, md.CROP, CropMethod) or CropMethod.NO_CROP
    target_w, target_h = md.size(meta, md.TARGET_W), md.size(meta, md.TARGET_H)
    crop_w, crop_h = md.size(meta, md.CROP_W), md.size(meta, md.CROP_H)
    max_dimension = md.size(meta, md.MAX_DIMENSION, md.MAX_DIMENSION_RANGE)
    center_square = crop is CropMethod.FULL_IMAGE_SHORTER_SIDE
    if center_square:
        crop = CropMethod.NO_CROP
    if resize is None:  # nothing stated: behave as the exported container does
        if variant.is_detection:
            if width is None or height is None:
                resize = ResizeMethod.BY_PIXEL_COUNT_ALIGN32
                target_w = target_h = DEFAULT_DETECTION_TARGET
            else:
                resize = ResizeMethod.STRETCH
            crop = CropMethod.NO_CROP
        else:
            max_dimension, center_square = CONTAINER_MAX_DIMENSION, True
            resize, target_w, target_h = ResizeMethod.STRETCH, CONTAINER_RESIZE, CONTAINER_RESIZE
            crop, crop_w, crop_h = CropMethod.ONE_CROP_CENTER, width or 0, height or 0
    if resize is ResizeMethod.BY_PIXEL_COUNT_ALIGN32 and not (target_w and target_h):
        target_w = target_h = DEFAULT_DETECTION_TARGET
    if not (target_w and target_h):
        if width is None or height is None:
            raise MetadataError(f"{md.RESIZE}={resize.value} needs {md.TARGET_W}/{md.TARGET_H} for a dynamic input")
        target_w, target_h = width, height
    if crop is CropMethod.ONE_CROP_CENTER and not (crop_w and crop_h):
        if width is None or height is None:
            raise MetadataError(f"{md.CROP}=OneCropCenter needs {md.CROP_W}/{md.CROP_H} for a dynamic input")
        crop_w, crop_h = width, height
    return InputSpec(
        name=image.name,
        dtype="float16" if image.type == "tensor(float16)" else "float32",
        height=height,
        width=width,
        bgr=bgr,
        pixel_range=pixel_range,
        mean=mean,
        std=std,
        resize=resize,
        target_width=target_w,
        target_height=target_h,
        crop=crop,
        crop_width=crop_w,
        crop_height=crop_h,
        max_dimension=max_dimension,
        center_square=center_square,
    )


def _yolo_params(meta: dict[str, str]) -> tuple[tuple[tuple[float, float], ...], float]:
    biases = md.float_list(meta, md.YOLO_BIASES)
    anchors: tuple[tuple[float, float], ...] = DEFAULT_ANCHORS
    if biases:
        if len(biases) % 2:
            raise MetadataError(f"metadata {md.YOLO_BIASES} holds {len(biases)} numbers; w,h pairs expected")
        if len(biases) > 2 * md.MAX_ANCHORS:
            raise MetadataError(f"metadata {md.YOLO_BIASES} holds {len(biases) // 2} anchors; at most {md.MAX_ANCHORS}")
        md.check_range(meta, md.YOLO_BIASES, tuple(biases), md.ANCHOR_RANGE)
        anchors = tuple((biases[i], biases[i + 1]) for i in range(0, len(biases), 2))
    nms = md.number(meta, md.NMS_THRESHOLD)
    md.check_range(meta, md.NMS_THRESHOLD, (nms,), (0.0, 1.0))
    return anchors, nms if 0 < nms < 1 else DEFAULT_NMS_IOU


def _check_labels(labels: tuple[str, ...] | None, variant: Variant, output: TensorInfo, anchors: int) -> None:
    if output.type.startswith(ZIPMAP_TYPE_PREFIX):
        return  # ZipMap keys are the tag names; checked against labels on the warm-up run
    if labels is None:
        raise LabelsError("no labels.txt beside the model: one tag per line, in output order, is needed")
    if variant in (Variant.MULTICLASS, Variant.MULTILABEL):
        count = output.dim(-1)
        if count is not None and count != len(labels):
            raise LabelsError(f"labels.txt has {len(labels)} tags but output {output.name} has {count} scores")
    elif variant is Variant.YOLO:
        channels = output.dim(1)
        if channels is not None and (channels % anchors or channels // anchors - 5 != len(labels)):
            raise LabelsError(
                f"labels.txt has {len(labels)} tags but output {output.name} has {channels} channels; "
                f"{anchors} anchors x (5 + tags) = {anchors * (5 + len(labels))} expected"
            )
