"""Candidates trained on the device: the real `edge-export train` and `compare` in children,
from labels saved in a real event store (export_dataset) or a folder pair (--dataset), a
real server answering while one is trained, promoted and discarded, `edge-runtime retrain`
on the command line, and the ways a training ends badly (no event store, no labels, killed,
hung, too much output, over its disk budget, the server killed under it). Real
classifiers, real onnxruntime sessions, a real uvicorn server."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import httpx
import numpy as np
import pytest

from edge_runtime.config import load_settings
from edge_runtime.errors import TrainingError
from edge_runtime.events.store import EventStore
from edge_runtime.model.predictor import Predictor
from edge_runtime.publish.child import parse_progress, progress_line
from edge_runtime.publish.config import RetrainConfig
from edge_runtime.publish.retrain import Retrainer, TrainingBusy, folder_pair, labelled_frames
from edge_runtime.publish.store import ModelStore
from exporter.compare import compare
from exporter.dataset import load_dataset
from exporter.evaluate import evaluate
from tests.conftest import wait_for
from tests.retrain_util import (
    BEARER,
    app_over,
    base_bundle,
    candidate,
    label_in_store,
    label_through_routes,
    labelled_pair,
    noise_jpeg,
    store_with,
)
from tests.server_util import running

PNG = cv2.imencode(".png", np.full((48, 48, 3), (0, 0, 255), np.uint8))[1].tobytes()
CLASSIFY = "/customvision/v3.1/prediction/any/classify/iterations/shelf/image"
SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
CHATTY = [sys.executable, "-c", "import sys\nfor _ in range(4000): print('x' * 100)"]


@pytest.fixture(scope="module")
def base(tmp_path_factory) -> Path:
    return base_bundle(tmp_path_factory.mktemp("base"))


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Path:
    return labelled_pair(tmp_path_factory.mktemp("labelled") / "pair")


def tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def ready(url: str, job_id: str, timeout: float = 240) -> dict:  # type: ignore[type-arg]
    assert wait_for(lambda: candidate(url, job_id)["state"] not in ("training", "comparing"), timeout, 0.5)
    body = candidate(url, job_id)
    assert body["state"] == "ready", body
    return body


class Hammer:
    """A client posting a photo all the time, counting every answer and the iterations seen."""

    def __init__(self, url: str) -> None:
        self.url, self.stop = url, threading.Event()
        self.statuses: list[int] = []
        self.iterations: list[str] = []
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        with httpx.Client(base_url=self.url, headers=BEARER, timeout=30) as http:
            while not self.stop.is_set():
                r = http.post(CLASSIFY, content=PNG)
                self.statuses.append(r.status_code)
                if r.status_code == 200:
                    self.iterations.append(r.json()["iteration"])

    def __enter__(self) -> Hammer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(30)


@pytest.mark.timeout(600)
def test_train_refuse_a_second_discard_then_train_and_promote_while_requests_keep_answering(base, tmp_path):
    store = store_with(base, tmp_path / "models")
    app, svc = app_over(store)
    with running(app) as url:
        label_through_routes(url, svc.store, count=33)  # blue among them: a tag v1 never knew
        labels_before = svc.store.labels("shelf")
        first = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30)
        assert first.status_code == 202, first.text
        job = first.json()
        second = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30)
        assert second.status_code == 409 and "already running" in second.json()["message"]
        assert wait_for(lambda: candidate(url, job["id"])["progress"] > 0.05, 120, 0.2)  # fed by the child
        body = ready(url, job["id"])
        cmp = body["comparison"]
        assert cmp["active"]["tags"] == ["green", "red"] and cmp["candidate"]["tags"] == ["blue", "green", "red"]
        blue = next(t for t in cmp["perTag"] if t["tag"] == "blue")
        assert blue["active"]["recall"] == 0.0 and blue["candidate"]["recall"] == 1.0  # a tag v1 never knew
        # every held-out blue frame is answered differently: v1 cannot say blue, the candidate finds them all
        assert blue["images"] >= 2 and cmp["disagreementCount"] >= blue["images"]
        assert all(d["truth"] == ["blue"] or d["candidateRight"] for d in cmp["disagreements"])
        thumb = httpx.get(f"{url}/api/models/shelf/candidates/{job['id']}/images/0", headers=BEARER, timeout=10)
        assert thumb.status_code == 200 and cv2.imdecode(np.frombuffer(thumb.content, np.uint8), 1) is not None

        gone = httpx.delete(f"{url}/api/models/shelf/candidates/{job['id']}", headers=BEARER, timeout=30)
        assert gone.status_code == 200 and gone.json()["state"] == "discarded"
        assert candidate(url, job["id"])["state"] == "discarded"
        assert not (store / ".candidates" / "shelf" / job["id"] / "bundles").exists()
        listed = httpx.get(f"{url}/api/models", headers=BEARER, timeout=10).json()[0]
        assert listed["version"] == 1 and listed["changes"][-1]["reason"] == "discard"

        job = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30).json()
        body = ready(url, job["id"])
        with Hammer(url) as hammer:
            assert wait_for(lambda: len(hammer.statuses) > 5, 30)
            before = hammer.iterations[-1]
            promoted = httpx.post(f"{url}/api/models/shelf/candidates/{job['id']}/promote", headers=BEARER,
                                  timeout=120)
            assert promoted.status_code == 200, promoted.text
            assert promoted.json()["version"] == 2
            seen = len(hammer.iterations)
            assert wait_for(lambda: len(hammer.iterations) > seen + 5, 30)
        assert set(hammer.statuses) == {200}  # no request failed while the candidate was swapped in
        new = body["comparison"]["candidate"]["iteration"]
        assert before == body["comparison"]["active"]["iteration"] and hammer.iterations[-1] == new
        assert candidate(url, job["id"])["state"] == "promoted"
        again = httpx.post(f"{url}/api/models/shelf/candidates/{job['id']}/promote", headers=BEARER, timeout=30)
        assert again.status_code == 409  # promoted once
        assert svc.store.labels("shelf") == labels_before  # trained from a copy: the labels are as they were
    assert ModelStore(store).state("shelf").active == 2  # type: ignore[union-attr]
    events = EventStore.open_readonly(store.parent / "events")
    try:
        changes = [(c.reason, c.source) for c in events.model_changes(limit=10)]
    finally:
        events.close()
    assert ("publish", "retrain") in changes and ("discard", "retrain") in changes


@pytest.mark.timeout(300)
def test_a_child_killed_mid_training_fails_the_job_and_the_active_version_keeps_serving(base, tmp_path):
    store = store_with(base, tmp_path / "models")
    label_in_store(store.parent / "events", count=24)
    app, _ = app_over(store)
    with running(app) as url:
        job = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30).json()
        assert wait_for(lambda: candidate(url, job["id"])["stage"] == "features", 120, 0.1)
        os.kill(candidate(url, job["id"])["pid"], signal.SIGKILL)
        assert wait_for(lambda: candidate(url, job["id"])["state"] == "failed", 30, 0.1)
        body = candidate(url, job["id"])
        assert "killed (SIGKILL)" in body["error"] and "\n" not in body["error"]
        r = httpx.post(f"{url}{CLASSIFY}", content=PNG, headers=BEARER, timeout=30)
        assert r.status_code == 200  # v1 answers
        assert httpx.get(f"{url}/api/models", headers=BEARER).json()[0]["version"] == 1
        assert not (store / ".candidates" / "shelf" / job["id"] / "dataset").exists()  # tidied at once
        # and the device may train again: the lock went with the job
        again = httpx.post(f"{url}/api/models/shelf/candidates", headers=BEARER, timeout=30)
        assert again.status_code == 202
        httpx.delete(f"{url}/api/models/shelf/candidates/{again.json()['id']}", headers=BEARER)  # still training
        assert wait_for(lambda: candidate(url, again.json()["id"])["state"] != "training", 240, 0.5)


@pytest.mark.timeout(300)
def test_a_command_killed_with_minus_9_takes_its_child_along_and_the_next_start_tidies(base, pair, tmp_path):
    store = store_with(base, tmp_path / "models")
    proc = subprocess.Popen([sys.executable, "-m", "edge_runtime.cli", "retrain", "shelf", "--dataset", str(pair),
                             "--models", str(store)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        jobs = store / ".candidates" / "shelf"
        assert wait_for(lambda: any(jobs.glob("*/train.log")), 60, 0.1)  # the child has started
        assert wait_for(lambda: bool(_children_of(jobs)), 30, 0.1)
        time.sleep(1.0)
    finally:
        proc.kill()
        proc.wait(10)
    assert wait_for(lambda: not _children_of(jobs), 10)  # the training died with the command
    (job_dir,) = jobs.iterdir()
    assert json.loads((job_dir / "job.json").read_text())["state"] == "training"  # as the kill left it
    retrainer = Retrainer.open(ModelStore(store), None, folder_pair(pair))
    (job,) = retrainer.jobs("shelf")
    assert job.state == "failed" and "interrupted" in job.error
    assert not (job_dir / "dataset").exists() and not (job_dir / "bundles").exists()
    assert ModelStore(store).state("shelf").active == 1  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_a_child_that_hangs_is_stopped_at_its_deadline(base, pair, tmp_path):
    store = ModelStore.open(store_with(base, tmp_path / "models"))
    retrainer = Retrainer.open(store, None, folder_pair(pair), RetrainConfig(timeout_s=2), command=SLEEPER)
    started = time.monotonic()
    job = retrainer.run("shelf")
    assert time.monotonic() - started < 30
    assert job.state == "failed" and "ran past models.retrain.timeout_s (2 s)" in job.error
    assert store.state("shelf").active == 1  # type: ignore[union-attr]


@pytest.mark.timeout(120)
def test_a_child_that_writes_too_much_output_is_stopped(base, pair, tmp_path):
    store = ModelStore.open(store_with(base, tmp_path / "models"))
    retrainer = Retrainer.open(store, None, folder_pair(pair), RetrainConfig(max_output_kb=16), command=CHATTY)
    job = retrainer.run("shelf")
    assert job.state == "failed" and "more than 16384 bytes of output" in job.error
    assert (store.root / ".candidates" / "shelf" / job.id / "train.log").stat().st_size <= 16384


@pytest.mark.timeout(300)
def test_a_full_disk_budget_fails_the_training_and_leaves_the_dataset_and_active_version(base, pair, tmp_path):
    """The trainer's model file is over a 1 MB budget: its write fails in the real child."""
    store = ModelStore.open(store_with(base, tmp_path / "models"))
    before = tree(pair)
    retrainer = Retrainer.open(store, None, folder_pair(pair), RetrainConfig(max_mb=1))
    job = retrainer.run("shelf")
    assert job.state == "failed" and "disk budget (1 MB)" in job.error, job.error
    assert tree(pair) == before and store.state("shelf").active == 1  # type: ignore[union-attr]
    assert not (store.root / ".candidates" / "shelf" / job.id / "bundles").exists()
    with pytest.raises(TrainingBusy):  # a failed job is not promoted
        retrainer._ready("shelf", job.id)


@pytest.mark.timeout(300)
def test_compare_gives_the_figures_evaluate_gives_each_version(base, pair, tmp_path):
    subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(pair / "train"), "--project", "shelf",
                    "--out", str(tmp_path), "--no-progress"], check=True, capture_output=True, timeout=300)
    active, new = Predictor.load(base), Predictor.load(tmp_path / "shelf" / "v1")
    held_out = load_dataset(pair / "held_out")
    report = compare(active, new, held_out)
    truth = evaluate(new, held_out)
    for t in truth.per_tag:  # type: ignore[union-attr]
        row = next(r for r in report["perTag"] if r["tag"] == t.tag)
        assert row["candidate"] == pytest.approx({"precision": t.precision, "recall": t.recall,
                                                  "ap": t.average_precision}, abs=1e-6)
    assert report["overall"]["candidate"]["ap"] == pytest.approx(truth.average_precision, abs=1e-6)
    # the active version knows two of the three tags; on red and green it is what evaluate says
    two = load_dataset(_without(pair / "held_out", "blue", tmp_path / "two"))
    alone = compare(active, active, two)
    old = evaluate(active, two)
    for t in old.per_tag:  # type: ignore[union-attr]
        row = next(r for r in alone["perTag"] if r["tag"] == t.tag)
        assert row["active"]["recall"] == pytest.approx(t.recall, abs=1e-6)
        assert row["active"]["ap"] == pytest.approx(t.average_precision, abs=1e-6)
    assert alone["disagreementCount"] == 0  # a version never disagrees with itself
    argmax = {d["image"]: d["active"] for d in report["disagreements"]}
    for item in held_out.items:  # each listed disagreement is what the two models answer
        rel = item.path.relative_to(held_out.root).as_posix()
        if rel in argmax:
            top = active.predict(cv2.imread(str(item.path))).predictions[0].tag_name
            assert argmax[rel] == [top]


def _children_of(jobs: Path) -> list[str]:
    """Processes whose command line names a path under the candidates' folder: the children."""
    found = subprocess.run(["pgrep", "-f", str(jobs)], capture_output=True, text=True).stdout.split()
    return [pid for pid in found if int(pid) != os.getpid()]


def _without(folder: Path, tag: str, out: Path) -> Path:
    import shutil

    shutil.copytree(folder, out, ignore=lambda d, names: [tag] if Path(d) == folder else [])
    return out


@pytest.mark.timeout(120)
def test_hostile_route_input(base, tmp_path):
    store = store_with(base, tmp_path / "models")
    label_in_store(store.parent / "events", count=12)
    app, _ = app_over(store)
    with running(app) as url:
        base_url = f"{url}/api/models/shelf/candidates"
        assert httpx.post(base_url, timeout=10).status_code == 401  # the token first
        assert httpx.post(base_url, headers={"Authorization": "Bearer nope"}, timeout=10).status_code == 401
        assert httpx.get(f"{url}/api/models/nosuch/candidates", headers=BEARER).status_code == 404
        assert httpx.post(f"{url}/api/models/nosuch/candidates", headers=BEARER).status_code == 404
        for bad in ("..%2F..%2Fshelf", "0123456789abcdeg", "0123456789ABCDEF", "a" * 17, "%2e%2e"):
            r = httpx.get(f"{base_url}/{bad}", headers=BEARER)
            assert r.status_code in (400, 404), (bad, r.status_code)
            assert httpx.post(f"{base_url}/{bad}/promote", headers=BEARER).status_code in (400, 404)
        unknown = "0123456789abcdef"
        assert httpx.get(f"{base_url}/{unknown}", headers=BEARER).status_code == 404
        assert httpx.delete(f"{base_url}/{unknown}", headers=BEARER).status_code == 404
        assert httpx.get(f"{base_url}/{unknown}/images/0", headers=BEARER).status_code == 404
        assert httpx.get(f"{base_url}/{unknown}/images/-1", headers=BEARER).status_code == 400
        huge = httpx.post(base_url, headers=BEARER, content=b"x" * (1 << 20), timeout=10)
        assert huge.status_code in (202, 413)  # no route reads a body: started, or refused by the guard
        if huge.status_code == 202:  # a candidate in training has no disagreements to show yet
            r = httpx.get(f"{base_url}/{huge.json()['id']}/images/0", headers=BEARER)
            assert r.status_code == 404
        # the server's shutdown stops that training


def _fails_with(store: Path, events: EventStore | None) -> str:
    """The one-line reason a training from the labelled frames of `events` failed."""
    models = ModelStore.open(store)
    job = Retrainer.open(models, None, labelled_frames(models, events, 0.2)).run("shelf")
    assert job.state == "failed" and "\n" not in job.error, job
    assert not (store / ".candidates" / "shelf" / job.id / "dataset").exists()
    assert models.state("shelf").active == 1  # type: ignore[union-attr]
    return job.error


def test_without_an_event_store_a_training_fails_with_one_line(base, tmp_path):
    store = store_with(base, tmp_path / "models")
    with pytest.raises(TrainingError, match="no event store"):
        labelled_frames(ModelStore(store), None, 0.2)("shelf", tmp_path / "out")
    assert "shelf: no event store, so no labelled frames" in _fails_with(store, None)


def test_without_labels_for_the_name_a_training_fails_with_one_line(base, tmp_path):
    store = store_with(base, tmp_path / "models")
    label_in_store(tmp_path / "events", count=9, model="door")  # another model's labels only
    events = EventStore.open_readonly(tmp_path / "events")
    try:
        assert "no labels for model 'shelf'" in _fails_with(store, events)
    finally:
        events.close()


def test_the_base_dataset_is_merged_into_train_and_the_newest_labels_held_out(base, tmp_path):
    """STORE/shelf/dataset (red, green) and five labels of a new tag: train/ has all three
    tags, held_out/ only the newest label; neither the base dataset nor the labels change."""
    store = store_with(base, tmp_path / "models", base=base.parents[2] / "base")
    kept = label_in_store(tmp_path / "events", count=5, tags=("blue",))
    before = tree(store / "shelf" / "dataset")
    events = EventStore.open_readonly(tmp_path / "events")
    try:
        labelled_frames(ModelStore(store), events, 0.2)("shelf", tmp_path / "out")
    finally:
        events.close()
    train, held = load_dataset(tmp_path / "out" / "train"), load_dataset(tmp_path / "out" / "held_out")
    counts = {tag: sum(1 for i in train.items if i.tags == (tag,)) for tag in ("red", "green", "blue")}
    assert counts == {"red": 6, "green": 6, "blue": 4}
    newest = kept[-1][0]
    assert [i.path.stem for i in held.items] == [newest] and held.items[0].tags == ("blue",)
    assert tree(store / "shelf" / "dataset") == before


@pytest.mark.timeout(120)
def test_too_few_labels_of_a_new_tag_fail_with_the_trainers_reason(base, tmp_path):
    """Four labels of blue, one of them held out: the trainer's own check refuses, and its
    reason is the job's one-line error."""
    store = store_with(base, tmp_path / "models", base=base.parents[2] / "base")
    label_in_store(tmp_path / "events", count=4, tags=("blue",))
    events = EventStore.open_readonly(tmp_path / "events")
    try:
        assert _fails_with(store, events) == "edge-export: tag 'blue' has 3 images; at least 5 are needed"
    finally:
        events.close()


@pytest.mark.timeout(400)
def test_the_retrain_command_trains_from_labels_in_a_store_a_server_is_writing(base, tmp_path):
    """`edge-runtime retrain shelf --data DATA`: the event store read-only while another
    process holds it open for writing, as a recording server does."""
    store = store_with(base, tmp_path / "models")
    label_in_store(tmp_path / "events", count=24)
    writer = EventStore.open(tmp_path / "events")
    try:
        labels = writer.labels("shelf")
        env = {k: v for k, v in os.environ.items() if not k.startswith("EDGE_RUNTIME_")}
        done = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "retrain", "shelf", "--data",
                               str(tmp_path / "events"), "--models", str(store)], capture_output=True, text=True,
                              timeout=360, cwd=tmp_path, env=env)
        assert done.returncode == 0, done.stderr
        rows = {line.split()[0]: line.split()[1:] for line in done.stdout.splitlines() if line.strip()}
        # precision, recall, AP (v1, the candidate) and images: v1 never answers blue, the candidate finds them all
        assert rows["blue"][:4] == ["-", "100.0%", "0.0%", "100.0%"], done.stdout
        assert "is ready" in done.stdout and "train features" in done.stderr
        assert writer.labels("shelf") == labels  # read only: the labels as they were, the writer still writing
        assert writer.add_sample("manual", "cam", 1.0, noise_jpeg("red"), {"predictions": []}) is not None
    finally:
        writer.close()
    assert ModelStore(store).state("shelf").active == 1  # type: ignore[union-attr]
    missing = subprocess.run([sys.executable, "-m", "edge_runtime.cli", "retrain", "shelf", "--data",
                              str(tmp_path / "nowhere"), "--models", str(store)], capture_output=True, text=True,
                             timeout=60, cwd=tmp_path, env=env)
    assert missing.returncode == 1 and "no event store in" in missing.stderr
    assert len(missing.stderr.strip().splitlines()) == 1


def test_progress_lines_are_parsed_strictly():
    assert parse_progress(progress_line("features", 3, 40)) == ("features", 3, 40)
    assert parse_progress(progress_line("features", 50, 40)) == ("features", 40, 40)
    for line in ("progress", "progress {", 'progress {"stage": "s", "done": 1.5, "total": 2}',
                 'progress {"stage": "s", "done": true, "total": 2}', 'progress {"stage": "", "done": 1, "total": 2}',
                 'progress {"stage": "s", "done": 1, "total": 0}', 'progress {"stage": "s", "done": NaN, "total": 2}',
                 'progress [1, 2]', "features 1/2", 'progress {"stage": "' + "s" * 65 + '", "done": 1, "total": 2}'):
        assert parse_progress(line) is None, line


def test_retrain_settings_fail_loudly_on_typos():
    from edge_runtime.errors import ConfigError

    for bad in ({"timeout": 5}, {"timeout_s": float("nan")}, {"held_out": 1.5}, {"nice": 40}):
        with pytest.raises(ConfigError, match="models.retrain"):
            load_settings(env={}, overrides={"models": {"retrain": bad}})
