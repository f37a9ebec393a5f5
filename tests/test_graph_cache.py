"""onnxruntime's optimised graph is cached between starts, and missed when anything changes."""

from __future__ import annotations

import shutil

import numpy as np

from edge_runtime.model.predictor import Predictor
from edge_runtime.model.session import OnnxModel
from edge_runtime.paths import cache_dir
from tests.conftest import solid


def test_the_second_load_uses_the_cached_graph_and_predicts_the_same(exports, tmp_path):
    cache = tmp_path / "graphs"
    first = Predictor.load(exports["modern"], providers=["cpu"], graph_cache=cache)
    assert not first.model.graph_cached and len(list(cache.glob("*.onnx"))) == 1
    second = Predictor.load(exports["modern"], providers=["cpu"], graph_cache=cache)
    assert second.model.graph_cached
    frame = solid((0, 0, 255))
    a, b = first.predict(frame), second.predict(frame)
    assert [p.tag_name for p in a.predictions] == [p.tag_name for p in b.predictions]
    assert np.allclose([p.probability for p in a.predictions], [p.probability for p in b.predictions], atol=1e-6)
    assert second.spec.input == first.spec.input  # the metadata survived the round trip


def test_a_changed_model_misses_the_cache(exports, tmp_path):
    cache = tmp_path / "graphs"
    folder = tmp_path / "export"
    shutil.copytree(exports["legacy"], folder)
    OnnxModel.load(folder / "model.onnx", ["cpu"], graph_cache=cache)
    other = exports["modern"] / "model.onnx"
    (folder / "model.onnx").write_bytes(other.read_bytes())  # same path, new bytes
    model = OnnxModel.load(folder / "model.onnx", ["cpu"], graph_cache=cache)
    assert not model.graph_cached
    assert len(list(cache.glob("*.onnx"))) == 2
    assert OnnxModel.load(folder / "model.onnx", ["cpu"], graph_cache=cache).graph_cached


def test_a_damaged_cache_entry_is_dropped_and_rebuilt(exports, tmp_path):
    cache = tmp_path / "graphs"
    path = exports["modern"] / "model.onnx"
    OnnxModel.load(path, ["cpu"], graph_cache=cache)
    (entry,) = cache.glob("*.onnx")
    entry.write_bytes(b"not a model")
    model = OnnxModel.load(path, ["cpu"], graph_cache=cache)
    shape = [d if isinstance(d, int) else 1 for d in model.inputs[0].shape]
    assert not model.graph_cached and model.run({model.inputs[0].name: np.zeros(shape, np.float32)})
    assert not OnnxModel.load(path, ["cpu"], graph_cache=cache).graph_cached  # written again
    assert OnnxModel.load(path, ["cpu"], graph_cache=cache).graph_cached


def test_an_unwritable_cache_folder_is_not_an_error(exports, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    model = OnnxModel.load(exports["modern"] / "model.onnx", ["cpu"], graph_cache=blocker / "graphs")
    assert not model.graph_cached


def test_cache_dir_prefers_the_setting_then_systemd_then_xdg(tmp_path):
    a, b, c, x = (tmp_path / n for n in "abcx")
    assert cache_dir({"EDGE_RUNTIME_CACHE_DIR": str(a), "CACHE_DIRECTORY": str(b)}) == a
    assert cache_dir({"CACHE_DIRECTORY": f"{b}:{c}"}) == b
    assert cache_dir({"XDG_CACHE_HOME": str(x)}) == x / "edge-runtime"
    assert cache_dir({"EDGE_RUNTIME_CACHE_DIR": "/proc/nowhere", "XDG_CACHE_HOME": str(x)}) == x / "edge-runtime"
