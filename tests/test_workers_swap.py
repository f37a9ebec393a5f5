"""Hot swap in camera worker processes: real workers, real sessions on the small test
models, versions in a real model store; the control messages and the codec announcements
they rely on, hostile ones included."""

from __future__ import annotations

import json
import os
import shutil
import signal
import threading
from pathlib import Path

import pytest

from edge_runtime.config import load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.publish.store import ModelStore
from edge_runtime.types import FrameResult
from edge_runtime.workers.codec import FrameRef, ResultCodec, decode_model, encode_model, result_key
from edge_runtime.workers.control import MAX_BYTES, STOP, ControlError, ModelRef, encode_swap, parse
from edge_runtime.workers.plan import plan_workers
from edge_runtime.workers.supervisor import RemoteCamera, WorkerPool
from tests import models
from tests.conftest import wait_for, write_video

SHOUTED = ("BLUE", "GREEN", "RED")  # the same model, other labels: a result decoded with the wrong ones shows
OTHER = ("azure", "lime", "crimson")


def variant(source: Path, folder: Path, labels: tuple[str, ...], iteration: str) -> Path:
    """A copy of an export with other labels and its own iteration id."""
    shutil.copytree(source, folder)
    (folder / "labels.txt").write_text("\n".join(labels) + "\n")
    manifest = json.loads((folder / "cvexport.manifest").read_text())
    manifest["IterationId"] = iteration
    (folder / "cvexport.manifest").write_text(json.dumps(manifest))
    return folder


class Results:
    """The pool's sink: every result, in order."""

    def __init__(self) -> None:
        self.items: list[FrameResult] = []
        self._lock = threading.Lock()

    def __call__(self, result: FrameResult) -> None:
        with self._lock:
            self.items.append(result)

    def of(self, camera: str) -> list[FrameResult]:
        with self._lock:
            return [r for r in self.items if r.camera_id == camera]

    def iterations(self, camera: str) -> list[str]:
        return [r.prediction.iteration for r in self.of(camera)]


@pytest.fixture(scope="module")
def store(exports, tmp_path_factory) -> dict[str, object]:
    """colours v1 (the colour classifier), v2 (the same with other labels and iteration), and
    other v1 (a third iteration), in a real store."""
    root = tmp_path_factory.mktemp("swap")
    models_root = root / "models"
    st = ModelStore.open(models_root)
    st.publish(exports["modern"], "colours")
    st.publish(variant(exports["modern"], root / "shouted", SHOUTED, "00000000-0000-0000-0000-000000000002"),
               "colours")
    st.publish(variant(exports["modern"], root / "other", OTHER, "00000000-0000-0000-0000-000000000003"), "other")
    iterations = {key: Predictor.load(st.version_path(name, v)).iteration
                  for key, (name, v) in {"v1": ("colours", 1), "v2": ("colours", 2), "other": ("other", 1)}.items()}
    assert len(set(iterations.values())) == 3
    labels = {iterations["v1"]: set(models.COLOR_TAGS), iterations["v2"]: set(SHOUTED),
              iterations["other"]: set(OTHER)}
    video = write_video(root / "a.avi", frames=30, size=(320, 240), fps=15)
    return {"root": models_root, "store": st, "it": iterations, "labels": labels, "video": video}


def pool_of(store: dict[str, object], cameras: dict[str, ModelRef], swap: str = "beside") -> tuple[WorkerPool, Results]:
    settings = load_settings(env={}, overrides={
        "model": {"path": cameras[next(iter(cameras))].path}, "workers": len(cameras),
        "models": {"path": str(store["root"]), "swap": swap},
        "cameras": [{"id": cid, "source": str(store["video"]), "loop": True, "realtime": True} for cid in cameras]})
    results = Results()
    pool = WorkerPool(settings, plan_workers(len(cameras), list(cameras), cores=2), results, cameras)
    return pool, results


def ref(store: dict[str, object], name: str, version: int) -> ModelRef:
    st = store["store"]
    assert isinstance(st, ModelStore)
    return ModelRef(name, str(st.version_path(name, version)), version)


def camera(pool: WorkerPool, cid: str) -> RemoteCamera:
    return next(c for c in pool.cameras if c.id == cid)


def pid_of(pool: WorkerPool, cid: str) -> int:
    process = camera(pool, cid).worker.process
    assert process is not None and process.pid is not None
    return process.pid


def assert_labels_match(store: dict[str, object], results: Results) -> None:
    """No result was decoded with another version's labels."""
    labels = store["labels"]
    assert isinstance(labels, dict)
    for r in results.items:
        names = {p.tag_name for p in r.prediction.predictions}
        assert names and names <= labels[r.prediction.iteration], (r.prediction.iteration, names)


@pytest.mark.timeout(240)
def test_a_swap_reaches_the_worker_that_runs_the_name_and_a_restart_keeps_it(store):
    it = store["it"]
    assert isinstance(it, dict)
    pool, results = pool_of(store, {"a": ref(store, "colours", 1), "b": ref(store, "other", 1)})
    pool.start()
    try:
        # two cameras, two models, in two workers: each its own
        assert wait_for(lambda: results.of("a") and results.of("b"), timeout=90)
        assert wait_for(lambda: all(camera(pool, c).status()["version"] == 1 for c in "ab"), timeout=10)
        assert set(results.iterations("a")) == {it["v1"]} and set(results.iterations("b")) == {it["other"]}
        status = camera(pool, "b").status()
        assert (status["model"], status["version"], status["iteration"]) == ("other", 1, it["other"])
        pids = {cid: pid_of(pool, cid) for cid in ("a", "b")}

        pool.swap("colours", Path(ref(store, "colours", 2).path), 2)
        assert wait_for(lambda: it["v2"] in results.iterations("a"), timeout=60)
        seen = len(results.of("a"))
        assert wait_for(lambda: len(results.of("a")) > seen + 5, timeout=30)
        after = results.iterations("a")[results.iterations("a").index(it["v2"]):]
        assert set(after) == {it["v2"]}  # switched between two frames, never back
        assert {cid: pid_of(pool, cid) for cid in ("a", "b")} == pids  # no restart
        assert wait_for(lambda: camera(pool, "a").status()["version"] == 2, timeout=10)
        status = camera(pool, "a").status()
        assert (status["model"], status["iteration"], status["worker"]["restarts"]) == ("colours", it["v2"], 0)
        assert "model_error" not in status
        assert set(results.iterations("b")) == {it["other"]}  # the other worker was not told
        assert pool.errors == 0
        assert_labels_match(store, results)

        # killed after the swap: it starts again on the version active now
        os.kill(pids["a"], signal.SIGKILL)
        assert wait_for(lambda: camera(pool, "a").worker.restarts == 1 and camera(pool, "a").state.value == "online",
                        timeout=90)
        count = len(results.of("a"))
        assert wait_for(lambda: len(results.of("a")) > count + 3, timeout=30)
        assert set(results.iterations("a")[count:]) == {it["v2"]}
        assert pid_of(pool, "a") != pids["a"] and camera(pool, "a").status()["version"] == 2
        assert pool.errors == 0
        assert_labels_match(store, results)
    finally:
        pool.stop(3.0)


@pytest.mark.timeout(240)
def test_a_failing_version_and_hostile_messages_leave_the_worker_as_it_was(store, tmp_path, capfd):
    it = store["it"]
    st = store["store"]
    assert isinstance(it, dict) and isinstance(st, ModelStore)
    root = store["root"]
    assert isinstance(root, Path)
    corrupt = shutil.copytree(st.version_path("colours", 1), tmp_path / "corrupt")
    (corrupt / "model.onnx").write_bytes(b"\x08\x07not a model at all" * 50)
    bad = st.add(corrupt, "colours", verify=False)  # as if staged: the worker is told of it directly
    good = ref(store, "colours", 2)
    pool, results = pool_of(store, {"a": ref(store, "colours", 1)}, swap="unload-first")
    pool.start()
    try:
        assert wait_for(lambda: results.of("a") and camera(pool, "a").status()["version"] == 1, timeout=90)
        pid = pid_of(pool, "a")
        control = camera(pool, "a").worker.control
        assert control is not None
        outside = tmp_path / "outside"
        shutil.copytree(st.version_path("colours", 1), outside)
        (root / "colours" / "v99").symlink_to(outside)
        hostile = [
            b"\xff\x00 garbage",
            b"[]",
            json.dumps({"v": 1, "swap": "colours", "path": str(outside), "version": 2}).encode(),
            json.dumps({"v": 1, "swap": "colours", "path": str(root / "colours" / "v2" / ".." / ".." / ".." /
                                                                 "outside"), "version": 2}).encode(),
            json.dumps({"v": 1, "swap": "colours", "path": str(root / "colours" / "v99"), "version": 99}).encode(),
            json.dumps({"v": 2, "swap": "colours", "path": good.path, "version": 2}).encode(),
            json.dumps({"v": 1, "swap": "colours", "path": good.path, "version": 2, "x": 1}).encode(),
            json.dumps({"v": 1, "swap": "../colours", "path": good.path, "version": 2}).encode(),
            json.dumps({"v": 1, "swap": "colours", "path": good.path, "version": 2.0}).encode(),
            b'{"v": 1, "swap": "colours", "path": "' + b"x" * 2_000_000 + b'", "version": 2}',
            b"[" * 100_000,
        ]
        for message in hostile:
            control.send_bytes(message)
        control.send_bytes(encode_swap(ModelRef("nobody-runs-this", str(root / "nobody-runs-this" / "v1"), 1)))

        pool.swap("colours", st.version_path("colours", bad), bad)
        assert wait_for(lambda: str(camera(pool, "a").status().get("model_error", "")).startswith(f"v{bad}: "),
                        timeout=60)
        count = len(results.of("a"))
        assert wait_for(lambda: len(results.of("a")) > count + 3, timeout=30)  # back on v1 (unload-first)
        assert set(results.iterations("a")) == {it["v1"]}
        assert camera(pool, "a").status()["version"] == 1 and pid_of(pool, "a") == pid

        pool.swap("colours", Path(good.path), 2)  # a good one after the failure: unload-first, then in
        assert wait_for(lambda: it["v2"] in results.iterations("a"), timeout=60)
        assert wait_for(lambda: "model_error" not in camera(pool, "a").status(), timeout=10)
        assert pid_of(pool, "a") == pid and camera(pool, "a").worker.restarts == 0
        assert pool.errors == 0
        assert_labels_match(store, results)
    finally:
        pool.stop(3.0)
    err = capfd.readouterr().err
    assert err.count("control message ignored") == len(hostile), err
    assert err.count("swap of nobody-runs-this ignored") == 1
    assert err.count(f"colours v{bad} not swapped in, staying on v1") == 1


# -- the messages on their own ----------------------------------------------------------------
def test_control_messages_are_parsed_strictly(tmp_path):
    store = tmp_path / "models"
    (store / "shelf" / "v4").mkdir(parents=True)
    good = ModelRef("shelf", str(store / "shelf" / "v4"), 4)
    assert parse(STOP, store) is None
    assert parse(encode_swap(good), store) == good
    relative = json.dumps({"v": 1, "swap": "shelf", "path": str(store / "shelf" / "x" / ".." / "v4"), "version": 4})
    assert parse(relative.encode(), store) == good  # the store's own spelling of the folder is loaded
    (store / "shelf" / "v5").symlink_to(store / "shelf" / "v4")
    bad = [
        b"", b"stop\n", b"\x00" * 10, b"null", b'"swap"', b"NaN",
        json.dumps({"v": True, "swap": "shelf", "path": good.path, "version": 4}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": good.path, "version": True}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": good.path, "version": 0}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": good.path, "version": 2**40}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": good.path, "version": float("nan")}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": good.path + "\0", "version": 4}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": None, "version": 4}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": "/etc", "version": 4}).encode(),
        json.dumps({"v": 1, "swap": "shelf", "path": str(store / "shelf" / "v5"), "version": 5}).encode(),
        json.dumps({"v": 1, "swap": "a/b", "path": good.path, "version": 4}).encode(),
        json.dumps({"v": 1, "swap": "x" * 65, "path": good.path, "version": 4}).encode(),
        b"{" * (MAX_BYTES + 1),
        b"[" * (MAX_BYTES - 1),
    ]
    for data in bad:
        with pytest.raises(ControlError):
            parse(data, store)


def test_results_name_their_version_and_announcements_are_checked(colours):
    import numpy as np

    from edge_runtime.types import Frame

    image = np.zeros((240, 320, 3), np.uint8)
    image[..., 2] = 255
    prediction = colours.predict(image)
    result = FrameResult(Frame("a", 1, 1.0, 2.0, image), prediction, 1.0, 3.0)
    old = ResultCodec(colours.spec.labels, None, "p", "it-1", key=1)
    new = ResultCodec(SHOUTED, None, "p", "it-2", key=2)
    ref = FrameRef("x", 0, image.shape)
    data = new.encode(result, ref)  # encoded with another version's codec: names travel as strings
    assert result_key(data) == 2
    back = new.decode(data).prediction
    assert [p.tag_name for p in back.predictions] == [p.tag_name for p in prediction.predictions]
    assert back.iteration == "it-2"
    with pytest.raises(ValueError, match="codec 2 given to codec 1"):
        old.decode(data)
    info, codec = decode_model(encode_model(old, "colours", 3))
    assert (info["name"], info["version"], codec.key, codec.labels, codec.iteration) == (
        "colours", 3, 1, tuple(colours.spec.labels), "it-1")
    for hostile in [b"M[]", b'M{"key": "1", "labels": []}', b'M{"key": 1, "labels": "abc"}',
                    b'M{"key": 1, "labels": ["a"], "tag_ids": ["1", "2"]}', b'M{"key": 1, "labels": [1]}',
                    b"M" + json.dumps({"key": 1, "labels": ["a"] * 100_001}).encode()]:
        with pytest.raises(ValueError):
            decode_model(hostile)


# -- through the server: the model manager's publish reaches the workers ----------------------
@pytest.mark.timeout(240)
def test_a_version_published_to_the_server_is_swapped_in_its_workers(exports, store, tmp_path):
    import httpx

    from edge_runtime.publish.update import Update
    from edge_runtime.serve import build_services
    from edge_runtime.server import create_app
    from tests.server_util import running

    it = store["it"]
    assert isinstance(it, dict)
    root = tmp_path / "models"
    ModelStore.open(root).publish(exports["modern"], "colours")
    ModelStore.open(root).publish(variant(exports["modern"], tmp_path / "other", OTHER,
                                          "00000000-0000-0000-0000-000000000003"), "other")
    cams = [{"id": "a", "source": str(store["video"]), "loop": True, "realtime": True},
            {"id": "b", "source": str(store["video"]), "loop": True, "realtime": True, "model": "other"}]
    events = {"store": {"path": str(root.parent / "events")}}  # the model changes, recorded beside the store
    in_process = build_services(load_settings(env={}, overrides={
        "models": {"path": str(root)}, "events": events, "workers": 0, "cameras": cams}), env={})
    assert [(c.status()["model"], c.status()["version"], c.status()["iteration"]) for c in in_process.cameras] == [
        ("colours", 1, it["v1"]), ("other", 1, it["other"])]

    svc = build_services(load_settings(env={}, overrides={"models": {"path": str(root)}, "events": events, "workers": 2,
                                                          "cameras": cams}), env={})
    assert isinstance(svc.pipeline, WorkerPool) and svc.manager is not None
    assert svc.pipeline.swap in svc.manager.listeners
    with running(create_app(svc)) as url:
        def cameras() -> dict[str, dict[str, object]]:
            return {c["id"]: c for c in httpx.get(f"{url}/cameras").json()}

        assert wait_for(lambda: all(c["version"] == 1 for c in cameras().values()), timeout=90)
        assert cameras()["b"]["iteration"] == it["other"]
        pids = {cid: c["worker"]["pid"] for cid, c in cameras().items()}
        svc.manager.publish(Update(variant(exports["modern"], tmp_path / "shouted", SHOUTED,
                                           "00000000-0000-0000-0000-000000000002"), "colours", source="http"))
        assert wait_for(lambda: cameras()["a"]["version"] == 2, timeout=60)
        assert wait_for(lambda: httpx.get(f"{url}/predictions/latest?camera=a").json()["iteration"] == it["v2"],
                        timeout=30)
        body = httpx.get(f"{url}/predictions/latest?camera=a").json()
        assert {p["tagName"] for p in body["predictions"]} <= set(SHOUTED)
        after = cameras()
        assert (after["a"]["iteration"], after["b"]["version"], after["b"]["iteration"]) == (it["v2"], 1, it["other"])
        assert {cid: c["worker"]["pid"] for cid, c in after.items()} == pids
        assert svc.pipeline.errors == 0
