"""Labels: what a person said a kept frame shows, for one published model, beside the samples.

    label = store.save_label(sample_id, "shelf", "classification", tags=["cola"], revision=0)
    store.save_label(sample_id, "shelf", "classification", tags=["fanta"], revision=label.revision)
    store.labels("shelf")            # every label of the model, oldest first
    store.delete_label(sample_id, "shelf", revision=2)

A label belongs to a sample and a model name: classification holds one tag, multilabel any
number, detection boxes (each a tag and left/top/width/height normalised to the image, finite
and inside it). A tag the model does not know is allowed: the next model learns it.

Each save names the revision it was made over (0 for a frame not labelled yet) and gets the
next one; a save over a stale revision raises LabelConflictError with the current label, so
two people labelling one frame never silently overwrite each other, while frames of their
own never conflict. Saves commit with the store's synchronous=FULL: a saved label survives
kill -9. A labelled sample is exempt from retention (retention_queries.py).

An event's clean frame (events.keep_frames) is labelled through a sample made from it, under
the event's own id (`adopt_event_frame`): a copy, so that retention may take the event's
media and the label keeps its picture.
"""

from __future__ import annotations

import json
import math
import re
import sqlite3
import time
from dataclasses import dataclass
from typing import Any

from ..errors import LabelConflictError, LabelError, StoreError
from . import salvage
from .records import SAMPLE_COLUMNS, SampleRecord, log, samples_of
from .retention_queries import RetentionQueries
from .sample_rows import SampleRows

KINDS = ("classification", "multilabel", "detection")
TAG = re.compile(r'^[^\x00-\x1f\x7f/\\:*?"<>|._][^\x00-\x1f\x7f/\\:*?"<>|]{0,63}$')  # a folder name too
MAX_TAGS = 64
MAX_BOXES = 200
EDGE = 1e-6  # a box may touch the image's edge, allowing for rounding in the browser
LABEL_COLUMNS = "sample_id, model, kind, tags, boxes, labelled_at, revision"
SAMPLER_EVENT = "event"  # the sampler name of a sample made from an event's clean frame


@dataclass(frozen=True)
class Box:
    tag: str
    left: float  # normalised to the image, as Custom Vision's regions are
    top: float
    width: float
    height: float

    def to_json(self) -> dict[str, Any]:
        return {"tag": self.tag, "left": self.left, "top": self.top, "width": self.width, "height": self.height}


@dataclass(frozen=True)
class Label:
    sample_id: str
    model: str
    kind: str  # one of KINDS
    tags: tuple[str, ...] = ()
    boxes: tuple[Box, ...] = ()
    labelled_at: float = 0.0
    revision: int = 0

    @property
    def all_tags(self) -> set[str]:
        return set(self.tags) | {b.tag for b in self.boxes}

    def to_json(self) -> dict[str, Any]:
        return {"sampleId": self.sample_id, "model": self.model, "kind": self.kind, "tags": list(self.tags),
                "boxes": [b.to_json() for b in self.boxes], "labelledAt": self.labelled_at,
                "revision": self.revision}


def check_tag(tag: str) -> str:
    """A tag as it may be stored (it becomes a folder name in a dataset), or LabelError."""
    if not isinstance(tag, str) or not TAG.match(tag) or tag != tag.strip():
        raise LabelError(f"tag {str(tag)[:64]!r}: use 1 to 64 characters, no / \\ : * ? \" < > | or control "
                         "characters, not starting with '.' or '_', no blanks around it")
    return tag


def check_box(box: Box) -> Box:
    check_tag(box.tag)
    values = (box.left, box.top, box.width, box.height)
    if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
        raise LabelError(f"box of {box.tag!r}: left, top, width and height must be finite numbers")
    if box.left < 0 or box.top < 0 or box.width <= 0 or box.height <= 0 \
            or box.left + box.width > 1 + EDGE or box.top + box.height > 1 + EDGE:
        raise LabelError(f"box of {box.tag!r}: must lie inside the image (0..1) with a width and height above 0")
    return box


def check_label(kind: str, tags: list[str] | tuple[str, ...], boxes: list[Box] | tuple[Box, ...]) -> None:
    if kind not in KINDS:
        raise LabelError(f"kind {kind!r}: one of {', '.join(KINDS)}")
    if len(tags) > MAX_TAGS or len(boxes) > MAX_BOXES:
        raise LabelError(f"at most {MAX_TAGS} tags and {MAX_BOXES} boxes a frame")
    for tag in tags:
        check_tag(tag)
    if len(set(tags)) != len(tags):
        raise LabelError("a tag is named twice")
    for box in boxes:
        check_box(box)
    if kind == "classification" and len(tags) != 1:
        raise LabelError("a classification label has exactly one tag")
    if kind != "detection" and boxes:
        raise LabelError(f"a {kind} label has tags, not boxes")
    if kind == "detection" and tags:
        raise LabelError("a detection label has boxes, each with its tag, not tags of the frame")


def row_to_label(row: tuple[Any, ...]) -> Label:
    sample_id, model, kind, tags, boxes, labelled_at, revision = row
    parsed_boxes = json.loads(boxes)
    return Label(salvage.key(sample_id), salvage.key(model), salvage.text(kind),
                 tuple(str(t) for t in json.loads(tags)),
                 tuple(Box(str(b["tag"]), float(b["left"]), float(b["top"]), float(b["width"]), float(b["height"]))
                       for b in parsed_boxes),
                 salvage.instant(labelled_at), salvage.count(revision))


def labels_of(rows: list[tuple[Any, ...]]) -> list[Label]:
    labels = []
    for row in rows:
        try:
            labels.append(row_to_label(row))
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("event store: a labels row is left out: %s", exc)
    return labels


@dataclass(frozen=True)
class LabelItem:
    """A frame that may be labelled: a sample, or an event's clean frame not yet made one."""

    kind: str  # "sample" or "event"
    sample: SampleRecord  # for an event: its id, camera, start, frame and a prediction from its box
    label: Label | None = None


def _event_prediction(tag: str, peak: float, box: str | None) -> dict[str, Any]:
    """What an event's clean frame starts from: the event's tag, peak and box."""
    return {"predictions": [{"tagName": tag, "probability": peak, "boundingBox": salvage.box(box)}]}


def _missing(exc: sqlite3.OperationalError) -> bool:
    return str(exc).startswith("no such table")


class LabelRows(RetentionQueries, SampleRows):
    def sample(self, sample_id: str) -> SampleRecord | None:
        found = samples_of(self._read_all(f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE id = ?", (sample_id,)))
        return found[0] if found else None

    def label(self, sample_id: str, model: str) -> Label | None:
        found = self._labels_where("sample_id = ? AND model = ?", (sample_id, model))
        return found[0] if found else None

    def labels(self, model: str) -> list[Label]:
        """Every label of `model`, oldest first (by labelled_at)."""
        return self._labels_where("model = ?", (model,))

    def label_tags(self, model: str) -> list[str]:
        """The tags `model`'s labels use, sorted (new tags among them)."""
        return sorted(set().union(*(label.all_tags for label in self.labels(model))))

    def _labels_where(self, where: str, args: tuple[Any, ...]) -> list[Label]:
        try:
            rows = self._read_all(f"SELECT {LABEL_COLUMNS} FROM labels WHERE {where} "
                                  "ORDER BY labelled_at, sample_id", args)
        except sqlite3.OperationalError as exc:
            if _missing(exc):  # a store older than labels, read-only or kept back by a full disk
                return []
            raise
        return labels_of(rows)

    def save_label(self, sample_id: str, model: str, kind: str, tags: list[str] | tuple[str, ...] = (),
                   boxes: list[Box] | tuple[Box, ...] = (), revision: int = 0, now: float | None = None) -> Label:
        """Save over `revision` (0: the frame has no label yet for `model`); the saved label,
        with the next revision. LabelConflictError (holding the current label) when someone
        saved or deleted since; LabelError for a label that is not valid or a sample not kept."""
        check_label(kind, tags, boxes)
        label = Label(sample_id, model, kind, tuple(tags), tuple(boxes), time.time() if now is None else now,
                      revision + 1)
        with self._transaction("saving a label") as db:
            if db.execute("SELECT 1 FROM samples WHERE id = ?", (sample_id,)).fetchone() is None:
                raise LabelError(f"no sample {sample_id!r} is kept")
            row = db.execute(f"SELECT {LABEL_COLUMNS} FROM labels WHERE sample_id = ? AND model = ?",
                             (sample_id, model)).fetchone()
            current = row_to_label(row) if row else None
            if (current.revision if current else 0) != revision:
                raise LabelConflictError(
                    f"the label of {sample_id} for {model} is at revision {current.revision if current else 0}, "
                    f"not {revision}: someone saved it meanwhile", current)
            db.execute(f"INSERT OR REPLACE INTO labels({LABEL_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                       (sample_id, model, kind, json.dumps(list(tags)), json.dumps([b.to_json() for b in boxes]),
                        label.labelled_at, label.revision))
        self._wrote()
        return label

    def delete_label(self, sample_id: str, model: str, revision: int | None = None) -> bool:
        """Delete the label (only at `revision`, when given: else LabelConflictError); False if there was none."""
        with self._transaction("deleting a label") as db:
            row = db.execute(f"SELECT {LABEL_COLUMNS} FROM labels WHERE sample_id = ? AND model = ?",
                             (sample_id, model)).fetchone()
            if row is None:
                return False
            current = row_to_label(row)
            if revision is not None and current.revision != revision:
                raise LabelConflictError(f"the label of {sample_id} for {model} is at revision {current.revision}, "
                                         f"not {revision}: someone saved it meanwhile", current)
            db.execute("DELETE FROM labels WHERE sample_id = ? AND model = ?", (sample_id, model))
        return True

    def label_items(self, model: str, camera: str | None = None, labelled: bool | None = None, limit: int = 50,
                    before: str | None = None) -> list[LabelItem]:
        """Frames to label, newest first: samples (with their label for `model`, if any) and
        events' clean frames not yet made samples; `before` is the id the previous page ended with."""
        where, args = [], [model]
        if camera is not None:
            where.append("camera = ?")
            args.append(camera)
        if before is not None:
            where.append("id < ?")
            args.append(before)
        if labelled is not None:
            where.append("l_model IS NOT NULL" if labelled else "l_model IS NULL")
        joined = ("LEFT JOIN labels l ON l.sample_id = s.id AND l.model = ?" if self._has_labels() else
                  "LEFT JOIN (SELECT NULL AS sample_id, NULL AS model, NULL AS kind, NULL AS tags, NULL AS boxes, "
                  "NULL AS labelled_at, NULL AS revision) l ON l.model = ?")
        # the page first, from small columns only: a prediction can be a thousand tags long
        sql = ("SELECT * FROM (SELECT 'sample' AS item, s.id AS id, s.camera AS camera, l.model AS l_model, l.kind, "
               f"l.tags, l.boxes, l.labelled_at, l.revision FROM samples s {joined} "
               "UNION ALL SELECT 'event', e.id, e.camera, NULL, NULL, NULL, NULL, NULL, NULL FROM events e "
               "WHERE e.frame IS NOT NULL AND e.end_at IS NOT NULL AND e.id NOT IN (SELECT id FROM samples))")
        if where:
            sql += " WHERE " + " AND ".join(where)
        page = self._read_all(sql + " ORDER BY id DESC LIMIT ?", (*args, limit))
        found = self._frames([row[1] for row in page if row[0] == "sample"],
                             [row[1] for row in page if row[0] == "event"])
        items = []
        for kind, item_id, _, *label_row in page:
            if item_id not in found:
                continue
            label = labels_of([(item_id, *label_row)])[0] if label_row[0] is not None else None
            items.append(LabelItem(kind, found[item_id], label))
        return items

    def _frames(self, sample_ids: list[str], event_ids: list[str]) -> dict[str, SampleRecord]:
        """The samples of these ids, and these events' clean frames as samples (their box the prediction)."""
        found = {}
        if sample_ids:
            marks = ",".join("?" * len(sample_ids))
            found = {s.id: s for s in samples_of(self._read_all(
                f"SELECT {SAMPLE_COLUMNS} FROM samples WHERE id IN ({marks})", tuple(sample_ids)))}
        if event_ids:
            marks = ",".join("?" * len(event_ids))
            for row in self._read_all(f"SELECT id, camera, start, frame, tag, peak, box FROM events "
                                      f"WHERE id IN ({marks})", tuple(event_ids)):
                event_id, camera, start, frame, tag, peak, box = row
                found.update({s.id: s for s in samples_of([(event_id, SAMPLER_EVENT, camera, start, frame,
                                                            json.dumps(_event_prediction(tag, peak, box)))])})
        return found

    def adopt_event_frame(self, event_id: str) -> SampleRecord | None:
        """The sample made of an event's clean frame, under the event's id (made now, a copy,
        if it is not yet); None when the event has no clean frame. DiskFullError when the
        copy does not fit."""
        with self._lock:  # one adoption at a time: two saves of one event make one sample
            return self._adopt(event_id)

    def _adopt(self, event_id: str) -> SampleRecord | None:
        if (kept := self.sample(event_id)) is not None:
            return kept
        rows = self._read_all("SELECT camera, start, frame, tag, peak, box FROM events "
                              "WHERE id = ? AND frame IS NOT NULL AND end_at IS NOT NULL", (event_id,))
        if not rows:
            return None
        camera, start, frame, tag, peak, box = rows[0]
        try:
            data = self.media_path(frame).read_bytes()
        except (OSError, StoreError):
            return None
        name = frame.replace("events/", "samples/", 1).replace("-frame.jpg", ".jpg")
        self._keep_sample(event_id, SAMPLER_EVENT, camera, start, name, data, _event_prediction(tag, peak, box))
        return self.sample(event_id)
