"""Small real ONNX models in every Custom Vision layout, built with onnx.helper at test time.

Each model's output depends on its input, so a wrong colour order, pixel range or
geometry changes the answer. Colour classifiers average each input channel and score
tags from those means; the YOLO model is a 32x32-stride convolution that lights up on red.
"""

from __future__ import annotations

import hashlib
import json
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from onnx import TensorProto, helper, numpy_helper

MODERN_OPSET = 13
MODERN_IR = 7  # readable by onnxruntime 1.16

COLOR_TAGS = ("blue", "green", "red")  # the tag whose channel (in BGR order) is brightest


def modern_metadata(**overrides: str) -> dict[str, str]:
    meta = {
        "CustomVision.Metadata.Version": "1.2",
        "CustomVision.Postprocess.Method": "ClassificationMultiClass",
        "CustomVision.Postprocess.Yolo.Biases": "[]",
        "CustomVision.Postprocess.Yolo.NmsThreshold": "0.0",
        "CustomVision.Preprocess.CropHeight": "224",
        "CustomVision.Preprocess.CropMethod": "OneCropCenter",
        "CustomVision.Preprocess.CropWidth": "224",
        "CustomVision.Preprocess.MaxDimension": "0",
        "CustomVision.Preprocess.MaxScale": "0.0",
        "CustomVision.Preprocess.MinDimension": "0",
        "CustomVision.Preprocess.MinScale": "0.0",
        "CustomVision.Preprocess.NormalizeMean": "[0.0, 0.0, 0.0]",
        "CustomVision.Preprocess.NormalizeStd": "[1.0, 1.0, 1.0]",
        "CustomVision.Preprocess.ResizeMethod": "ByShorterSide",
        "CustomVision.Preprocess.TargetHeight": "256.0",
        "CustomVision.Preprocess.TargetWidth": "256.0",
        "Image.BitmapPixelFormat": "Rgb8",
        "Image.ColorSpaceGamma": "SRGB",
        "Image.NominalPixelRange": "Normalized_0_1",
    }
    meta.update(overrides)
    return meta


def _finish(graph, metadata: dict[str, str] | None, opsets, ir_version: int) -> bytes:  # type: ignore[no-untyped-def]
    model = helper.make_model(graph, opset_imports=opsets, producer_name="tests")
    model.ir_version = ir_version
    for key, value in (metadata or {}).items():
        model.metadata_props.add(key=key, value=value)
    return model.SerializeToString()


def _channel_means(input_name: str, nodes: list, bgr_input: bool) -> str:  # type: ignore[type-arg]
    """Adds nodes that turn the input into [1,3] channel means in BGR order; returns the name."""
    nodes.append(helper.make_node("GlobalAveragePool", [input_name], ["gap"]))
    nodes.append(helper.make_node("Flatten", ["gap"], ["means_in"]))
    if bgr_input:
        return "means_in"
    # Reverse the channel order so that the weights below always read B, G, R.
    nodes.append(helper.make_node("Gemm", ["means_in", "rev", "zero3"], ["means"]))
    return "means"


def color_classifier(
    size: int = 224,
    dtype: int = TensorProto.FLOAT,
    multilabel: bool = False,
    metadata: dict[str, str] | None = None,
    scale: float = 10.0,
    tags: int = 3,
    nan_on_empty_channel: bool = False,
) -> bytes:
    """Newer layout: `data` [1,3,size,size] RGB -> `model_output` probabilities [1,tags].
    `nan_on_empty_channel`: outputs are NaN for an image with a channel at zero (a solid
    colour), finite for a photo: a version that passes warm-up and misbehaves later."""
    nodes: list = []  # type: ignore[type-arg]
    inits = [
        numpy_helper.from_array(np.eye(3, dtype=np.float32)[::-1].copy(), "rev"),
        numpy_helper.from_array(np.zeros(3, np.float32), "zero3"),
        numpy_helper.from_array((np.eye(3, tags, dtype=np.float32) * scale), "w"),
        numpy_helper.from_array(np.zeros(tags, np.float32) - (scale / 2 if multilabel else 0), "b"),
    ]
    source = "data"
    if dtype == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["data"], ["data32"], to=TensorProto.FLOAT))
        source = "data32"
    means = _channel_means(source, nodes, bgr_input=False)
    nodes.append(helper.make_node("Gemm", [means, "w", "b"], ["logits0" if nan_on_empty_channel else "logits"]))
    if nan_on_empty_channel:  # log(0) * 0 is NaN; log(x) * 0 is 0 for any x > 0
        nodes.append(helper.make_node("Log", [means], ["log_means"]))
        nodes.append(helper.make_node("Mul", ["log_means", "zero3"], ["poison"]))
        nodes.append(helper.make_node("Add", ["logits0", "poison"], ["logits"]))
    final = "Sigmoid" if multilabel else "Softmax"
    out = "probs32" if dtype == TensorProto.FLOAT16 else "model_output"
    nodes.append(helper.make_node(final, ["logits"], [out], **({} if multilabel else {"axis": 1})))
    if dtype == TensorProto.FLOAT16:
        nodes.append(helper.make_node("Cast", ["probs32"], ["model_output"], to=TensorProto.FLOAT16))
    graph = helper.make_graph(
        nodes, "color_classifier",
        [helper.make_tensor_value_info("data", dtype, [1, 3, size, size])],
        [helper.make_tensor_value_info("model_output", dtype, [1, tags])],
        inits,
    )
    meta = metadata if metadata is not None else modern_metadata(
        **({"CustomVision.Postprocess.Method": "ClassificationMultiLabel"} if multilabel else {})
    )
    return _finish(graph, meta, [helper.make_opsetid("", MODERN_OPSET)], MODERN_IR)


def legacy_zipmap_classifier(labels: Sequence[str] = COLOR_TAGS, opset: int = 7) -> bytes:
    """2018 "ONNX12" flavor: `data` [1,3,227,227] BGR 0-255 -> `classLabel` and `loss` (ZipMap)."""
    nodes: list = []  # type: ignore[type-arg]
    means = _channel_means("data", nodes, bgr_input=True)
    inits = [
        numpy_helper.from_array(np.eye(3, len(labels), dtype=np.float32) * (10.0 / 255.0), "w"),
        numpy_helper.from_array(np.zeros(len(labels), np.float32), "b"),
    ]
    nodes += [
        helper.make_node("Gemm", [means, "w", "b"], ["logits"]),
        helper.make_node("Softmax", ["logits"], ["probs"], axis=1),
        helper.make_node("ZipMap", ["probs"], ["loss"], domain="ai.onnx.ml", classlabels_strings=list(labels)),
        helper.make_node("ArgMax", ["probs"], ["index"], axis=1, keepdims=1),
        helper.make_node("LabelEncoder", ["index"], ["classLabel"], domain="ai.onnx.ml",
                         classes_strings=list(labels), default_string="?"),
    ]
    loss_type = helper.make_sequence_type_proto(
        helper.make_map_type_proto(TensorProto.STRING, helper.make_tensor_type_proto(TensorProto.FLOAT, []))
    )
    graph = helper.make_graph(
        nodes, "legacy",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 227, 227])],
        [helper.make_tensor_value_info("classLabel", TensorProto.STRING, [1, 1]),
         helper.make_value_info("loss", loss_type)],
        inits,
    )
    opsets = [helper.make_opsetid("", opset), helper.make_opsetid("ai.onnx.ml", 1)]
    return _finish(graph, {"Image.BitmapPixelFormat": "Bgr8"}, opsets, 3)


def onnx10_model() -> bytes:
    """A 2018 "ONNX10"-style model: opset 1 operators that current onnxruntime refuses."""
    node = helper.make_node("Relu", ["data"], ["out"], consumed_inputs=[0])
    graph = helper.make_graph(
        [node], "onnx10",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 227, 227])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3, 227, 227])],
    )
    return _finish(graph, {"Image.BitmapPixelFormat": "Bgr8"}, [helper.make_opsetid("", 1)], 3)


YOLO_ANCHORS = ((0.57273, 0.677385), (1.87446, 2.06253), (3.33843, 5.47434), (7.88282, 3.52778), (9.77052, 9.16828))


def yolo_metadata(biases: Sequence[float]) -> dict[str, str]:
    """A compact detection export's metadata: YOLO decoding with these anchors, 512 pixels."""
    return modern_metadata(**{
        "CustomVision.Postprocess.Method": "Yolo",
        "CustomVision.Postprocess.Yolo.Biases": json.dumps(list(biases)),
        "CustomVision.Postprocess.Yolo.NmsThreshold": "0.45",
        "CustomVision.Preprocess.ResizeMethod": "ByPixelCountAlign32",
        "CustomVision.Preprocess.TargetWidth": "512",
        "CustomVision.Preprocess.TargetHeight": "512",
        "CustomVision.Preprocess.CropMethod": "NoCrop",
        "CustomVision.Preprocess.CropWidth": "0",
        "CustomVision.Preprocess.CropHeight": "0",
    })


def yolo_detector(tags: Sequence[str] = ("red", "green"), metadata: dict[str, str] | None = None) -> bytes:
    """Compact detection: `data` [1,3,H,W] (dynamic) -> `model_outputs0` [1,5*(5+C),H/32,W/32].

    A 32x32 stride-32 convolution: anchor 0 of a cell becomes confident where the cell is
    red (objectness grows with R - G - B), its box is the cell (tx=ty=0 with the sigmoid
    puts the centre mid-cell, tw/th = log(1/anchor) gives one cell); class 0 scores red,
    class 1 green. The other anchors stay silent.
    """
    num_anchors, num_classes = len(YOLO_ANCHORS), len(tags)
    per = 5 + num_classes
    out_channels = num_anchors * per
    weight = np.zeros((out_channels, 3, 32, 32), np.float32)
    bias = np.full(out_channels, -20.0, np.float32)  # silent objectness by default
    area = 32 * 32
    r, g, b = 0, 1, 2  # RGB input (metadata says Rgb8)
    base = 0  # anchor 0
    bias[base + 0] = bias[base + 1] = 0.0  # tx, ty
    bias[base + 2] = np.log(1.0 / YOLO_ANCHORS[0][0])
    bias[base + 3] = np.log(1.0 / YOLO_ANCHORS[0][1])
    weight[base + 4, r] = 20.0 / area
    weight[base + 4, g] = -20.0 / area
    weight[base + 4, b] = -20.0 / area
    bias[base + 4] = -5.0  # a pure red cell: 20 - 5 = 15 -> objectness ~1
    weight[base + 5, r] = 10.0 / area
    weight[base + 6, g] = 10.0 / area
    bias[base + 5] = bias[base + 6] = 0.0
    for a in range(1, num_anchors):
        bias[a * per : a * per + 4] = 0.0
        bias[a * per + 5 : (a + 1) * per] = 0.0
    node = helper.make_node("Conv", ["data", "w", "b"], ["model_outputs0"], kernel_shape=[32, 32], strides=[32, 32])
    graph = helper.make_graph(
        [node], "yolo",
        [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, "H", "W"])],
        [helper.make_tensor_value_info("model_outputs0", TensorProto.FLOAT, [1, out_channels, "gh", "gw"])],
        [numpy_helper.from_array(weight, "w"), numpy_helper.from_array(bias, "b")],
    )
    meta = metadata if metadata is not None else yolo_metadata([v for pair in YOLO_ANCHORS for v in pair])
    return _finish(graph, meta, [helper.make_opsetid("", MODERN_OPSET)], MODERN_IR)


S1_BOXES = np.array([[0.1, 0.2, 0.4, 0.6], [0.5, 0.5, 0.9, 0.8]], np.float32)


def s1_detector() -> bytes:
    """Compact [S1]: `image_tensor` [1,3,320,320] RGB 0-255 -> decoded boxes, classes, scores.

    Two fixed boxes (classes 0 and 1) whose scores are the mean red and mean green
    input values / 255, so the scores show which channel order and range arrived.
    """
    nodes = [
        helper.make_node("ReduceMean", ["image_tensor"], ["m"], axes=[2, 3], keepdims=0),
        helper.make_node("Slice", ["m", "s0", "s1", "ax"], ["rg"]),
        helper.make_node("Mul", ["rg", "inv255"], ["detected_scores"]),
        helper.make_node("Identity", ["boxes"], ["detected_boxes"]),
        helper.make_node("Identity", ["classes"], ["detected_classes"]),
    ]
    inits = [
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([2], np.int64), "s1"),
        numpy_helper.from_array(np.array([1], np.int64), "ax"),
        numpy_helper.from_array(np.array(1 / 255, np.float32), "inv255"),
        numpy_helper.from_array(S1_BOXES[None], "boxes"),
        numpy_helper.from_array(np.array([[0, 1]], np.int64), "classes"),
    ]
    graph = helper.make_graph(
        nodes, "s1",
        [helper.make_tensor_value_info("image_tensor", TensorProto.FLOAT, [1, 3, 320, 320])],
        [helper.make_tensor_value_info("detected_boxes", TensorProto.FLOAT, [1, 2, 4]),
         helper.make_tensor_value_info("detected_classes", TensorProto.INT64, [1, 2]),
         helper.make_tensor_value_info("detected_scores", TensorProto.FLOAT, [1, 2])],
        inits,
    )
    meta = modern_metadata(**{
        "CustomVision.Postprocess.Method": "SSD",
        "CustomVision.Preprocess.ResizeMethod": "Stretch",
        "CustomVision.Preprocess.TargetWidth": "320",
        "CustomVision.Preprocess.TargetHeight": "320",
        "CustomVision.Preprocess.CropMethod": "NoCrop",
        "CustomVision.Preprocess.CropWidth": "0",
        "CustomVision.Preprocess.CropHeight": "0",
    })
    return _finish(graph, meta, [helper.make_opsetid("", MODERN_OPSET)], MODERN_IR)


def write_export(
    folder: Path,
    model: bytes,
    labels: Sequence[str] | None,
    domain: str = "Classification",
    metadata: dict[str, str] | None = None,
    manifest: bool = True,
    model_name: str = "model.onnx",
    sha1: str | None = None,
) -> Path:
    """Lay out a Custom Vision export folder (manifest with a true SHA-1 unless told otherwise)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / model_name).write_bytes(model)
    if labels is not None:
        (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    if metadata is not None:
        (folder / "metadata_properties.json").write_text(json.dumps(metadata, indent=2))
    if manifest:
        (folder / "cvexport.manifest").write_text(json.dumps({
            "DomainType": domain, "Platform": "ONNX", "Flavor": None, "ExporterVersion": "2.0",
            "ExportedDate": "01/01/2024 00:00:00", "IterationId": "00000000-0000-0000-0000-000000000001",
            "ModelFileName": model_name, "LabelFileName": "labels.txt",
            "MetadataPropsFileName": "metadata_properties.json" if metadata is not None else None,
            "ModelFileSHA1": sha1 if sha1 is not None else hashlib.sha1(model).hexdigest(),
            "SchemaVersion": "1.0",
        }))
    return folder


def zip_folder(folder: Path, zip_path: Path) -> Path:
    with zipfile.ZipFile(zip_path, "w", zipfile.ZIP_DEFLATED) as zf:
        for path in sorted(folder.rglob("*")):
            zf.write(path, path.relative_to(folder).as_posix())
    return zip_path


def separable_classifier() -> bytes:
    """MobileNet-like: a stem, two depthwise + pointwise blocks, pooling and a linear head."""
    rng = np.random.default_rng(5)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.5, shape).astype(np.float32), name)

    inits = [weight("stem", 4, 3, 3, 3), weight("dw1", 4, 1, 3, 3), weight("pw1", 8, 4, 1, 1),
             weight("dw2", 8, 1, 3, 3), weight("pw2", 8, 8, 1, 1), weight("head", 3, 8), weight("bias", 3)]
    lo, hi = numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")
    nodes = [helper.make_node("Conv", ["data", "stem"], ["s"], "stem", pads=[1] * 4),
             helper.make_node("Clip", ["s", "lo", "hi"], ["s6"], "stem_act"),
             helper.make_node("Conv", ["s6", "dw1"], ["d1"], "dw1", group=4, pads=[1] * 4),
             helper.make_node("Clip", ["d1", "lo", "hi"], ["d16"], "dw1_act"),
             helper.make_node("Conv", ["d16", "pw1"], ["p1"], "pw1"),
             helper.make_node("Conv", ["p1", "dw2"], ["d2"], "dw2", group=8, pads=[1] * 4),
             helper.make_node("Clip", ["d2", "lo", "hi"], ["d26"], "dw2_act"),
             helper.make_node("Conv", ["d26", "pw2"], ["p2"], "pw2"),
             helper.make_node("GlobalAveragePool", ["p2"], ["gap"], "pool"),
             helper.make_node("Flatten", ["gap"], ["f"], "flatten"),
             helper.make_node("Gemm", ["f", "head", "bias"], ["logits"], "fc", transB=1),
             helper.make_node("Softmax", ["logits"], ["model_output"], "softmax", axis=1)]
    graph = helper.make_graph(nodes, "separable", [helper.make_tensor_value_info("data", TensorProto.FLOAT,
                                                                                 [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("model_output", TensorProto.FLOAT, [1, 3])],
                              [*inits, lo, hi])
    return _finish(graph, modern_metadata(), [helper.make_opsetid("", MODERN_OPSET)],
                          MODERN_IR)


def small_cnn(stem: int = 48, width: int = 128, tags: int = 10, seed: int = 0) -> bytes:
    """A cheap real classifier at 224x224: a stride-2 stem, a pointwise and a strided
    depthwise conv, pooling and a linear head. With the defaults one run costs about as
    much as decoding a 1280x720 MJPEG frame (scripts/bench_loops.py --mjpeg)."""
    rng = np.random.default_rng(seed)

    def weight(name: str, *shape: int) -> TensorProto:
        return numpy_helper.from_array(rng.normal(0, 0.3, shape).astype(np.float32), name)

    inits = [weight("stem", stem, 3, 3, 3), weight("pw", width, stem, 1, 1), weight("dw", width, 1, 3, 3),
             weight("head", tags, width), weight("bias", tags),
             numpy_helper.from_array(np.float32(0), "lo"), numpy_helper.from_array(np.float32(6), "hi")]
    nodes = [helper.make_node("Conv", ["data", "stem"], ["s"], strides=[2, 2], pads=[1] * 4),
             helper.make_node("Clip", ["s", "lo", "hi"], ["s6"]),
             helper.make_node("Conv", ["s6", "pw"], ["p"]),
             helper.make_node("Clip", ["p", "lo", "hi"], ["p6"]),
             helper.make_node("Conv", ["p6", "dw"], ["d"], group=width, strides=[2, 2], pads=[1] * 4),
             helper.make_node("GlobalAveragePool", ["d"], ["gap"]),
             helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "head", "bias"], ["logits"], transB=1),
             helper.make_node("Softmax", ["logits"], ["model_output"], axis=1)]
    graph = helper.make_graph(nodes, "small_cnn",
                              [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 224, 224])],
                              [helper.make_tensor_value_info("model_output", TensorProto.FLOAT, [1, tags])], inits)
    return _finish(graph, modern_metadata(), [helper.make_opsetid("", MODERN_OPSET)], MODERN_IR)
