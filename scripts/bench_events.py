"""What recording events costs; prints tables for docs/benchmarks.md.

    python scripts/bench_events.py [--rounds 3] [--frames 300] [--events 200]

1. The camera loop's throughput (a 1280x720 video file read as fast as it decodes, the
   built-in demo model, top 5) with the server's sink chain as `serve` builds it: without
   events, then with a rule (espresso, which the video shows one second in three), then
   with one webhook forwarder too (HMAC-signed, to a receiver on loopback), then with
   clips too. Rounds are interleaved; medians are shown. Then the recorder's CPU per
   frame, measured alone, which a busy machine blurs less.
2. The store's sustained write rate: events started and ended with their snapshot and
   thumbnail (fsynced, then the record), and outbox items alone (one transaction each).
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import cv2
from bench_forwarders import webhook_receiver
from bench_pipeline import DEMO, write_clip

from edge_runtime import forwarders
from edge_runtime.capture.camera import Camera
from edge_runtime.capture.sources import open_source
from edge_runtime.config import Settings, load_settings
from edge_runtime.events.media import evidence
from edge_runtime.events.recorder import Recorder
from edge_runtime.events.setup import open_store
from edge_runtime.events.store import EventRecord, EventStore, new_id
from edge_runtime.model.bench import machine
from edge_runtime.model.postprocess import PostprocessOptions
from edge_runtime.model.predictor import Predictor
from edge_runtime.pipeline import Pipeline
from edge_runtime.serve import forwarding, store_wanted
from edge_runtime.sinks import build_sinks
from edge_runtime.types import Frame, FrameResult

# the coffee sample is on screen one second in three: an event every few seconds, snapshots 1280x720
RULE = {"name": "bench", "tags": ["espresso"], "min_probability": 0.5, "min_frames": 3, "end_after_s": 0.3}


def settings_for(kind: str, data: Path, hook_port: int, secret: Path) -> Settings:
    if kind == "baseline":
        return load_settings(env={})
    events: dict[str, Any] = {"device": "bench", "rules": [RULE], "store": {"path": str(data), "min_free_mb": 0}}
    if kind == "events + forwarder + clips":
        events["clip"] = {"enabled": True, "pre_s": 1, "post_s": 1}
    hook = {"type": "webhook", "name": "bench", "url": f"http://127.0.0.1:{hook_port}/", "secret_file": str(secret)}
    return load_settings(env={}, overrides={"events": events, "forwarders": [hook] if "forwarder" in kind else []})


def loop_run(predictor: Predictor, clip: Path, settings: Settings) -> tuple[float, int]:
    """Frames per second through the pipeline and the sinks; and the events recorded."""
    store = open_store(settings.events.store) if store_wanted(settings) else None
    sinks = build_sinks(settings, predictor.iteration, store=store)
    running = forwarders.start_all(forwarding(settings), store) if store else None
    camera = Camera("bench", lambda: open_source(str(clip)))
    count = [0]

    def counted(result: FrameResult) -> None:
        sinks.all(result)
        count[0] += 1

    pipeline = Pipeline(predictor, [camera], counted)
    start = time.perf_counter()
    pipeline.start()
    while not camera.finished or pipeline.running:
        time.sleep(0.01)
    elapsed = time.perf_counter() - start
    pipeline.stop()
    sinks.all.close()
    recorded = store.stats.ended if store else 0
    if running:
        running.stop(5)
    if store:
        store.close()
    return count[0] / elapsed, recorded


def recorder_cpu(predictor: Predictor, clip: Path, folder: Path, clips: bool) -> tuple[float, float, int]:
    """CPU ms per frame of decode + predict, and of the recorder alone (run synchronously,
    so the number is not blurred by the other threads); and the events it recorded."""
    cap = cv2.VideoCapture(str(clip))
    results, t0, now = [], time.process_time(), time.time()
    while True:
        ok, image = cap.read()
        if not ok:
            break
        frame = Frame("bench", len(results), now + len(results) / 30, time.monotonic(), image)
        results.append(FrameResult(frame, predictor.predict(image), 1.0, time.monotonic()))
    loop_ms = 1000 * (time.process_time() - t0) / len(results)
    events: dict[str, Any] = {"rules": [RULE], "store": {"path": str(folder), "min_free_mb": 0}}
    if clips:
        events["clip"] = {"enabled": True, "pre_s": 1, "post_s": 1}
    settings = load_settings(env={}, overrides={"events": events})
    store = open_store(settings.events.store)
    recorder = Recorder(settings.events, store)
    t0 = time.process_time()
    for result in results:
        recorder.process(result)
    recorder.close()
    recorder_ms = 1000 * (time.process_time() - t0) / len(results)
    recorded = store.stats.ended
    store.close()
    return loop_ms, recorder_ms, recorded


def store_rate(folder: Path, frame: FrameResult, events: int) -> tuple[float, float, int]:
    """Events (start + end, with media) per second, outbox items per second, media bytes per event."""
    store = EventStore.open(folder)
    media = evidence(frame)
    start = time.perf_counter()
    for _ in range(events):
        now = time.time()
        record = EventRecord(id=new_id(now), rule="bench", camera="bench", tag="cola", start=now, end=None,
                             last_at=now, peak=0.9, peak_at=now, frames=3)
        opened = store.start_event(record, media)
        store.end_event(replace(opened, end=now + 1, last_at=now + 1), media)
    event_rate = events / (time.perf_counter() - start)
    start = time.perf_counter()
    for i in range(events * 5):
        store.add_outbox("result", new_id(), {"camera": "bench", "seq": i, "predictions": []})
    outbox_rate = events * 5 / (time.perf_counter() - start)
    store.close()
    return event_rate, outbox_rate, sum(len(m) for m in media.values())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--events", type=int, default=200)
    args = parser.parse_args()
    predictor = Predictor.load(DEMO, options=PostprocessOptions(top_k=5))
    kinds = ["baseline", "events", "events + forwarder", "events + forwarder + clips"]
    fps: dict[str, list[float]] = {k: [] for k in kinds}
    recorded: dict[str, list[int]] = {k: [] for k in kinds}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        clip = write_clip(root / "clip.mp4", args.frames)
        secret = root / "secret"
        secret.write_text("bench")
        receiver, port = webhook_receiver()
        try:
            for r in range(args.rounds):
                for kind in kinds:
                    rate, n = loop_run(predictor, clip, settings_for(kind, root / f"{kind}-{r}", port, secret))
                    fps[kind].append(rate)
                    recorded[kind].append(n)
        finally:
            receiver.terminate()
            receiver.wait(10)
        cpu = {clips: recorder_cpu(predictor, clip, root / f"cpu-{clips}", clips) for clips in (False, True)}
        image = cv2.resize(cv2.imread(str(DEMO / "samples" / "coffee.jpg")), (1280, 720))
        frame = FrameResult(Frame("bench", 1, time.time(), time.monotonic(), image), predictor.predict(image), 1.0,
                            time.monotonic())
        event_rate, outbox_rate, media_bytes = store_rate(root / "rate", frame, args.events)

    base = statistics.median(fps["baseline"])
    print(f"Machine: {machine()}\n")
    print(f"#### Camera loop, 1280x720 video ({args.frames} frames, mp4v), demo model top 5, "
          f"medians of {args.rounds} interleaved rounds\n")
    print("| sinks | fps | vs baseline | events recorded per run |\n|---|---:|---:|---:|")
    for kind in kinds:
        med = statistics.median(fps[kind])
        print(f"| {kind} | {med:.1f} | {100 * (med / base - 1):+.1f}% | {statistics.median(recorded[kind]):.0f} |")
    print("\n#### CPU per frame, measured alone (same video)\n")
    print("| work | CPU ms / frame | vs decode + predict | events |\n|---|---:|---:|---:|")
    loop_ms = cpu[False][0]
    print(f"| decode + predict (top 5) | {loop_ms:.2f} | | |")
    for clips, (_, ms, n) in cpu.items():
        name = "recorder, with clips (mp4v)" if clips else "recorder (rules, snapshots, store)"
        print(f"| {name} | {ms:.2f} | {100 * ms / loop_ms:.1f}% | {n} |")
    print("\n#### Event store, synchronous=FULL, one transaction per write\n")
    print("| write | per second | ms each |\n|---|---:|---:|")
    print(f"| event start + end, with {media_bytes / 1024:.0f} KB of snapshot and thumbnail (written twice) "
          f"| {event_rate:.1f} | {1000 / event_rate:.1f} |")
    print(f"| outbox item alone | {outbox_rate:.0f} | {1000 / outbox_rate:.2f} |")


if __name__ == "__main__":
    main()
