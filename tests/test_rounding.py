"""GPTQ rounding of INT8 weights: closer layer outputs than rounding each weight, same grid."""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime
import pytest
from onnx import numpy_helper

from edge_runtime.int8 import quantize, rounding
from edge_runtime.int8.rounding import gptq
from edge_runtime.int8.target import Target
from tests import models

LIMIT = 64  # 7-bit weights, as onnxruntime's reduce_range writes them


def mixing(rng, columns):
    return rng.normal(0, 1, (columns, columns)) * (rng.random((columns, columns)) < 0.2) + np.eye(columns)


def correlated_inputs(rng, samples, mix):
    """Layer inputs whose channels move together, as real feature maps' do."""
    return np.maximum(rng.normal(0, 1, (samples, len(mix))) @ mix, 0)


def grid(weights):
    return np.abs(weights).max(axis=1) / LIMIT


def output_error(weights, integers, scale, inputs):
    return float(np.sum(((integers * scale[:, None] - weights) @ inputs.T) ** 2))


def test_gptq_keeps_a_layers_output_closer_than_rounding_each_weight():
    rng = np.random.default_rng(0)
    mix = mixing(rng, 48)
    inputs = correlated_inputs(rng, 4000, mix)
    weights = rng.normal(0, 0.1, (24, 48))
    scale = grid(weights)
    nearest = np.clip(np.round(weights / scale[:, None]), -LIMIT, LIMIT)
    chosen = gptq(weights, inputs.T @ inputs / len(inputs), scale, LIMIT)
    assert np.array_equal(chosen, np.round(chosen)) and np.abs(chosen).max() <= LIMIT
    held_out = correlated_inputs(rng, 4000, mix)  # the same kind of input, other samples
    assert output_error(weights, chosen, scale, held_out) < 0.8 * output_error(weights, nearest, scale, held_out)


def test_rounding_in_blocks_gives_the_same_integers(monkeypatch):
    rng = np.random.default_rng(7)
    mix = mixing(rng, 50)
    inputs = correlated_inputs(rng, 2000, mix)
    weights = rng.normal(0, 0.1, (16, 50))
    h = inputs.T @ inputs / len(inputs)
    monkeypatch.setattr(rounding, "BLOCK", 1000)
    whole = gptq(weights, h, grid(weights), LIMIT)
    monkeypatch.setattr(rounding, "BLOCK", 7)  # 7 blocks, the last one short
    assert np.array_equal(gptq(weights, h, grid(weights), LIMIT), whole)


def test_depthwise_layers_get_one_h_per_channel():
    rng = np.random.default_rng(1)
    channels, taps = 6, 9
    patches = [correlated_inputs(rng, 3000, mixing(rng, taps)) for _ in range(channels)]
    weights = rng.normal(0, 0.3, (channels, taps))
    scale = np.abs(weights).max(axis=1) / 127
    h = np.stack([p.T @ p / len(p) for p in patches])
    chosen = gptq(weights, h, scale, 127)
    nearest = np.round(weights / scale[:, None])

    def total(integers):
        return sum(output_error(weights[c:c + 1], integers[c:c + 1], scale[c:c + 1], patches[c])
                   for c in range(channels))

    assert total(chosen) < 0.9 * total(nearest)


def test_an_input_that_is_always_zero_gets_zero_weights_and_no_nan():
    rng = np.random.default_rng(2)
    inputs = correlated_inputs(rng, 500, mixing(rng, 8))
    inputs[:, 3] = 0
    weights = rng.normal(0, 0.1, (4, 8))
    chosen = gptq(weights, inputs.T @ inputs / len(inputs), grid(weights), LIMIT)
    assert np.isfinite(chosen).all() and not chosen[:, 3].any()


def smooth_tensors(count, seed):
    import cv2

    rng = np.random.default_rng(seed)
    return [cv2.GaussianBlur(rng.normal(0, 1.5, (32, 32, 3)).astype(np.float32), (0, 0), 2)
            .transpose(2, 0, 1)[None].copy() for _ in range(count)]


def quantized_pair(tmp_path, monkeypatch, frames, target=Target.X86_AVX2):
    """The separable test network quantised with and without GPTQ rounding, on the same frames."""
    parent = tmp_path / "parent.onnx"
    parent.write_bytes(models.separable_classifier())
    improved, plain = tmp_path / "gptq.onnx", tmp_path / "nearest.onnx"
    quantize._quantize(parent, improved, "data", frames, target)
    monkeypatch.setattr(quantize, "improve_rounding", lambda *args: 0)
    quantize._quantize(parent, plain, "data", frames, target)
    return parent, improved, plain


def int8_weights(path):
    return {i.name.split("_")[0]: numpy_helper.to_array(i).astype(np.int32)
            for i in onnx.load(str(path)).graph.initializer if i.name.endswith("_quantized")}


@pytest.mark.slow
@pytest.mark.parametrize(("target", "limit"), [(Target.X86_AVX2, 64), (Target.ARM64, 127)])
def test_gptq_rounds_within_the_targets_range(tmp_path, monkeypatch, target, limit):
    _, improved, plain = quantized_pair(tmp_path, monkeypatch, smooth_tensors(16, seed=3), target)
    gptq_weights, nearest = int8_weights(improved), int8_weights(plain)
    assert np.abs(nearest["pw2"]).max() == limit and np.abs(gptq_weights["pw2"]).max() <= limit
    assert np.abs(gptq_weights["dw2"]).max() <= 127  # depthwise: 8 bits on every target
    assert any(not np.array_equal(gptq_weights[k], nearest[k]) for k in ("pw2", "dw2"))


@pytest.mark.slow
def test_weights_quantised_wider_than_the_target_allows_keep_the_quantisers_rounding(tmp_path, monkeypatch, caplog):
    _, _, plain = quantized_pair(tmp_path, monkeypatch, smooth_tensors(16, seed=3), Target.ARM64)
    before = int8_weights(plain)
    with caplog.at_level("WARNING", logger="edge_runtime.int8.rounding"):
        rounding.improve_rounding(tmp_path / "parent.onnx", plain, smooth_tensors(16, seed=3), "data", limit=64)
    after = int8_weights(plain)
    assert np.array_equal(after["pw2"], before["pw2"])  # 8-bit scales: clipping at 64 would wreck them
    assert "layer pw2: the quantiser's weights reach 127, beyond the target's 64; its rounding kept" in caplog.text


def run(path, tensors):
    options = onnxruntime.SessionOptions()
    session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return np.concatenate([session.run(["model_output"], {"data": t})[0] for t in tensors])


@pytest.mark.slow
def test_a_quantised_network_stays_closer_to_float_on_frames_it_was_not_calibrated_on(tmp_path, monkeypatch):
    parent, improved, plain = quantized_pair(tmp_path, monkeypatch, smooth_tensors(16, seed=3))
    held_out = smooth_tensors(64, seed=4)
    reference = run(parent, held_out)
    error = {path.stem: float(np.mean((run(path, held_out) - reference) ** 2)) for path in (improved, plain)}
    assert error["gptq"] < error["nearest"]
    # the same graph, scales and zero points: only which integer each weight is differs
    a, b = onnx.load(str(improved)).graph, onnx.load(str(plain)).graph
    assert [n.op_type for n in a.node] == [n.op_type for n in b.node]
    values = {i.name: numpy_helper.to_array(i) for i in b.initializer}
    changed = [i.name for i in a.initializer if not np.array_equal(numpy_helper.to_array(i), values[i.name])]
    assert changed and all(name.endswith("_quantized") for name in changed)
    assert {name.split("_")[0] for name in changed} <= {"dw2", "pw2"}  # the layers quantised to 8 bits


@pytest.mark.slow
def test_a_failed_write_leaves_the_quantisers_model_whole(tmp_path, monkeypatch):
    import hashlib

    _, _, plain = quantized_pair(tmp_path, monkeypatch, smooth_tensors(16, seed=3))
    before = hashlib.sha256(plain.read_bytes()).hexdigest()

    def disk_full(*args):  # type: ignore[no-untyped-def]
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(rounding.os, "replace", disk_full)
    parent = tmp_path / "parent.onnx"
    with pytest.raises(OSError):
        rounding.improve_rounding(parent, plain, smooth_tensors(16, seed=3), "data")
    assert hashlib.sha256(plain.read_bytes()).hexdigest() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gptq.onnx", "nearest.onnx", "parent.onnx"]


@pytest.mark.slow
def test_layers_with_too_few_calibration_samples_keep_the_quantisers_rounding(tmp_path, monkeypatch):
    monkeypatch.setattr(rounding, "MIN_SAMPLES", 10_000)  # more than 2 frames of 32x32 give
    _, improved, plain = quantized_pair(tmp_path, monkeypatch, smooth_tensors(2, seed=5))
    a = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(improved)).graph.initializer}
    b = {i.name: numpy_helper.to_array(i) for i in onnx.load(str(plain)).graph.initializer}
    assert all(np.array_equal(a[name], b[name]) for name in b)


@pytest.mark.parametrize(("shape", "group", "stride", "pads", "dilation"), [
    ((6, 4, 3, 3), 1, (2, 2), (0, 0, 1, 1), (1, 1)),  # dense 3x3, TensorFlow-style "same" padding
    ((6, 4, 3, 3), 1, (1, 2), (2, 1, 2, 1), (2, 1)),  # dilated, uneven strides and pads
    ((4, 1, 5, 5), 4, (1, 1), (2, 2, 2, 2), (1, 1)),  # depthwise 5x5
    ((4, 1, 3, 3), 4, (2, 2), (1, 1, 1, 1), (2, 2)),  # depthwise, strided and dilated
    ((6, 4, 1, 1), 1, (2, 2), (0, 0, 0, 0), (1, 1)),  # strided pointwise
])
@pytest.mark.parametrize("max_positions", [4096, 40])  # 40: every few rows of output positions
def test_the_patches_behind_h_are_what_the_conv_multiplies(shape, group, stride, pads, dilation, max_positions,
                                                           monkeypatch):
    from onnx import TensorProto, helper

    rng = np.random.default_rng(6)
    weight = rng.normal(0, 1, shape).astype(np.float32)
    x = rng.normal(0, 1, (1, 4, 11, 13)).astype(np.float32)
    node = helper.make_node("Conv", ["x", "w"], ["y"], group=group, strides=list(stride), pads=list(pads),
                            dilations=list(dilation))
    graph = helper.make_graph([node], "conv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, x.shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              [numpy_helper.from_array(weight, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    expected = onnxruntime.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(
        None, {"x": x})[0][0]
    monkeypatch.setattr(rounding, "MAX_POSITIONS", max_positions)
    every = -(-expected.shape[1] * expected.shape[2] // max_positions)
    expected = expected[:, ::every]
    layer = rounding._Layer(name="conv", source="x", weight=weight, stride=stride, pads=pads, dilation=dilation,
                            depthwise=group > 1, quantized=None, scale=np.ones(shape[0]))
    patches = rounding._patches(x[0], layer)
    flat = weight.reshape(shape[0], -1)
    if group > 1:  # (channels, positions, taps): each channel with its own weights
        got = np.einsum("cpt,ct->cp", patches, flat)
    else:  # (positions, inputs * taps)
        got = (patches @ flat.T).T
    np.testing.assert_allclose(got.reshape(expected.shape), expected, rtol=1e-4, atol=1e-4)
