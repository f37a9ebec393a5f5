"""Cameras in worker processes: the plan, the bytes contract, shared memory, supervision,
and the server's routes across the process boundary, with real processes, the small test
models and video files written by OpenCV."""

from __future__ import annotations

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.capture.camera import Camera
from edge_runtime.capture.sources import open_source
from edge_runtime.config import load_settings
from edge_runtime.model.predictor import Predictor
from edge_runtime.pipeline import Pipeline
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from edge_runtime.sinks import LatestResults
from edge_runtime.types import Frame, FrameResult, Prediction, PredictionResult
from edge_runtime.workers.codec import FrameRef, ResultCodec, decode_status, encode_status
from edge_runtime.workers.control import ModelRef
from edge_runtime.workers.plan import Split, plan_workers
from edge_runtime.workers.shm import SHM_DIR, FrameReader, FrameRing, prefix_for, remove_stale
from edge_runtime.workers.supervisor import RemoteCamera, WorkerPool
from tests.conftest import jpeg_bytes, solid, wait_for, write_video, zip_export_path
from tests.server_util import free_port, running

FRAMES = 30  # per video; frame i is grey level 4*i


# -- planning ---------------------------------------------------------------------------
@pytest.mark.parametrize(("workers", "cameras", "cores", "groups", "split"), [
    ("auto", ["a"], 2, (), (2, 1)),                     # the Pi and this machine: in-process
    ("auto", ["a"], 16, (), (2, 15)),                   # one camera gains nothing from a process
    ("auto", ["a", "b"], 2, (), (2, 1)),                # two cores: in-process
    ("auto", ["a", "b"], 16, (("a",), ("b",)), (2, 7)),
    ("auto", list("abcdefgh"), 16, tuple((c,) for c in "abcdefgh"), (2, 1)),
    ("auto", list("abcde"), 4, (("a", "e"), ("b",), ("c",), ("d",)), (1, 1)),
    (0, ["a", "b"], 16, (), (4, 13)),
    (2, ["a", "b"], 2, (("a",), ("b",)), (1, 1)),
    (8, ["a", "b"], 2, (("a",), ("b",)), (1, 1)),        # never more workers than cameras
    (1, ["a", "b", "c"], 6, (("a", "b", "c"),), (6, 1)),
    (1, ["a"], 2, (("a",),), (2, 1)),
])
def test_plan(workers, cameras, cores, groups, split):
    plan = plan_workers(workers, cameras, cores=cores)
    assert plan.groups == groups
    assert plan.in_process == (groups == ())
    session = plan.server if plan.in_process else plan.worker
    assert (session.runs, session.threads) == split
    processes = max(1, len(groups))
    assert session.busy * processes <= max(cores, processes)  # never oversubscribed


def test_plan_keeps_configured_runs_and_threads():
    assert plan_workers(0, [], cores=4).server == Split(1, 0)  # uploads only: one run on every core
    assert plan_workers(0, [], cores=4, runs=3).server == Split(3, 0)
    assert plan_workers(0, ["a"], cores=4, threads=1).server == Split(2, 1)  # two frames per camera at most
    assert plan_workers(0, ["a"], cores=4, runs=1).server == Split(1, 4)
    assert plan_workers(0, ["a", "b"], cores=8, threads=6).server == Split(3, 6)  # no more runs than fit
    assert plan_workers(0, ["a"], cores=4, threads=8).server == Split(1, 8)
    assert plan_workers(2, ["a", "b"], cores=16, threads=3).worker == Split(2, 3)
    assert plan_workers(2, ["a", "b"], cores=16, threads=3).server == Split(1, 3)
    assert plan_workers(0, ["a"], cores=2).describe() == \
        "cameras in the server process: 2 frames at once over 1 onnxruntime thread (2 cores)"
    assert plan_workers(2, ["a", "b"], cores=16).describe() == \
        "2 camera worker processes, each: 2 frames at once over 7 onnxruntime threads (16 cores)"


def test_more_runs_than_cores_is_warned_about():
    assert plan_workers(0, ["a"], cores=2).oversubscribed() is None  # the default fits
    assert plan_workers(0, ["a"], cores=2, runs=2).oversubscribed() is None
    assert plan_workers(0, ["a"], cores=2, runs=64).oversubscribed().startswith(
        "model.runs 64 is more than the 2 cores each camera session has")
    assert plan_workers(2, ["a", "b"], cores=8, runs=4).oversubscribed() is None  # 4 cores per worker
    assert "more than the 4 cores" in plan_workers(2, ["a", "b"], cores=8, runs=5).oversubscribed()


def test_workers_setting_is_checked():
    from edge_runtime.errors import ConfigError

    assert load_settings(env={}).workers == "auto"
    assert load_settings(env={}, overrides={"workers": 3}).workers == 3
    with pytest.raises(ConfigError, match="workers"):
        load_settings(env={}, overrides={"workers": "many"})
    with pytest.raises(ConfigError, match="workers"):
        load_settings(env={}, overrides={"workers": -1})


def test_workers_flag(capsys):
    from edge_runtime.cli import build_parser, serve_overrides

    assert serve_overrides(build_parser().parse_args(["serve", "--workers", "3"]))["workers"] == 3
    assert serve_overrides(build_parser().parse_args(["serve", "--workers", "auto"]))["workers"] == "auto"
    assert "workers" not in serve_overrides(build_parser().parse_args(["serve"]))
    with pytest.raises(SystemExit):
        build_parser().parse_args(["serve", "--workers", "many"])
    assert "expected auto or a number, not 'many'" in capsys.readouterr().err


# -- the bytes contract -----------------------------------------------------------------
def _pipeline_results(predictor: Predictor, images: list[np.ndarray]) -> list[FrameResult]:
    camera = Camera("door", lambda: open_source("demo:"))
    pipeline = Pipeline(predictor, [camera], lambda r: None)
    return [pipeline.process(Frame("door", i + 1, time.time(), time.monotonic(), img))
            for i, img in enumerate(images)]


@pytest.mark.parametrize("layout", ["modern", "legacy", "yolo", "s1"])
def test_codec_round_trip_of_pipeline_results(exports, layout):
    predictor = Predictor.load(exports[layout])
    images = [solid((0, 0, 255)), solid((0, 255, 0), 320, 240), solid((255, 0, 0))]
    images[0][100:300, 200:400] = (0, 0, 255)
    codec = ResultCodec(predictor.spec.labels, predictor.spec.tag_ids, predictor.project, predictor.iteration)
    for result in _pipeline_results(predictor, images):
        ref = FrameRef("edgert_1_0_1_0_1", 2 << 20, result.frame.image.shape)
        data = codec.encode(result, ref)
        decoded = codec.decode(data)
        assert decoded.ref == ref
        back = decoded.result(result.frame.image)
        assert back.to_json("p", "i") == result.to_json("p", "i")
        assert back.prediction == result.prediction
        assert (back.frame.seq, back.frame.captured_at, back.frame.captured_mono) == (
            result.frame.seq, result.frame.captured_at, result.frame.captured_mono)
        assert back.inference_ms == result.inference_ms and back.published_mono == result.published_mono
        assert back.reused == result.reused
        reused = codec.decode(codec.encode(dataclasses.replace(result, reused=True), ref))
        assert reused.reused is True and reused.result(result.frame.image).reused is True
        assert len(data) < 200 + 60 * len(result.prediction.predictions)  # compact: no pickled objects


def test_codec_keeps_predictions_the_labels_do_not_name():
    odd = PredictionResult((Prediction(7, "spare", 0.25, "id-7"), Prediction(0, "a", 0.5)), 10, 20)
    result = FrameResult(Frame("c", 3, 1.5, 2.5, np.zeros((1, 1, 3), np.uint8)), odd, 1.0, 3.0)
    codec = ResultCodec(("a", "b"))
    assert codec.decode(codec.encode(result, FrameRef("x", 0, (1, 1, 3)))).prediction == odd
    assert decode_status(encode_status({"cameras": {"c": 1}})) == {"cameras": {"c": 1}}
    with pytest.raises(ValueError, match="not a result"):
        codec.decode(encode_status({}))


# -- shared memory ----------------------------------------------------------------------
def _segments(pid: int) -> list[str]:
    return sorted(p.name for p in SHM_DIR.glob(f"edgert_{pid}_*"))


def read(reader: FrameReader, ref: FrameRef, seq: int) -> np.ndarray:
    image = reader.read("cam", ref, seq)
    assert image is not None
    return image


def jpeg_shape(data: bytes) -> tuple[int, ...]:
    image = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
    assert image is not None
    return tuple(image.shape)


def test_frame_ring_hands_frames_over_and_never_overwrites_an_unread_one():
    ring, reader = FrameRing(prefix_for(os.getpid(), 0, 1)), FrameReader()
    try:
        frames = [np.full((48, 64, 3), i * 10, np.uint8) for i in range(1, 8)]
        refs = [ring.put("cam", i + 1, f) for i, f in enumerate(frames[:3])]  # fills the 3 slots
        assert len(_segments(os.getpid())) == 1
        for i, ref in enumerate(refs):
            assert np.array_equal(read(reader, ref, i + 1), frames[i])
        assert reader.read("cam", refs[0], 99) is None and reader.missed == 1  # not the frame that is there
        ref4 = ring.put("cam", 4, frames[3])  # reuses slot 0: it was consumed, so no wait
        assert ring.overwritten == 0 and ref4.offset == 0
        assert np.array_equal(read(reader, ref4, 4), frames[3])
        big = np.full((96, 128, 3), 77, np.uint8)  # a larger frame gets a new segment
        ref5 = ring.put("cam", 5, big)
        assert ref5.segment != ref4.segment and len(_segments(os.getpid())) == 1
        assert np.array_equal(read(reader, ref5, 5), big)
        small = ring.put("cam", 6, frames[0])  # a smaller frame fits the larger slots
        assert small.segment == ref5.segment and small.offset > 0
        assert np.array_equal(read(reader, small, 6), frames[0])
        for seq in (7, 8, 9):  # 8 and 9 take the slots of 5 and 6, which were read
            ring.put("cam", seq, big)
        assert ring.overwritten == 0
        began = time.monotonic()
        ring.put("cam", 10, big)  # the slot of 7, never read: the writer waits, then overwrites
        assert time.monotonic() - began >= 0.9 and ring.overwritten == 1
    finally:
        reader.close()
        ring.close()
    assert _segments(os.getpid()) == []


def test_stale_segments_of_a_killed_server_are_removed():
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True,
                          check=True, timeout=30)
    dead_pid = int(dead.stdout)
    ring = FrameRing(prefix_for(dead_pid, 0, 1))
    mine = FrameRing(prefix_for(os.getpid(), 0, 1))
    try:
        ring.put("cam", 1, np.zeros((4, 4, 3), np.uint8))
        mine.put("cam", 1, np.zeros((4, 4, 3), np.uint8))
        assert len(_segments(dead_pid)) == 1
        removed = remove_stale()
        assert removed and all(name.startswith(f"edgert_{dead_pid}_") for name in removed)
        assert _segments(dead_pid) == [] and len(_segments(os.getpid())) == 1
    finally:
        ring.close()
        mine.close()


# -- two cameras in two workers, behind the real server -----------------------------------
@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cams")
    return {name: write_video(root / f"{name}.avi", frames=FRAMES, size=(320, 240), fps=15) for name in ("a", "b")}


def camera_settings(videos: dict[str, Path], **extra: object) -> list[dict[str, object]]:
    return [{"id": name, "source": str(path), "loop": True, "realtime": True, **extra} for name, path in videos.items()]


def grey_level(seq: int) -> int:
    return 4 * ((seq - 1) % FRAMES)


@pytest.mark.timeout(180)
def test_two_workers_publish_survive_a_kill_and_serve_every_route(exports, videos, tmp_path):
    export_zip = zip_export_path(exports["modern"], tmp_path)
    settings = load_settings(env={}, overrides={"model": {"path": str(export_zip)}, "workers": 2,
                                                "cameras": camera_settings(videos)})
    svc = build_services(settings, env={})
    assert isinstance(svc.pipeline, WorkerPool)
    model = svc.pipeline.models["a"]
    assert model.path == str(svc.predictor.bundle.root) != str(export_zip)  # workers share the server's extracted copy
    with running(create_app(svc)) as url:
        def seqs() -> dict[str, int]:
            return {cid: r.frame.seq for cid, r in svc.latest.all().items()}

        assert wait_for(lambda: len(seqs()) == 2, timeout=60)
        # results can come before a worker's first status: wait until both say online
        assert wait_for(lambda: all(c["state"] == "online" for c in httpx.get(f"{url}/cameras").json()), timeout=30)
        cams = {c["id"]: c for c in httpx.get(f"{url}/cameras").json()}
        pids = {cid: c["worker"]["pid"] for cid, c in cams.items()}
        assert pids["a"] != pids["b"] and os.getpid() not in pids.values()
        assert all(c["worker"]["rss_mb"] > 10 for c in cams.values())
        metrics = httpx.get(f"{url}/metrics").text
        assert 'edge_process_rss_bytes{process="worker-1"}' in metrics and "edge_rss_bytes " in metrics

        # the frame's pixels came through shared memory: the grey level of its frame number
        first = svc.latest.get("a")
        assert first is not None and first.frame.image.shape == (240, 320, 3)
        assert abs(int(first.frame.image[5, 5, 0]) - grey_level(first.frame.seq)) <= 8
        assert svc.pipeline.frames.missed == 0

        # SSE, MJPEG and snapshots across the process boundary
        seen: set[str] = set()
        with httpx.stream("GET", f"{url}/events", timeout=10) as events:
            for line in events.iter_lines():
                if line.startswith("data:"):
                    seen.add(json.loads(line[5:])["camera"])
                if seen == {"a", "b"}:
                    break
        snap = httpx.get(f"{url}/snapshot.jpg?camera=b")
        assert snap.status_code == 200 and jpeg_shape(snap.content) == (240, 320, 3)
        with httpx.stream("GET", f"{url}/stream.mjpg?camera=a", timeout=10) as mjpeg:
            body = b""
            for chunk in mjpeg.iter_bytes():
                body += chunk
                if body.count(b"--frame") >= 2:
                    break
        part = body.split(b"\r\n\r\n", 1)[1]
        assert jpeg_shape(part) == (240, 320, 3)

        # uploads use the server's own session
        up = httpx.post(f"{url}/image", content=jpeg_bytes(solid((0, 0, 255))))
        assert up.status_code == 200 and up.json()["predictions"][0]["tagName"] == "red"

        # SIGKILL one worker: its camera restarts, the other keeps publishing throughout
        before = seqs()
        os.kill(pids["a"], signal.SIGKILL)

        def state(cid: str) -> str:
            return str({c["id"]: c["state"] for c in httpx.get(f"{url}/cameras").json()}[cid])

        assert wait_for(lambda: state("a") == "restarting", timeout=10)
        ready = httpx.get(f"{url}/readyz").json()
        assert ready["status"] == "ready" and ready["cameras"]["a"] == "restarting"
        assert 'edge_camera_state{camera="a",state="restarting"} 1.0' in httpx.get(f"{url}/metrics").text
        during = seqs()["b"]
        assert wait_for(lambda: seqs()["b"] > during + 5, timeout=20)
        assert wait_for(lambda: state("a") == "online" and seqs()["a"] > before["a"], timeout=60)
        restarted = {c["id"]: c for c in httpx.get(f"{url}/cameras").json()}["a"]["worker"]
        assert restarted["restarts"] == 1 and restarted["pid"] != pids["a"]
        assert seqs()["a"] > before["a"]  # numbers keep growing across the restart
    assert _segments(os.getpid()) == []


@pytest.mark.timeout(120)
def test_a_silent_worker_is_killed_and_restarted(exports, videos):
    settings = load_settings(env={}, overrides={"model": {"path": str(exports["modern"])}, "workers": 2,
                                                "cameras": camera_settings(videos)})
    latest = LatestResults()
    models = {cid: ModelRef("modern", str(exports["modern"])) for cid in ("a", "b")}
    pool = WorkerPool(settings, plan_workers(2, ["a", "b"], cores=2), latest, models, hang_s=4.0)
    pool.start()
    try:
        assert wait_for(lambda: len(latest.all()) == 2, timeout=60)
        a = next(c for c in pool.cameras if c.id == "a")
        stuck = pid_of(a)
        os.kill(stuck, signal.SIGSTOP)  # as if stuck in a driver with the interpreter held
        assert wait_for(lambda: a.state.value == "restarting", timeout=15)
        assert not alive(stuck)
        during = seq_of(latest, "b")
        assert wait_for(lambda: a.state.value == "online", timeout=60)
        assert seq_of(latest, "b") > during
    finally:
        pool.stop(3.0)
    assert not any(alive(pid_of(c)) for c in pool.cameras)


def pid_of(camera: RemoteCamera) -> int:
    process = camera.worker.process
    assert process is not None and process.pid is not None
    return process.pid


def seq_of(latest: LatestResults, camera_id: str) -> int:
    result = latest.get(camera_id)
    assert result is not None
    return result.frame.seq


# -- a real `edge-runtime serve` with workers, ended by SIGTERM or SIGKILL -------------------
def children(pid: int) -> list[int]:
    """Every descendant of pid, from /proc."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [p for p, pp in parents.items() if pp in frontier]
        found += kids
        frontier = kids
    return found


def alive(pid: int) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


@pytest.mark.timeout(150)
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL])
def test_serve_leaves_no_process_or_shared_memory_behind(exports, videos, tmp_path, sig):
    config = tmp_path / "edge.yaml"
    config.write_text(json.dumps({"model": {"path": str(exports["modern"])}, "cameras": camera_settings(videos)}))
    port = free_port()
    env = {k: v for k, v in os.environ.items() if k != "EDGE_RUNTIME_TOKEN"}
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "serve", "--config", str(config),
                             "--port", str(port), "--workers", "2"], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        def latest() -> dict[str, object]:
            try:
                body = httpx.get(f"http://127.0.0.1:{port}/predictions/latest", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return {}
            return body if isinstance(body, dict) else {}

        assert wait_for(lambda: set(latest()) == {"a", "b"}, timeout=90)
        family = children(proc.pid)
        assert len(family) >= 2 and len(_segments(proc.pid)) == 2  # the workers (and the resource tracker)
        began = time.monotonic()
        proc.send_signal(sig)
        out, _ = proc.communicate(timeout=15)
        if sig == signal.SIGTERM:
            assert time.monotonic() - began < 5.0, out
            assert "Application shutdown complete" in out
            assert "did not stop in time" not in out, out
        # workers see the server's end of their pipe close, and exit; nothing is left behind
        assert wait_for(lambda: not any(alive(p) for p in family), timeout=10), (family, out)
        assert wait_for(lambda: _segments(proc.pid) == [], timeout=5), _segments(proc.pid)
    finally:
        proc.kill()
        proc.wait(10)
