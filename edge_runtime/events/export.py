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

A model's dataset (`--format dataset --model NAME [--held-out 0.2]`, `export_dataset`): its
labels in OUT/train/ and OUT/held_out/ (the newest share, kept out of training), each in the
layout `edge-export train` reads for the labels' kind: OUT/part/<tag>/<id>.jpg
(classification), OUT/part/labels.json (multilabel), OUT/part/annotations.json, COCO with
boxes in pixels (detection), images beside them. The model's base dataset
(models.path/NAME/dataset/) is merged into OUT/train/.

The store is opened read-only, so this is safe while the server records. A damaged store is
read as far as it can be (store.readable_events); what was lost is counted in a Damage for
the caller to report. Every name written comes from the store (ids, tags), so each is made a
plain file name and the path checked to stay inside OUT. A write that fails (a full disk)
stops the export with ExportError: a copy that silently lacks its pictures is worse than none.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import math
import re
import shutil
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import cv2

from ..errors import ConfigError, ExportError, StoreError
from .base_dataset import read_base
from .labels import Box, Label
from .salvage import Damage
from .store import EventRecord, EventStore, SampleRecord, iso

FORMATS = ("jsonl", "csv", "dataset")
UNLABELLED = "_unlabelled"
CSV_FIELDS = ("id", "rule", "camera", "tag", "start", "end", "peakProbability", "peakAt", "frames", "device",
              "snapshot_file", "thumbnail_file", "clip_file")
PLAIN_STEM = re.compile(r"^[0-9A-Za-z][0-9A-Za-z_-]{0,63}$")  # what ids are: used as they are
MAX_NAME_BYTES = 200  # file systems take 255 bytes a name: room for suffixes
COPY_CHUNK = 1 << 20


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


# ---- a model's dataset: its labels (and base dataset), split into train and held-out ----------------

@dataclass(frozen=True)
class DatasetCounts:
    """What `export_dataset` wrote."""

    kind: str  # "classification", "multilabel" or "detection"
    train: int  # images in OUT/train (labels and the base dataset)
    held_out: int  # images in OUT/held_out (labels only)
    base: int  # of `train`, the images of the model's base dataset
    tags: tuple[str, ...]  # every tag of either part, sorted
    missing: int = 0  # labels whose image the store no longer has or cannot read


@dataclass(frozen=True)
class _Entry:
    stem: str
    tags: tuple[str, ...]
    boxes: tuple[Box, ...]
    copy: Callable[[Path, str], str | None]  # (OUT/part, file name) -> written name or None


def kind_of(labels: list[Label]) -> str | None:
    """One layout for a model's labels: detection, or multilabel when any holds other than one
    tag, else classification; ExportError when boxes and tags are mixed (None: no labels)."""
    kinds = {label.kind for label in labels}
    if "detection" in kinds and len(kinds) > 1:
        raise ExportError(f"the labels mix boxes ({len([x for x in labels if x.kind == 'detection'])}) with tags: "
                          "one model is a detector or a classifier")
    if not kinds:
        return None
    return "detection" if "detection" in kinds else "multilabel" if "multilabel" in kinds else "classification"


def split_held_out(labels: list[Label], share: float) -> tuple[list[Label], list[Label]]:
    """(train, held_out): the newest `share` of the labels by labelled_at held out, and at
    least one of each tag where that tag has two or more labels (one stays for training)."""
    if not 0 <= share < 1 or not math.isfinite(share):
        raise ConfigError(f"--held-out {share}: a share from 0 up to, not including, 1")
    newest = sorted(labels, key=lambda x: (x.labelled_at, x.sample_id), reverse=True)
    count = min(round(len(newest) * share), len(newest) - 1) if len(newest) > 1 else 0
    count = max(count, 1) if share > 0 and len(newest) > 1 else count
    held, train = newest[:count], newest[count:]
    if share > 0:
        for tag in sorted(set().union(*(x.all_tags for x in newest))):
            having = [x for x in train if tag in x.all_tags]
            if len(having) >= 2 and not any(tag in x.all_tags for x in held):
                held.append(having[0])  # the newest of that tag
                train.remove(having[0])
    return sorted(train, key=lambda x: x.labelled_at), sorted(held, key=lambda x: x.labelled_at)


def _from_store(store: EventStore, sample: SampleRecord | None) -> Callable[[Path, str], str | None]:
    return lambda part, name: _copy(store, sample.image, part, name) if sample is not None else None


def _from_file(source: Path) -> Callable[[Path, str], str | None]:
    def copy(part: Path, name: str) -> str | None:
        dest = _within(part, name)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source, dest)
        return dest.name
    return copy


def _write_part(part: Path, kind: str, entries: list[_Entry]) -> tuple[int, int]:
    """OUT/part in `kind`'s layout; (images written, entries whose image was missing)."""
    part.mkdir(parents=True, exist_ok=True)
    written = missing = 0
    listed: list[dict[str, Any]] = []
    images: list[dict[str, Any]] = []
    annotations: list[dict[str, Any]] = []
    for entry in entries:
        if kind == "classification":
            if entry.copy(part, f"{_folder(entry.tags[0])}/{entry.stem}.jpg") is None:
                missing += 1
                continue
        else:
            name = entry.copy(part, f"{entry.stem}.jpg")
            if name is None:
                missing += 1
                continue
            if kind == "multilabel":
                listed.append({"file": name, "tags": list(entry.tags)})
            else:
                image = cv2.imread(str(part / name), cv2.IMREAD_UNCHANGED)
                if image is None:
                    (part / name).unlink(missing_ok=True)
                    missing += 1
                    continue
                height, width = image.shape[:2]
                images.append({"id": len(images) + 1, "file_name": name, "width": width, "height": height})
                annotations += [{"image_id": len(images), "tag": b.tag,
                                 "bbox": [round(b.left * width, 2), round(b.top * height, 2),
                                          round(b.width * width, 2), round(b.height * height, 2)]}
                                for b in entry.boxes]
        written += 1
    if kind == "multilabel":
        _within(part, "labels.json").write_text(json.dumps({"images": listed}, indent=1))
    elif kind == "detection":
        categories = {t: i + 1 for i, t in enumerate(sorted({a["tag"] for a in annotations}))}
        coco = {"images": images, "categories": [{"id": i, "name": t} for t, i in categories.items()],
                "annotations": [{"id": n + 1, "image_id": a["image_id"], "category_id": categories[a["tag"]],
                                 "bbox": a["bbox"], "area": a["bbox"][2] * a["bbox"][3], "iscrowd": 0}
                                for n, a in enumerate(annotations)]}
        _within(part, "annotations.json").write_text(json.dumps(coco, indent=1))
    return written, missing


def export_dataset(store: EventStore, out: Path, model: str, held_out: float = 0.2,
                   base: Path | None = None) -> DatasetCounts:
    """`model`'s labels as a dataset `edge-export train` reads: OUT/train/ and OUT/held_out/,
    each in the labels' layout (a folder per tag, labels.json, or COCO annotations.json with
    boxes in pixels), images beside them. The newest `held_out` share of the labels is kept
    out of training (split_held_out); the base dataset in `base` (models.path/NAME/dataset/,
    same layouts) is merged into OUT/train. ExportError when nothing can be written, the
    layouts differ, or the copy fails (a full disk)."""
    if out.resolve().is_relative_to(store.media_dir.resolve()):
        raise ExportError(f"--out {out} is inside the store's media folder: name a folder outside it")
    labels = store.labels(model)
    given = read_base(base) if base is not None else None
    kind = kind_of(labels) or (given.kind if given is not None else None)
    if kind is None:
        raise ExportError(f"no labels for model {model!r} in {store.data_dir}, and no base dataset")
    if given is not None and given.items and labels and {given.kind, kind} != {kind} \
            and {given.kind, kind} != {"classification", "multilabel"}:
        raise ExportError(f"base dataset {base} is a {given.kind} dataset; the labels of {model!r} are {kind}")
    if given is not None and given.kind == "multilabel":
        kind = "multilabel" if kind == "classification" else kind
    train, held = split_held_out(labels, held_out)
    samples = {s.id: s for s in store.samples()}

    def entries(chosen: list[Label]) -> list[_Entry]:
        return [_Entry(_stem(x.sample_id), x.tags, x.boxes, _from_store(store, samples.get(x.sample_id)))
                for x in chosen]

    base_entries = [_Entry(f"base-{_stem(i.path.stem)}-{n}", i.tags, i.boxes, _from_file(i.path))
                    for n, i in enumerate(given.items if given is not None else [])]
    if kind == "classification":
        base_entries = [e for e in base_entries if len(e.tags) == 1]
    try:
        train_n, train_missing = _write_part(out / "train", kind, base_entries + entries(train))
        held_n, held_missing = _write_part(out / "held_out", kind, entries(held))
    except OSError as exc:
        where = f"{exc.filename}: " if exc.filename else ""
        raise ExportError(f"dataset export of {model!r} to {out} stopped: {where}{exc.strerror or exc}") from None
    tags = sorted(set().union(*(set(e.tags) | {b.tag for b in e.boxes} for e in base_entries + entries(labels))))
    return DatasetCounts(kind, train_n, held_n, len(base_entries), tuple(tags), train_missing + held_missing)


def held_out_frames(store: EventStore, model: str, share: float = 0.2) -> list[tuple[str, Path]]:
    """(tag, image file) of `model`'s held-out classification labels, as `export_dataset` holds
    them out: what the publish gate measures a new version on beside models.path/NAME/eval/."""
    labels = [x for x in store.labels(model) if x.kind == "classification"]
    _, held = split_held_out(labels, share)
    frames = []
    for label in held:
        sample = store.sample(label.sample_id)
        if sample is not None:
            with contextlib.suppress(StoreError):
                frames.append((label.tags[0], store.media_path(sample.image)))
    return frames
