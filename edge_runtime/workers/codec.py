"""A FrameResult as compact bytes, so results cross a process boundary without pickle.

    codec = ResultCodec(labels=spec.labels, tag_ids=spec.tag_ids, key=1)
    data = codec.encode(result, FrameRef("edgert_12_0_1_0_1", offset=0, shape=(720, 1280, 3)))
    codecs = {result_key(data): codec}            # the server's: one per version a worker announced
    decoded = codecs[result_key(data)].decode(data)  # a Decoded: the result's fields and the frame's place
    result = decoded.result(image)               # the FrameResult again, with the image read back

Only the image stays behind (it lives in shared memory, see shm.py; the message names
where). Predictions go as arrays of tag indices and probabilities; a tag's name and id
come from the model's labels. A worker announces each version it loads (a MODEL message:
its key, name, version, labels, tag ids, project and iteration) before the first result of
that version, and every result names the key of the codec that encoded it, so the server
decodes each result with the labels and iteration of the version that made it, also
around a swap (messages on one pipe arrive in order). A prediction whose name or id is not
the labels' carries its strings, so any FrameResult survives the trip, whichever codec
encoded it. Status reports (small, twice a second) and announcements are JSON. Every
message starts with a kind byte.
"""

from __future__ import annotations

import datetime as dt
import json
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypedDict, cast

import numpy as np

from ..types import BoundingBox, Frame, FrameResult, Prediction, PredictionResult, Predictions

RESULT, STATUS, MODEL = b"R", b"S", b"M"
_KEY = struct.Struct("<I")  # the codec a result was encoded with, right after its kind byte
MAX_LABELS = 100_000
_HEAD = struct.Struct("<QddddqIIIB")  # seq, captured_at, captured_mono, inference_ms, published_mono,
#                                      created (µs since the epoch), image width, height, predictions, reused
_REF = struct.Struct("<QB")  # offset, ndim
_BOX, _NAMED = 1, 2  # per-prediction flags
_EPOCH = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc)


@dataclass(frozen=True)
class FrameRef:
    """Where a frame's pixels are: a shared-memory segment, the byte offset of its slot there
    (the slot's header, then the pixels), and the array's shape."""

    segment: str
    offset: int
    shape: tuple[int, ...]
    dtype: str = "|u1"


@dataclass(frozen=True)
class Decoded:
    camera_id: str
    seq: int
    captured_at: float
    captured_mono: float
    inference_ms: float
    published_mono: float
    prediction: PredictionResult
    ref: FrameRef
    reused: bool = False

    def result(self, image: np.ndarray, seq: int | None = None, published_mono: float | None = None) -> FrameResult:
        frame = Frame(self.camera_id, self.seq if seq is None else seq, self.captured_at, self.captured_mono, image)
        return FrameResult(frame, self.prediction, self.inference_ms,
                           self.published_mono if published_mono is None else published_mono, reused=self.reused)


def _text(value: str) -> bytes:
    raw = value.encode()
    return struct.pack("<H", len(raw)) + raw


class _Reader:
    def __init__(self, data: bytes, offset: int) -> None:
        self.data, self.offset = data, offset

    def take(self, fmt: str) -> tuple[Any, ...]:
        values = struct.unpack_from(fmt, self.data, self.offset)
        self.offset += struct.calcsize(fmt)
        return values

    def text(self) -> str:
        (size,) = self.take("<H")
        self.offset += size
        return self.data[self.offset - size:self.offset].decode()


class ResultCodec:
    def __init__(self, labels: Sequence[str] | None = (), tag_ids: Sequence[str] | None = None,
                 project: str = "", iteration: str = "", key: int = 0) -> None:
        self.key = key
        self.labels = tuple(labels or ())
        self.tag_ids = tuple(tag_ids) if tag_ids else None
        self.project, self.iteration = project, iteration  # the model's ids, as in-process results carry

    def _own_labels(self, names: Sequence[str], tag_ids: Sequence[str] | None) -> bool:
        """The predictions name their tags from this codec's labels (the model's own)."""
        same_ids = tag_ids is self.tag_ids or tuple(tag_ids or ()) == (self.tag_ids or ())
        return (names is self.labels or tuple(names) == self.labels) and same_ids

    def _usual(self, p: Prediction) -> bool:
        """Name and id are those the labels give for the index."""
        i = p.tag_index
        return (0 <= i < len(self.labels) and p.tag_name == self.labels[i]
                and p.tag_id == (self.tag_ids[i] if self.tag_ids else ""))

    def encode(self, result: FrameResult, ref: FrameRef) -> bytes:
        frame, pr = result.frame, result.prediction
        preds = pr.predictions
        n = len(preds)
        created_us = (pr.created - _EPOCH) // dt.timedelta(microseconds=1)
        columns = preds.columns() if isinstance(preds, Predictions) else None
        if columns is not None and self._own_labels(columns[2], columns[3]):
            indices, probabilities = columns[0], columns[1]  # a classifier's result: no object per tag
            flags = [0] * n
        else:
            indices, probabilities = [p.tag_index for p in preds], [p.probability for p in preds]
            flags = [(_BOX if p.bounding_box else 0) | (0 if self._usual(p) else _NAMED) for p in preds]
        parts = [
            RESULT, _KEY.pack(self.key),
            _HEAD.pack(frame.seq, frame.captured_at, frame.captured_mono, result.inference_ms, result.published_mono,
                       created_us, pr.image_width, pr.image_height, n, result.reused),
            _text(frame.camera_id), _text(pr.id), _text(ref.segment), _REF.pack(ref.offset, len(ref.shape)),
            struct.pack(f"<{len(ref.shape)}I", *ref.shape), _text(ref.dtype),
            struct.pack(f"<{n}I", *indices),
            struct.pack(f"<{n}d", *probabilities),
            bytes(flags),
        ]
        for i, f in enumerate(flags):
            if not f:
                continue
            p = preds[i]
            if f & _BOX:
                b = p.bounding_box
                assert b is not None
                parts.append(struct.pack("<4d", b.left, b.top, b.width, b.height))
            if f & _NAMED:
                parts += [_text(p.tag_name), _text(p.tag_id)]
        return b"".join(parts)

    def decode(self, data: bytes) -> Decoded:
        if data[:1] != RESULT:
            raise ValueError(f"not a result message (kind {data[:1]!r})")
        if result_key(data) != self.key:
            raise ValueError(f"a result of codec {result_key(data)} given to codec {self.key}")
        r = _Reader(data, 1 + _KEY.size)
        seq, captured_at, captured_mono, inference_ms, published_mono, created_us, width, height, n, reused = r.take(
            _HEAD.format)
        camera_id, pred_id, segment = r.text(), r.text(), r.text()
        offset, ndim = r.take(_REF.format)
        shape = r.take(f"<{ndim}I")
        dtype = r.text()
        indices = list(r.take(f"<{n}I"))
        probabilities = list(r.take(f"<{n}d"))
        flags = r.take(f"<{n}B")
        predictions: Sequence[Prediction]
        if not any(flags):  # a classifier's usual result: made into objects only when read
            predictions = Predictions(indices, probabilities, self.labels, self.tag_ids)
        else:
            made = []
            for i, p, f in zip(indices, probabilities, flags, strict=True):
                box = BoundingBox(*r.take("<4d")) if f & _BOX else None
                if f & _NAMED:
                    name, tag_id = r.text(), r.text()
                else:
                    name, tag_id = self.labels[i], self.tag_ids[i] if self.tag_ids else ""
                made.append(Prediction(i, name, p, tag_id, box))
            predictions = tuple(made)
        created = _EPOCH + dt.timedelta(microseconds=created_us)
        prediction = PredictionResult(predictions, width, height, created=created, id=pred_id, project=self.project,
                                      iteration=self.iteration)
        return Decoded(camera_id, seq, captured_at, captured_mono, inference_ms, published_mono, prediction,
                       FrameRef(segment, offset, tuple(shape), dtype), bool(reused))


def result_key(data: bytes) -> int:
    """The key of the codec (the model version) that encoded a result message."""
    if data[:1] != RESULT or len(data) < 1 + _KEY.size:
        raise ValueError("not a result message")
    return int(_KEY.unpack_from(data, 1)[0])


class ModelInfo(TypedDict):
    """A version a worker loaded, announced before its first result: what decodes them."""

    key: int
    name: str
    version: int | None
    labels: list[str]
    tag_ids: list[str] | None
    project: str
    iteration: str


def encode_model(codec: ResultCodec, name: str, version: int | None) -> bytes:
    info = ModelInfo(key=codec.key, name=name, version=version, labels=list(codec.labels),
                     tag_ids=list(codec.tag_ids) if codec.tag_ids else None, project=codec.project,
                     iteration=codec.iteration)
    return MODEL + json.dumps(info, separators=(",", ":")).encode()


def decode_model(data: bytes) -> tuple[ModelInfo, ResultCodec]:
    """The announcement and the codec that decodes that version's results."""
    if data[:1] != MODEL:
        raise ValueError(f"not a model message (kind {data[:1]!r})")
    info = json.loads(data[1:])
    if not isinstance(info, dict) or type(info.get("key")) is not int:
        raise ValueError("a model message without its key")
    labels, tag_ids = info.get("labels"), info.get("tag_ids")
    if not isinstance(labels, list) or len(labels) > MAX_LABELS or not all(isinstance(x, str) for x in labels):
        raise ValueError("a model message without its labels")
    if tag_ids is not None and (not isinstance(tag_ids, list) or len(tag_ids) != len(labels)
                                or not all(isinstance(x, str) for x in tag_ids)):
        raise ValueError("a model message whose tag ids do not match its labels")
    codec = ResultCodec(labels, tag_ids, str(info.get("project") or ""), str(info.get("iteration") or ""),
                        key=info["key"])
    return cast(ModelInfo, info), codec


class CameraReport(TypedDict):
    """One camera as its worker sees it: CameraState's value, CameraStats' fields, its rate."""

    state: str
    stats: dict[str, Any]
    fps: float
    skipped: int
    model: str  # the published name it runs


class ModelReport(TypedDict):
    """One published name in a worker: the version it runs, and why the last swap failed."""

    version: int | None
    iteration: str
    error: str  # "" unless the last swap to another version failed (the worker stays on this one)


class WorkerStatus(TypedDict):
    """What a worker process reports every STATUS_S; no cameras until its model is loaded."""

    pid: int
    cameras: dict[str, CameraReport]
    errors: int
    overwritten: int
    models: dict[str, ModelReport]


def encode_status(status: WorkerStatus) -> bytes:
    return STATUS + json.dumps(status, separators=(",", ":")).encode()


def decode_status(data: bytes) -> WorkerStatus:
    if data[:1] != STATUS:
        raise ValueError(f"not a status message (kind {data[:1]!r})")
    value = json.loads(data[1:])
    if not isinstance(value, dict) or not isinstance(value.get("cameras"), dict):
        raise ValueError("a status message without its cameras")
    return cast(WorkerStatus, value)
