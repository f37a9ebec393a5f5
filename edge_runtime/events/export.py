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

The store is opened read-only, so this is safe while the server records. A damaged store is
read as far as it can be (store.readable_events); what was lost is counted in a Damage for
the caller to report. Every name written comes from the store (ids, tags), so each is made a
plain file name and the path checked to stay inside OUT. A write that fails (a full disk)
stops the export with ExportError: a copy that silently lacks its pictures is worse than none.
"""

from __future__ import annotations

import csv
import hashlib
import json
import re
import unicodedata
from pathlib import Path
from typing import IO, Any

from ..errors import ConfigError, EdgeRuntimeError, StoreError
from .salvage import Damage
from .store import EventRecord, EventStore, SampleRecord, iso

FORMATS = ("jsonl", "csv", "dataset")
UNLABELLED = "_unlabelled"
CSV_FIELDS = ("id", "rule", "camera", "tag", "start", "end", "peakProbability", "peakAt", "frames", "device",
              "snapshot_file", "thumbnail_file", "clip_file")
PLAIN_STEM = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")  # what ids are: used as they are
MAX_NAME_BYTES = 200  # file systems take 255 bytes a name: room for suffixes
COPY_CHUNK = 1 << 20


class ExportError(EdgeRuntimeError):
    """The export could not be written (a full disk, a name leading outside OUT)."""


def all_events(store: EventStore, since: float | None = None, until: float | None = None,
               damage: Damage | None = None) -> list[EventRecord]:
    """Every event in the range that can be read, oldest first; what cannot is counted in `damage`."""
    return store.readable_events(damage if damage is not None else Damage(), since, until)


def _shown(text: str) -> str:
    """Text for a terminal: control characters (a NUL from a damaged row) as U+FFFD."""
    return "".join(c if c.isprintable() else "\ufffd" for c in text)


def table(events: list[EventRecord]) -> str:
    lines = [f"{'start':24} {'seconds':>8} {'camera':12} {'rule':12} {'tag':16} {'peak':>6} {'frames':>6}  id"]
    for e in events:
        seconds = f"{e.end - e.start:8.1f}" if e.end is not None else "    open"
        lines.append(f"{iso(e.start):24} {seconds} {_shown(e.camera):12.12} {_shown(e.rule):12.12} "
                     f"{_shown(e.tag):16.16} {e.peak:6.1%} {e.frames:6d}  {_shown(e.id)}")
    lines.append(f"{len(events)} event{'s' if len(events) != 1 else ''}")
    return "\n".join(lines)


def _fit(name: str) -> str:
    """`name` cut to MAX_NAME_BYTES of UTF-8 (whole characters)."""
    return name.encode()[:MAX_NAME_BYTES].decode(errors="ignore")


def _folder(tag: str) -> str:
    """A tag as a folder name: separators and control characters replaced, leading dots removed."""
    cleaned = "".join("_" if c in '/\\:*?"<>|' or not c.isprintable() else c
                      for c in unicodedata.normalize("NFC", tag)).strip().lstrip(".")
    return _fit(cleaned).strip() or UNLABELLED


def _stem(item_id: str) -> str:
    """An id as a file name: a plain id as it is; anything else cleaned, with a hash of the
    original so that two odd ids never share a file."""
    if PLAIN_STEM.match(item_id):
        return item_id
    cleaned = re.sub(r"[^0-9A-Za-z_-]+", "_", item_id)[:40].strip("_") or "id"
    return f"{cleaned}-{hashlib.sha256(item_id.encode(errors='replace')).hexdigest()[:12]}"


def _within(out: Path, *parts: str) -> Path:
    """OUT/parts, refused if it leads outside OUT (a name that climbs, a link already there)."""
    path = out.joinpath(*parts)
    if not path.resolve().is_relative_to(out.resolve()):
        raise ExportError(f"refusing to write {path}: it leads outside {out}")
    return path


def _read(f: IO[bytes]) -> bytes | None:
    try:
        return f.read(COPY_CHUNK)
    except OSError:
        return None


def _copy(store: EventStore, name: str | None, out: Path, *parts: str) -> str | None:
    """Copy a stored media file to OUT/parts; its name, or None when the store no longer has
    it (retention deleted it since it was listed) or it cannot be read. OSError when the copy
    cannot be written, with the half-written file removed."""
    if not name:
        return None
    dest = _within(out, *parts)
    try:
        source = open(store.media_path(name), "rb")  # noqa: SIM115 (closed below, after the write)
    except (OSError, StoreError):
        return None
    with source:
        dest.parent.mkdir(parents=True, exist_ok=True)
        try:
            with open(dest, "wb") as f:
                while chunk := _read(source):
                    f.write(chunk)
                complete = chunk is not None
        except OSError as exc:
            dest.unlink(missing_ok=True)
            raise OSError(exc.errno, exc.strerror, str(dest)) from None
    if not complete:  # a damaged media file: leave it out rather than ship half of it
        dest.unlink(missing_ok=True)
        return None
    return dest.name


def _event_files(store: EventStore, e: EventRecord, out: Path) -> dict[str, str | None]:
    stem = _stem(e.id)
    files = {"snapshot": _copy(store, e.snapshot, out, "media", f"{stem}.jpg"),
             "thumbnail": _copy(store, e.thumbnail, out, "media", f"{stem}-thumb.jpg"),
             "clip": _copy(store, e.clip, out, "media", f"{stem}.mp4")}
    return {k: f"media/{v}" if v else None for k, v in files.items()}


def _sample_json(store: EventStore, s: SampleRecord, out: Path) -> dict[str, Any]:
    image = _copy(store, s.image, out, "media", f"sample-{_stem(s.id)}.jpg")
    return {"id": s.id, "sampler": s.sampler, "camera": s.camera, "takenAt": iso(s.taken_at),
            "image": f"media/{image}" if image else None, "prediction": s.prediction}


def _top_tag(prediction: dict[str, Any]) -> str:
    """The folder of a sample's most probable tag (UNLABELLED when it has none that reads)."""
    predictions = prediction.get("predictions")
    scored = [(p["probability"], p["tagName"]) for p in predictions if isinstance(p, dict)
              and isinstance(p.get("probability"), (int, float)) and p.get("tagName") is not None] \
        if isinstance(predictions, list) else []
    return _folder(str(max(scored, key=lambda pt: pt[0])[1])) if scored else UNLABELLED


def export(store: EventStore, out: Path, fmt: str, since: float | None = None, until: float | None = None,
           samples: bool = False, damage: Damage | None = None) -> dict[str, int]:
    """Write the events (and samples) in `fmt` under `out`; counts of what was written. What
    the store could not give is counted in `damage`; ExportError when the copy cannot be
    written."""
    if fmt not in FORMATS:
        raise ConfigError(f"--format: {fmt!r} is not one of {', '.join(FORMATS)}")
    if out.resolve().is_relative_to(store.media_dir.resolve()):  # a copy could land on its own source
        raise ExportError(f"--out {out} is inside the store's media folder: name a folder outside it")
    damage = damage if damage is not None else Damage()
    counts = {"events": 0, "samples": 0, "images": 0}
    try:
        out.mkdir(parents=True, exist_ok=True)
        events = all_events(store, since, until, damage)
        kept = store.readable_samples(damage, since, until) if samples else []
        _write(store, out, fmt, events, kept if samples else None, counts)
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ExportError(f"export to {out} stopped after {counts['events']} events: {where}"
                          f"{exc.strerror or exc}") from None
    return counts


def _write(store: EventStore, out: Path, fmt: str, events: list[EventRecord], kept: list[SampleRecord] | None,
           counts: dict[str, int]) -> None:
    if fmt == "dataset":
        for e in events:
            if _copy(store, e.frame or e.snapshot, out, _folder(e.tag), f"{_stem(e.id)}.jpg"):
                counts["images"] += 1
            counts["events"] += 1
        for s in kept or []:
            if _copy(store, s.image, out, _top_tag(s.prediction), f"sample-{_stem(s.id)}.jpg"):
                counts["images"] += 1
            counts["samples"] += 1
        return
    if fmt == "jsonl":
        with open(_within(out, "events.jsonl"), "w") as f:
            for e in events:
                f.write(json.dumps({**e.to_json(), "files": _event_files(store, e, out)}) + "\n")
                counts["events"] += 1
        if kept is not None:
            with open(_within(out, "samples.jsonl"), "w") as f:
                for s in kept:
                    f.write(json.dumps(_sample_json(store, s, out)) + "\n")
                    counts["samples"] += 1
        return
    with open(_within(out, "events.csv"), "w", newline="") as f:
        writer = csv.DictWriter(f, CSV_FIELDS, extrasaction="ignore")
        writer.writeheader()
        for e in events:
            files = _event_files(store, e, out)
            writer.writerow({**e.to_json(), **{f"{k}_file": v or "" for k, v in files.items()}})
            counts["events"] += 1
    if kept is not None:
        with open(_within(out, "samples.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, ("id", "sampler", "camera", "takenAt", "image", "tag"))
            writer.writeheader()
            for s in kept:
                row = _sample_json(store, s, out)
                writer.writerow({k: row[k] for k in ("id", "sampler", "camera", "takenAt", "image")}
                                | {"tag": _top_tag(s.prediction)})
                counts["samples"] += 1
