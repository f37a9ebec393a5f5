"""INT8 exports: written with the export's own preprocessing, measured, and refused when they disagree."""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from edge_runtime.int8.quantize import (
    FLAVOR,
    QuantizeError,
    depthwise_overrides,
    float_nodes,
    format_report,
    quantize_export,
)
from edge_runtime.model.bundle import open_bundle
from edge_runtime.model.predictor import Predictor
from tests import models
from tests.conftest import write_video

pytestmark = pytest.mark.slow


def colour_frames(folder, count=24):
    """Photos-like frames: noisy, each mostly one colour, so the colour classifier's answer varies."""
    rng = np.random.default_rng(3)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = np.zeros(3)
        base[i % 3] = 200
        image = np.clip(rng.normal(base + 30, 25, (96, 128, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), image)
    return folder


def near_tie_classifier() -> bytes:
    """Two tags whose scores differ by far less than one INT8 step: float32 always says `b`,
    8-bit activations mostly cannot tell them apart. The first layer and the head stay in
    float (quantize keeps them), so the tie is made in a middle layer."""
    inits = [numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "first"),
             numpy_helper.from_array(np.array([[1.0, 1.0, 1.0], [1.002, 1.002, 1.002]], np.float32)
                                     .reshape(2, 3, 1, 1), "mix"),
             numpy_helper.from_array(np.eye(2, dtype=np.float32), "head"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["data", "first"], ["c0"]), helper.make_node("Conv", ["c0", "mix"], ["c1"]),
             helper.make_node("GlobalAveragePool", ["c1"], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "head", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["model_output"], axis=1)]
    graph = helper.make_graph(nodes, "tie", [helper.make_tensor_value_info("data", TensorProto.FLOAT, [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("model_output", TensorProto.FLOAT, [1, 2])], inits)
    return models._finish(graph, models.modern_metadata(), [helper.make_opsetid("", models.MODERN_OPSET)],
                          models.MODERN_IR)


def one_near_tie_classifier() -> bytes:
    """Two tags, `b` for red scenes and `a` for green ones, clearly; on a grey scene only a
    difference far below one INT8 step says `b` (a lead of about 0.04), and INT8 rounds it to
    an exact tie, which the runtime reports as `a`. The first layer and the head stay in float."""
    inits = [numpy_helper.from_array(np.eye(3, dtype=np.float32).reshape(3, 3, 1, 1), "first"),
             numpy_helper.from_array(np.array([[10.0, -10.0, 0.0], [0.001, 0.001, 0.001]], np.float32)
                                     .reshape(2, 3, 1, 1), "mix"),  # RGB: 10 (R - G), and a whisper
             numpy_helper.from_array(np.array([[0.0, 1.0], [0.0, 60.0]], np.float32), "head"),
             numpy_helper.from_array(np.zeros(2, np.float32), "bias")]
    nodes = [helper.make_node("Conv", ["data", "first"], ["c0"]), helper.make_node("Conv", ["c0", "mix"], ["c1"]),
             helper.make_node("GlobalAveragePool", ["c1"], ["gap"]), helper.make_node("Flatten", ["gap"], ["f"]),
             helper.make_node("Gemm", ["f", "head", "bias"], ["logits"]),
             helper.make_node("Softmax", ["logits"], ["model_output"], axis=1)]
    graph = helper.make_graph(nodes, "one_tie", [helper.make_tensor_value_info("data", TensorProto.FLOAT,
                                                                               [1, 3, 32, 32])],
                              [helper.make_tensor_value_info("model_output", TensorProto.FLOAT, [1, 2])], inits)
    return models._finish(graph, models.modern_metadata(), [helper.make_opsetid("", models.MODERN_OPSET)],
                          models.MODERN_IR)


def red_green_frames(folder, count, grey=0, seed=4):
    """Noisy scenes, alternately red and green (BGR), and `grey` ones whose channels are equal."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        base = np.array([40, 200, 40] if i % 2 else [40, 40, 200], float)
        image = np.clip(rng.normal(base, 20, (64, 64, 3)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    for i in range(grey):
        level = np.clip(rng.normal(120, 20, (64, 64, 1)), 0, 255).astype(np.uint8)
        cv2.imwrite(str(folder / f"grey{i}.png"), np.repeat(level, 3, axis=2))
    return folder


def test_one_flipped_near_tie_does_not_refuse_an_export_that_keeps_every_clear_answer(tmp_path):
    parent = models.write_export(tmp_path / "tie", one_near_tie_classifier(), ("a", "b"))
    frames = red_green_frames(tmp_path / "frames", 20, grey=1)
    report = quantize_export(parent, frames, tmp_path / "int8", max_drop=1.0)
    f = report.figures
    assert f.frames == 21 and f.agreement == pytest.approx(20 / 21)  # the grey frame flipped: 4.76 points
    assert f.clear_decisions == 20 and f.clear_agreement == 1.0
    assert report.written and f.judged_on == "clear" and f.drop_points == 0.0
    text = format_report(report, 1.0)
    assert "top-1 agreement (21 frames)" in text and "95.2%" in text  # both figures printed
    assert "where FP32 leads by 0.1+ (20)" in text and "100.0%" in text
    assert "(0.00 points of agreement where FP32 is clear lost)" in text
    info = json.loads((tmp_path / "int8" / "bundle.json").read_text())
    assert info["figures"]["judgedOn"] == "clear" and info["figures"]["dropPoints"] == 0.0
    assert info["figures"]["agreement"] == pytest.approx(20 / 21) and info["figures"]["clear_decisions"] == 20
    # with labelled photos the verdict is their accuracy: 100% -> 100%
    labelled = tmp_path / "eval"
    for tag, bgr in (("a", (40, 200, 40)), ("b", (40, 40, 200))):
        (labelled / tag).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(labelled / tag / f"{i}.png"), np.full((40, 40, 3), bgr, np.uint8) + i)
    judged = quantize_export(parent, frames, tmp_path / "int8-eval", eval_dir=labelled, max_drop=1.0)
    assert judged.written and judged.figures.judged_on == "eval" and judged.figures.int8_accuracy == 1.0
    assert judged.figures.agreement < 1.0 and "points of top-1 accuracy on --eval lost" in format_report(judged, 1.0)


def test_an_int8_model_whose_clear_answers_are_wrong_is_still_refused(exports, tmp_path, monkeypatch):
    """Its integer weights reversed after quantisation: the colours it reads are swapped."""
    import onnx

    from edge_runtime.int8 import quantize

    def scramble(float_model, qdq_model, *args):  # type: ignore[no-untyped-def]
        model = onnx.load(str(qdq_model))
        for weight in model.graph.initializer:
            if weight.name.endswith("_quantized"):
                weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight)[::-1].copy(), weight.name))
        onnx.save(model, str(qdq_model))
        return 1

    monkeypatch.setattr(quantize, "improve_rounding", scramble)
    report = quantize_export(exports["modern"], colour_frames(tmp_path / "frames"), tmp_path / "int8", max_drop=1.0)
    f = report.figures
    assert not report.written and not (tmp_path / "int8").exists()
    assert f.judged_on == "clear" and f.clear_decisions > 0 and f.clear_agreement is not None
    assert f.clear_agreement < 0.5 and f.drop_points > 50
    assert "points of agreement where FP32 is clear lost, more than --max-drop 1" in format_report(report, 1.0)


def test_the_first_layer_and_the_head_stay_in_float():
    import onnx

    graph = onnx.load_from_string(near_tie_classifier()).graph
    for i, node in enumerate(graph.node):
        node.name = f"n{i}"
    assert float_nodes(graph) == ["n0", "n4", "n5"]  # the first Conv; the Gemm and Softmax of the head


def test_a_separable_network_keeps_its_first_block_in_float_and_8_bit_depthwise_weights(tmp_path):
    import onnx

    graph = onnx.load_from_string(models.separable_classifier()).graph
    assert float_nodes(graph) == sorted(["stem", "stem_act", "dw1", "dw1_act", "pw1", "fc", "softmax"])
    assert depthwise_overrides(graph) == {w: [{"axis": 0, "reduce_range": False}] for w in ("dw1", "dw2")}
    parent = models.write_export(tmp_path / "separable", models.separable_classifier(), tuple(models.COLOR_TAGS))
    report = quantize_export(parent, colour_frames(tmp_path / "frames", count=8), tmp_path / "int8", force=True)
    quantized = onnx.load(str(open_bundle(report.out).model_path)).graph
    levels = {i.name.split("_")[0]: int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max())
              for i in quantized.initializer if i.name.endswith("_quantized")}
    assert levels["pw2"] <= 64 < levels["dw2"] == 127  # 7-bit pointwise, 8-bit depthwise weights
    info = json.loads((tmp_path / "int8" / "bundle.json").read_text())
    assert info["figures"]["rounded_layers"] == report.figures.rounded_layers >= 1  # GPTQ changed dw2 or pw2
    assert "dw1" not in levels and "pw1" not in levels  # the first block stays in float


@pytest.mark.parametrize(("target", "bits", "pointwise"), [(None, 7, 64), ("x86-avx2", 7, 64), ("x86-vnni", 8, 127),
                                                       ("arm64", 8, 127)])
def test_the_target_decides_the_weights_range_in_the_written_model(tmp_path, target, bits, pointwise):
    import onnx

    from edge_runtime.int8.target import Target

    parent = models.write_export(tmp_path / "separable", models.separable_classifier(), tuple(models.COLOR_TAGS))
    chosen = {} if target is None else {"target": Target(target)}
    report = quantize_export(parent, colour_frames(tmp_path / "frames", count=8), tmp_path / "int8", force=True,
                             **chosen)
    quantized = onnx.load(str(open_bundle(report.out).model_path)).graph
    levels = {i.name.split("_")[0]: int(np.abs(numpy_helper.to_array(i).astype(np.int32)).max())
              for i in quantized.initializer if i.name.endswith("_quantized")}
    assert levels["pw2"] == pointwise and levels["dw2"] == 127  # depthwise weights take 8 bits everywhere
    info = json.loads((tmp_path / "int8" / "bundle.json").read_text())
    assert info["int8"] == {"target": target or "x86-avx2", "weightBits": bits}


def test_a_bad_target_is_a_one_line_usage_error(tmp_path, capsys):
    from edge_runtime.cli import main

    with pytest.raises(SystemExit) as exit_:
        main(["quantize", "m.zip", "--calibrate", str(tmp_path), "--out", str(tmp_path / "o"), "--target", "x86"])
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2 and "\n" not in err
    assert "--target: invalid choice: 'x86'" in err and "x86-avx2" in err and "arm64" in err


def test_an_int8_export_loads_predicts_and_agrees_with_its_parent(exports, tmp_path):
    frames = colour_frames(tmp_path / "frames")
    report = quantize_export(exports["modern"], frames, tmp_path / "int8", eval_dir=None, max_drop=1.0)
    assert report.written and report.figures.agreement == 1.0 and report.figures.frames == 24
    assert 0 < report.figures.clear_decisions <= 24 and report.figures.clear_agreement == 1.0
    assert f"where FP32 leads by 0.1+ ({report.figures.clear_decisions})" in format_report(report, 1.0)
    bundle = open_bundle(tmp_path / "int8")  # the manifest's SHA-1 is checked here
    assert bundle.manifest["Flavor"] == FLAVOR and bundle.labels == models.COLOR_TAGS
    info = json.loads((tmp_path / "int8" / "bundle.json").read_text())
    assert info["parent"]["source"] == str(exports["modern"].resolve()) and info["figures"]["frames"] == 24
    int8 = Predictor.load(tmp_path / "int8")
    parent = Predictor.load(exports["modern"])
    assert int8.spec.input == parent.spec.input  # the same preprocessing
    written = __import__("onnx").load(str(bundle.model_path))
    assert {"QuantizeLinear", "DequantizeLinear"} <= {node.op_type for node in written.graph.node}
    # only the operator domains its nodes use: an older onnxruntime refuses newer stamps of any other
    assert {o.domain for o in written.opset_import} == {node.domain for node in written.graph.node} | {""}
    for path in sorted(frames.iterdir())[:6]:
        image = cv2.imread(str(path))
        assert int8.predict(image).predictions[0].tag_name == parent.predict(image).predictions[0].tag_name


def test_a_multilabel_export_is_judged_on_each_tag_decision_at_its_threshold(exports, tmp_path):
    report = quantize_export(exports["multilabel"], colour_frames(tmp_path / "frames"), tmp_path / "int8")
    f = report.figures
    assert report.written and f.variant == "multilabel" and f.threshold == 0.5
    assert f.decisions == 24 * 3 and 0 < f.clear_decisions <= 72 and f.agreement == f.clear_agreement == 1.0
    text = format_report(report, 1.0)
    assert "tag agreement at 0.5 (72 tags x frames)" in text
    assert f"where FP32 is 0.1+ from 0.5 ({f.clear_decisions})" in text
    assert "leads by" not in text


def red_cells(folder, count=8, seed=6):
    """Dark noisy 256x256 scenes with a red 32x32 cell somewhere on the detector's grid."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        image = np.clip(rng.normal(30, 10, (256, 256, 3)), 0, 255).astype(np.uint8)
        y, x = 32 * (i % 7), 32 * ((3 * i) % 7)
        image[y:y + 32, x:x + 32] = (20, 20, 230)
        cv2.imwrite(str(folder / f"{i:03d}.png"), image)
    return folder


@pytest.mark.parametrize("layout", ["yolo", "s1"])
def test_a_detector_is_judged_on_matched_boxes(exports, tmp_path, layout):
    # the [S1] test model scores its two fixed boxes by the whole frame's mean red and green
    frames = red_cells(tmp_path / "frames") if layout == "yolo" else colour_frames(tmp_path / "frames", count=8)
    report = quantize_export(exports[layout], frames, tmp_path / "int8")
    f = report.figures
    assert report.written and f.variant == layout and f.threshold == 0.1 and f.frames == 8
    assert f.decisions >= 8 and f.agreement == 1.0 and f.clear_decisions > 0 and f.clear_agreement == 1.0
    text = format_report(report, 1.0)
    assert f"box agreement ({f.decisions} boxes, 8 frames)" in text and "boxes 0.1+ above 0.1" in text


def test_calibration_from_a_video_and_accuracy_on_a_labelled_folder(exports, tmp_path):
    video = write_video(tmp_path / "scene.avi", frames=40)
    labelled = tmp_path / "eval"
    for tag, bgr in zip(models.COLOR_TAGS, [(220, 30, 30), (30, 220, 30), (30, 30, 220)], strict=True):
        (labelled / tag).mkdir(parents=True)
        for i in range(3):
            cv2.imwrite(str(labelled / tag / f"{i}.png"), np.full((50, 60, 3), bgr, np.uint8))
    report = quantize_export(exports["modern"], video, tmp_path / "int8", eval_dir=labelled)
    f = report.figures
    assert report.written and f.frames >= 30 and f.eval_images == 9
    assert f.fp32_accuracy == 1.0 and f.int8_accuracy == 1.0


def test_max_drop_refuses_a_model_that_int8_cannot_represent(tmp_path):
    parent = models.write_export(tmp_path / "tie", near_tie_classifier(), ("a", "b"))
    frames = colour_frames(tmp_path / "frames", count=8)
    refused = quantize_export(parent, frames, tmp_path / "int8", max_drop=1.0)
    assert not refused.written and refused.figures.drop_points > 1.0 and not (tmp_path / "int8").exists()
    # every frame is a near-tie for the parent: no clear answers to agree on, so it is judged on all
    assert refused.figures.clear_decisions == 0 and refused.figures.clear_agreement is None
    assert refused.figures.judged_on == "all" and refused.figures.drop_points == 100 * (1 - refused.figures.agreement)
    text = format_report(refused, 1.0)
    assert "none clear" in text and "points of agreement on every decision lost, more than --max-drop 1" in text
    assert "FP32 made no decision clearly, so all of them counted; --eval LABELLED_DIR gives a fair figure" in text
    forced = quantize_export(parent, frames, tmp_path / "int8", max_drop=1.0, force=True)
    assert forced.written and open_bundle(tmp_path / "int8").manifest["Flavor"] == FLAVOR


def test_the_cli_prints_the_table_and_exits_1_when_refused(tmp_path):
    parent = models.write_export(tmp_path / "tie", near_tie_classifier(), ("a", "b"))
    frames = colour_frames(tmp_path / "frames", count=8)
    proc = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "quantize", str(parent), "--calibrate",
                           str(frames), "--out", str(tmp_path / "int8")], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stderr
    assert "top-1 agreement (8 frames)" in proc.stdout and "not written" in proc.stdout
    bad = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "quantize", str(parent), "--calibrate",
                          str(tmp_path / "nothing"), "--out", str(tmp_path / "x")], capture_output=True, text=True,
                         timeout=300)
    assert bad.returncode == 1 and len(bad.stderr.strip().splitlines()) == 1 and "calibration" in bad.stderr


def test_tidy_keeps_only_the_operator_domains_the_nodes_use_subgraphs_included(tmp_path):
    import onnx

    from edge_runtime.int8.quantize import _tidy

    out = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])
    branch = helper.make_graph([helper.make_node("Relu", ["x"], ["y"], domain="com.microsoft")], "then", [], [out])
    other = helper.make_graph([helper.make_node("Identity", ["x"], ["y"])], "else", [], [out])
    graph = helper.make_graph([helper.make_node("If", ["c"], ["y"], then_branch=branch, else_branch=other)], "g",
                              [helper.make_tensor_value_info("c", TensorProto.BOOL, [])], [out])
    imports = [helper.make_opsetid(d, v) for d, v in (("", 13), ("com.microsoft", 1), ("ai.onnx.ml", 5),
                                                       ("com.microsoft.nchwc", 1))]
    parent, child = tmp_path / "parent.onnx", tmp_path / "child.onnx"
    onnx.save(helper.make_model(graph, opset_imports=imports[:1]), str(parent))
    model = helper.make_model(graph, opset_imports=imports)
    model.metadata_props.add(key="kept", value="yes")
    onnx.save(model, str(child))
    _tidy(parent, child)
    tidied = onnx.load(str(child))
    assert {(o.domain, o.version) for o in tidied.opset_import} == {("", 13), ("com.microsoft", 1)}
    assert {p.key for p in tidied.metadata_props} == {"kept"}


def test_an_out_folder_that_cannot_be_made_is_one_line_and_nothing_is_left(exports, tmp_path, capsys):
    from edge_runtime.cli import main

    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    frames = colour_frames(tmp_path / "frames")
    assert main(["quantize", str(exports["modern"]), "--calibrate", str(frames), "--out", str(blocker / "int8")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith(f"edge-runtime: {blocker}: ")  # the OS says why
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "frames"]


def test_the_export_is_staged_beside_out_and_appears_whole(exports, tmp_path, monkeypatch):
    import os

    from edge_runtime.int8 import quantize

    renames: list[tuple[str, str]] = []
    real = os.replace
    monkeypatch.setattr(quantize.os, "replace", lambda a, b: renames.append((str(a), str(b))) or real(a, b))
    quantize_export(exports["modern"], colour_frames(tmp_path / "frames"), tmp_path / "out" / "int8")
    (staged, target), = renames
    assert target == str(tmp_path / "out" / "int8") and os.path.dirname(os.path.dirname(staged)) == target[:-5]
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["int8"]  # no staging folder left


def test_staging_left_by_a_killed_quantize_is_removed_by_the_next_and_a_live_one_is_kept(exports, tmp_path):
    import fcntl
    import os
    import signal
    import time

    from edge_runtime.int8.quantize import STAGING_LOCK, STAGING_PREFIX

    frames = colour_frames(tmp_path / "frames", count=200)
    out, tmpdir = tmp_path / "out", tmp_path / "tmp"
    out.mkdir(), tmpdir.mkdir()
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "quantize", str(exports["modern"]),
                             "--calibrate", str(frames), "--out", str(out / "killed")],
                            env={**os.environ, "TMPDIR": str(tmpdir)})
    try:  # killed while the quantiser works: its files, temporary ones too, are in the staging folder
        deadline = time.monotonic() + 60
        while not list(out.glob(STAGING_PREFIX + "*/*.work/prepared.onnx")) and time.monotonic() < deadline:
            time.sleep(0.01)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert list(tmpdir.iterdir()) == []  # nothing left where no one would look
    (killed,) = out.glob(STAGING_PREFIX + "*")
    assert any(killed.glob("*.work"))
    live = out / (STAGING_PREFIX + "live")  # another quantize, still working
    young, old = out / (STAGING_PREFIX + "young"), out / (STAGING_PREFIX + "old")  # no lock yet / never
    mine = out / (STAGING_PREFIX + "mine")  # not quantize's: other files in it
    for folder in (live, young, old, mine):
        folder.mkdir()
    (mine / "notes.txt").write_text("keep")
    (live / "quantized.onnx").write_bytes(b"")
    (live / STAGING_LOCK).touch()
    hour_ago = time.time() - 3600
    for folder in (killed, live, old, mine):
        os.utime(folder, (hour_ago, hour_ago))
    with open(live / STAGING_LOCK) as lock:  # opening it leaves the folder as old as the others
        fcntl.flock(lock, fcntl.LOCK_EX)
        quantize_export(exports["modern"], colour_frames(tmp_path / "few"), out / "int8")
    assert sorted(p.name for p in out.iterdir()) == sorted(["int8", live.name, young.name, mine.name])
    assert not killed.exists() and (mine / "notes.txt").exists()


def test_a_failure_of_gptq_rounding_keeps_the_quantisers_weights(tmp_path, monkeypatch, caplog):
    from edge_runtime.int8 import rounding

    def out_of_memory(*args):  # type: ignore[no-untyped-def]
        raise MemoryError

    monkeypatch.setattr(rounding, "_measure", out_of_memory)
    parent = models.write_export(tmp_path / "separable", models.separable_classifier(), tuple(models.COLOR_TAGS))
    with caplog.at_level("WARNING", logger="edge_runtime.int8.quantize"):
        report = quantize_export(parent, colour_frames(tmp_path / "frames", count=8), tmp_path / "int8", force=True)
    assert report.written and open_bundle(tmp_path / "int8").manifest["Flavor"] == FLAVOR
    assert report.figures.rounded_layers is None  # recorded in bundle.json: nearest rounding was kept
    assert [r.getMessage() for r in caplog.records] == [
        "GPTQ rounding skipped (MemoryError); the weights keep the quantiser's rounding"]


def test_blank_and_repeated_calibration_frames_are_left_out(exports, tmp_path, caplog):
    """A covered camera's frames would set every range to nothing and still agree 100% on themselves."""
    from edge_runtime.int8.quantize import QuantizeError

    blank = tmp_path / "blank"
    blank.mkdir()
    for i in range(5):
        cv2.imwrite(str(blank / f"{i}.jpg"), np.zeros((48, 64, 3), np.uint8) + 10 * i)  # five flat colours
    photo = np.random.default_rng(9).integers(0, 256, (48, 64, 3), np.uint8)
    for i in range(3):
        cv2.imwrite(str(blank / f"copy{i}.png"), photo)  # one scene, three times
    with pytest.raises(QuantizeError, match=r"1 usable frames \(5 blank, 2 repeated\)"):
        quantize_export(exports["modern"], blank, tmp_path / "int8")
    mixed = colour_frames(tmp_path / "mixed", count=8)
    for path in blank.iterdir():
        (mixed / path.name).write_bytes(path.read_bytes())
    with caplog.at_level("WARNING", logger="edge_runtime.int8.quantize"):
        report = quantize_export(exports["modern"], mixed, tmp_path / "int8")
    assert report.written and report.figures.frames == 9  # the 8 scenes and the copied one
    assert "5 blank and 2 repeated frames left out of calibration" in caplog.text


def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path):
    """The demo model's prepared graph (18 MB) cannot be written under a 4 MB file-size limit."""
    import resource

    from tests.conftest import DEMO

    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.run(
        [sys.executable, "-m", "edge_runtime.cli", "quantize", str(DEMO), "--calibrate", str(colour_frames(
            tmp_path / "frames", count=4)), "--out", str(out / "int8")],
        capture_output=True, text=True, timeout=300,
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (4 << 20, 4 << 20)))
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "File too large" in proc.stderr
    assert list(out.iterdir()) == []


def test_a_mount_point_as_out_is_refused_before_any_work(exports, tmp_path, monkeypatch):
    from edge_runtime.errors import ConfigError
    from edge_runtime.int8 import quantize

    (tmp_path / "mnt").mkdir()
    monkeypatch.setattr(quantize.os.path, "ismount", lambda path: str(path) == str(tmp_path / "mnt"))
    monkeypatch.setattr(quantize, "_check_quantizer", lambda: pytest.fail("work began"))
    with pytest.raises(ConfigError, match="is a mount point; name a new folder inside it"):
        quantize_export(exports["modern"], tmp_path, tmp_path / "mnt")


def test_an_onnxruntime_too_old_to_quantise_is_one_line(exports, tmp_path, monkeypatch):
    import onnxruntime

    from edge_runtime.int8.quantize import QuantizeError

    monkeypatch.setattr(onnxruntime, "__version__", "1.16.3")
    with pytest.raises(QuantizeError, match=r"^quantize needs onnxruntime 1\.17 or newer \(this is 1\.16\.3\)"):
        quantize_export(exports["modern"], colour_frames(tmp_path / "frames"), tmp_path / "int8")
    assert not (tmp_path / "int8").exists()


def test_a_float16_export_is_refused_in_one_line(exports, tmp_path):
    frames = colour_frames(tmp_path / "frames", count=4)
    with pytest.raises(QuantizeError, match="float16") as err:
        quantize_export(exports["float16"], frames, tmp_path / "int8")
    assert "\n" not in str(err.value)


def test_eval_tags_the_model_does_not_know_are_one_line(exports, tmp_path):
    frames = colour_frames(tmp_path / "frames", count=4)
    (tmp_path / "eval" / "purple").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "eval" / "purple" / "a.png"), np.zeros((8, 8, 3), np.uint8))
    with pytest.raises(QuantizeError, match="tags the model does not know: purple") as err:
        quantize_export(exports["modern"], frames, tmp_path / "int8", eval_dir=tmp_path / "eval")
    assert "\n" not in str(err.value) and not (tmp_path / "int8").exists()


def test_a_detector_is_judged_on_map_over_a_coco_eval_set(exports, tmp_path):
    from tests.datasets import coco_dataset

    (tmp_path / "coco").mkdir()
    coco = coco_dataset(tmp_path / "coco")
    report = quantize_export(exports["yolo"], red_cells(tmp_path / "frames"), tmp_path / "int8", eval_dir=coco.parent)
    f = report.figures
    assert report.written and f.judged_on == "eval" and f.eval_metric == "mAP@0.5" and f.eval_images == 8
    assert f.fp32_accuracy is not None and f.fp32_accuracy > 0.95 and f.int8_accuracy is not None
    text = format_report(report, 1.0)
    assert "mAP@0.5 (8 images)" in text and "points of mAP@0.5 on --eval lost" in text
    assert json.loads((tmp_path / "int8" / "bundle.json").read_text())["figures"]["eval_metric"] == "mAP@0.5"


@pytest.mark.parametrize("change, said", [
    (lambda c: c["annotations"][0].update(bbox=[1, "NAN", 4, 4]), "not 4 finite numbers"),
    (lambda c: c["annotations"][0].update(bbox=[1, 1, 0, 4]), "not 4 finite numbers with a size"),
    (lambda c: c["annotations"][0].update(category_id=9), "unknown category"),
    (lambda c: c["images"][0].update(file_name="../../etc/passwd"), "outside the set's folder"),
])
def test_a_broken_coco_eval_set_is_one_line_and_nothing_is_written(exports, tmp_path, change, said):
    from edge_runtime.errors import EdgeRuntimeError
    from tests.datasets import coco_dataset

    (tmp_path / "coco").mkdir()
    coco = coco_dataset(tmp_path / "coco")
    data = json.loads(coco.read_text())
    change(data)
    coco.write_text(json.dumps(data).replace('"NAN"', "NaN"))
    with pytest.raises(EdgeRuntimeError, match=said) as err:
        quantize_export(exports["yolo"], red_cells(tmp_path / "frames"), tmp_path / "int8", eval_dir=coco)
    assert "\n" not in str(err.value) and not (tmp_path / "int8").exists()


def test_eval_must_fit_the_model(exports, tmp_path):
    from tests.datasets import coco_dataset

    (tmp_path / "coco").mkdir()
    coco = coco_dataset(tmp_path / "coco")
    with pytest.raises(QuantizeError, match="a COCO set evaluates a detector"):
        quantize_export(exports["modern"], colour_frames(tmp_path / "frames", count=4), tmp_path / "a", eval_dir=coco)
    with pytest.raises(QuantizeError, match="--eval for a detector is a COCO set"):
        quantize_export(exports["yolo"], red_cells(tmp_path / "cells"), tmp_path / "b", eval_dir=tmp_path / "cells")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()
