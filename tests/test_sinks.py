"""The sinks package: rotation and repair of the JSON-lines log, lifecycles, SSE message kinds."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import numpy as np
import pytest

from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.sinks import EventBroadcaster, JsonlLog, MultiSink, build_sinks
from edge_runtime.types import Frame, FrameResult, Prediction, PredictionResult


def result(seq: int, camera: str = "cam") -> FrameResult:
    prediction = PredictionResult((Prediction(0, "red", 0.9),), image_width=8, image_height=8)
    frame = Frame(camera, seq, time.time(), time.monotonic(), np.zeros((8, 8, 3), np.uint8))
    return FrameResult(frame, prediction, inference_ms=1.0, published_mono=time.monotonic())


def lines_of(paths):
    return [json.loads(line) for p in paths for line in p.read_text().splitlines()]


def test_jsonl_rotates_under_a_total_cap(tmp_path):
    path = tmp_path / "results.jsonl"
    line_len = len(json.dumps(result(1).to_json(), separators=(",", ":"))) + 1
    log = JsonlLog(path, max_bytes=line_len * 40, files=4)  # about 10 lines a file
    for seq in range(1, 201):
        log(result(seq))
    log.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["results.jsonl", "results.jsonl.1", "results.jsonl.2", "results.jsonl.3"]
    assert sum(f.stat().st_size for f in files) <= line_len * 40 + line_len * 4
    newest_first = [path, *(tmp_path / f"results.jsonl.{i}" for i in (1, 2, 3))]
    seqs = [r["seq"] for r in lines_of(reversed(newest_first))]
    assert seqs == sorted(seqs) and seqs[-1] == 200  # the newest kept, the oldest dropped, in order
    assert seqs[0] > 150


def test_a_partial_last_line_is_cut_off_when_the_log_opens_again(tmp_path):
    path = tmp_path / "results.jsonl"
    whole = json.dumps(result(1).to_json()) + "\n"
    path.write_text(whole + whole[: len(whole) // 2])  # a crash in the middle of the second line
    log = JsonlLog(path)
    assert log.repaired == len(whole) // 2
    log(result(2))
    log.close()
    assert [r["seq"] for r in lines_of([path])] == [1, 2]


def test_an_unwritable_log_path_is_one_line(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(ConfigError) as err:
        JsonlLog(blocker / "results.jsonl")
    assert "log.jsonl" in str(err.value) and "\n" not in str(err.value)


def test_build_sinks_adds_the_configured_log_and_fails_in_one_line(tmp_path):
    settings = load_settings(env={}, overrides={"log": {"jsonl": str(tmp_path / "r.jsonl"), "jsonl_max_mb": 1}})
    sinks = build_sinks(settings, iteration="it")
    assert list(sinks.all.sinks) == ["latest", "events", "frames", "jsonl"]
    sinks.all(result(7))
    sinks.all.close()
    assert [r["seq"] for r in lines_of([tmp_path / "r.jsonl"])] == [7]
    assert sinks.latest.get("cam") is not None

    (tmp_path / "file").write_text("x")
    bad = load_settings(env={}, overrides={"log": {"jsonl": str(tmp_path / "file" / "r.jsonl")}})
    with pytest.raises(ConfigError):
        build_sinks(bad)


def test_multisink_closes_every_sink_even_when_one_fails():
    closed = []

    class Closing:
        def __init__(self, name, fail=False):
            self.name, self.fail = name, fail

        def __call__(self, result):
            pass

        def close(self):
            closed.append(self.name)
            if self.fail:
                raise OSError("gone")

    MultiSink({"a": Closing("a"), "b": Closing("b", fail=True), "c": Closing("c"), "plain": lambda r: None}).close()
    assert closed == ["c", "b", "a"]


def test_broadcaster_sends_predictions_and_other_kinds_to_each_client():
    async def scenario():
        hub = EventBroadcaster("proj", "iter")
        sub = hub.subscribe()
        worker = threading.Thread(target=lambda: (hub(result(3)), hub.publish("event-start", "cam", '{"id":"x"}')))
        worker.start()
        first = await asyncio.wait_for(sub.queue.get(), 5)
        second = await asyncio.wait_for(sub.queue.get(), 5)
        worker.join()
        hub.close()
        end = await asyncio.wait_for(sub.queue.get(), 5)
        return first, second, end

    first, second, end = asyncio.run(scenario())
    assert first[0] == "prediction" and first[1] == "cam"
    body = json.loads(first[2])
    assert body["seq"] == 3 and body["project"] == "proj" and body["iteration"] == "iter"
    assert second == ("event-start", "cam", '{"id":"x"}')
    assert end is None
