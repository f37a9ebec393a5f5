"""Reading a store from the command line: list events, export them (and samples).

    edge-runtime events list --data /var/lib/edge-runtime --since 2h
    edge-runtime events export --data ./data --out ./flight-7 --format dataset --samples

Formats:
    jsonl    OUT/events.jsonl, one event per line (the API's JSON plus "files"), media in OUT/media/
    csv      OUT/events.csv, the same columns flat, media in OUT/media/
    dataset  OUT/<tag>/<id>.jpg: the folder-per-tag layout `edge-export train` reads. Each
             event gives its best frame (kept without drawings when events.keep_frames is on,
             else the snapshot, boxes and all). With --samples, the kept samples go to the
             folder of their top tag (OUT/_unlabelled/ when they have none), for labelling.
With --samples, jsonl and csv also write OUT/samples.jsonl or OUT/samples.csv.

The store is opened read-only, so this is safe while the server records.
"""

from __future__ import annotations

import csv
import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigError, StoreError
from .store import EventRecord, EventStore, SampleRecord, iso

FORMATS = ("jsonl", "csv", "dataset")
PAGE = 500
UNLABELLED = "_unlabelled"
CSV_FIELDS = ("id", "rule", "camera", "tag", "start", "end", "peakProbability", "peakAt", "frames", "device",
              "snapshot_file", "thumbnail_file", "clip_file")


def all_events(store: EventStore, since: float | None = None, until: float | None = None) -> Iterator[EventRecord]:
    """Every event in the range, oldest first, a page at a time."""
    after = None
    while True:
        page = store.events(since=since, until=until, limit=PAGE, before=after, oldest_first=True)
        yield from page
        if len(page) < PAGE:
            return
        after = page[-1].id


def table(events: list[EventRecord]) -> str:
    lines = [f"{'start':24} {'seconds':>8} {'camera':12} {'rule':12} {'tag':16} {'peak':>6} {'frames':>6}  id"]
    for e in events:
        seconds = f"{e.end - e.start:8.1f}" if e.end is not None else "    open"
        lines.append(f"{iso(e.start):24} {seconds} {e.camera:12.12} {e.rule:12.12} {e.tag:16.16} "
                     f"{e.peak:6.1%} {e.frames:6d}  {e.id}")
    lines.append(f"{len(events)} event{'s' if len(events) != 1 else ''}")
    return "\n".join(lines)


def _safe(name: str) -> str:
    """A tag as a folder name: path separators and leading dots removed."""
    cleaned = "".join("_" if c in '/\\:*?"<>|' else c for c in name).strip().lstrip(".")
    return cleaned or UNLABELLED


def _copy(store: EventStore, name: str | None, dest: Path) -> str | None:
    if not name:
        return None
    try:
        source = store.media_path(name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
    except (OSError, StoreError):
        return None  # deleted by retention since it was listed
    return dest.name


def _event_files(store: EventStore, e: EventRecord, out: Path) -> dict[str, str | None]:
    media = out / "media"
    files = {"snapshot": _copy(store, e.snapshot, media / f"{e.id}.jpg"),
             "thumbnail": _copy(store, e.thumbnail, media / f"{e.id}-thumb.jpg"),
             "clip": _copy(store, e.clip, media / f"{e.id}.mp4")}
    return {k: f"media/{v}" if v else None for k, v in files.items()}


def _sample_json(store: EventStore, s: SampleRecord, out: Path) -> dict[str, Any]:
    image = _copy(store, s.image, out / "media" / f"sample-{s.id}.jpg")
    return {"id": s.id, "sampler": s.sampler, "camera": s.camera, "takenAt": iso(s.taken_at),
            "image": f"media/{image}" if image else None, "prediction": s.prediction}


def _top_tag(prediction: dict[str, Any]) -> str:
    predictions = prediction.get("predictions") or []
    best = max(predictions, key=lambda p: p.get("probability", 0), default=None)
    return _safe(str(best.get("tagName", ""))) if best else UNLABELLED


def export(store: EventStore, out: Path, fmt: str, since: float | None = None, until: float | None = None,
           samples: bool = False) -> dict[str, int]:
    """Write the events (and samples) in `fmt` under `out`; counts of what was written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    out.mkdir(parents=True, exist_ok=True)
    counts = {"events": 0, "samples": 0, "images": 0}
    kept = store.samples(since, until) if samples else []
    if fmt == "dataset":
        for e in all_events(store, since, until):
            counts["events"] += 1
            if _copy(store, e.frame or e.snapshot, out / _safe(e.tag) / f"{e.id}.jpg"):
                counts["images"] += 1
        for s in kept:
            counts["samples"] += 1
            if _copy(store, s.image, out / _top_tag(s.prediction) / f"sample-{s.id}.jpg"):
                counts["images"] += 1
        return counts
    if fmt == "jsonl":
        with open(out / "events.jsonl", "w") as f:
            for e in all_events(store, since, until):
                counts["events"] += 1
                f.write(json.dumps({**e.to_json(), "files": _event_files(store, e, out)}) + "\n")
        if samples:
            with open(out / "samples.jsonl", "w") as f:
                for s in kept:
                    counts["samples"] += 1
                    f.write(json.dumps(_sample_json(store, s, out)) + "\n")
        return counts
    with open(out / "events.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for e in all_events(store, since, until):
            counts["events"] += 1
            files = _event_files(store, e, out)
            writer.writerow({**e.to_json(), **{f"{k}_file": v or "" for k, v in files.items()}})
    if samples:
        with open(out / "samples.csv", "w", newline="") as f:
            writer = csv.DictWriter(f, ("id", "sampler", "camera", "takenAt", "image", "tag"))
            writer.writeheader()
            for s in kept:
                counts["samples"] += 1
                row = _sample_json(store, s, out)
                writer.writerow({k: row[k] for k in ("id", "sampler", "camera", "takenAt", "image")}
                                | {"tag": _top_tag(s.prediction)})
    return counts
