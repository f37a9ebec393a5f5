"""The run's journal in DIR, one JSON line per image or frame, so a stopped run resumes.

    journal = Journal.open(out_dir, resume=True, settings=settings)
    journal.done_inputs            # inputs finished by an earlier run: skipped
    journal.add_unit(unit); journal.finish(input_key)

The first line holds the settings that change results (the model's SHA-1 among them):
`--resume` refuses a journal whose settings differ, with one line saying which. An input
counts as done only once its `done` line is written, and that line counts the input's
records: a video cut off halfway, or an input with a record lost or damaged, is done
again from its start. A damaged line (not JSON, not a record, a record with missing or
unknown fields or values of the wrong kind) is skipped and reported; only the last line,
cut short when a run stopped, is dropped without a word.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError
from .checks import position_problem

JOURNAL = "survey.jsonl"
JOURNAL_VERSION = 2  # 1 had no model SHA-1 and no record counts
ANNOTATED = "annotated"  # the annotated copies of photos with findings
DISPLAY_ONLY = ("model", "telemetry")  # names shown in the report; the SHA-1s beside them decide
_ANNOTATED_NAME = re.compile(rf"{ANNOTATED}/[A-Za-z0-9._-]{{1,100}}\.jpg")


@dataclass(frozen=True)
class FindingRecord:
    tagName: str
    probability: float
    boundingBox: dict[str, float]
    tile: str
    lat: float
    lon: float
    position: str  # "ground" or "image"


@dataclass(frozen=True)
class UnitRecord:
    """One image or one sampled video frame, with what was found in it."""

    input: str  # the input it came from, as an absolute path: what `done` lines name
    name: str  # shown in the outputs: the file's name, or "clip.mp4@12.0s" for a frame
    width: int
    height: int
    lat: float
    lon: float
    alt: float | None
    time: str | None
    prediction: dict[str, Any]  # the Custom Vision prediction JSON, tiles merged
    findings: list[FindingRecord] = field(default_factory=list)
    annotated: str | None = None  # path in DIR


@dataclass(frozen=True)
class BadRecord:
    input: str  # as given or found: shown in the report
    reason: str
    key: str  # the input's absolute path: what `done` lines name


@dataclass(frozen=True)
class NoteRecord:
    """A value that was dropped: a photo or frame placed without it, track points skipped."""

    input: str  # the photo, frame or track file: shown in the report
    reason: str
    key: str  # the input's absolute path: what `done` lines name


def dumps(value: Any) -> str:
    """JSON for the survey's files: a NaN or infinity is a bug upstream, never written."""
    return json.dumps(value, allow_nan=False)


# -- checking what a journal line holds ---------------------------------------------------


class Damaged(ValueError):
    """A journal line that is not one of the records below; the text says why."""


def _finite(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise Damaged(f"number {text[:20]} is out of range")
    return value


def _constant(text: str) -> float:
    raise Damaged(f"{text} is not a number JSON allows")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _keys(item: dict[str, Any], cls: type, what: str) -> None:
    expected = {f.name for f in fields(cls)}
    if missing := expected - item.keys():
        raise Damaged(f"a {what} record without {', '.join(sorted(missing))}")
    if extra := item.keys() - expected:
        raise Damaged(f"a {what} record with unknown {', '.join(sorted(extra))}")


def _kind(value: Any, types: type | tuple[type, ...], name: str) -> None:
    if not isinstance(value, types) or isinstance(value, bool):
        raise Damaged(f"{name} of the wrong kind ({type(value).__name__})")


def _position(item: dict[str, Any], what: str) -> None:
    if not (_is_number(item["lat"]) and _is_number(item["lon"])) or position_problem(item["lat"], item["lon"]):
        raise Damaged(f"a {what} record whose position is not a latitude and longitude")


def _finding(item: Any) -> FindingRecord:
    _kind(item, dict, "a finding")
    _keys(item, FindingRecord, "finding")
    for name in ("tagName", "tile", "position"):
        _kind(item[name], str, name)
    if not _is_number(item["probability"]):
        raise Damaged("a finding's probability is not a number")
    box = item["boundingBox"]
    if not isinstance(box, dict) or set(box) != {"left", "top", "width", "height"} or \
            not all(_is_number(v) for v in box.values()):
        raise Damaged("a finding's boundingBox is not left, top, width and height")
    if item["position"] not in ("ground", "image"):
        raise Damaged(f"a finding's position {item['position'][:20]!r} is neither ground nor image")
    _position(item, "finding")
    return FindingRecord(**item)


def _unit(item: dict[str, Any]) -> UnitRecord:
    _keys(item, UnitRecord, "unit")
    for name in ("input", "name"):
        _kind(item[name], str, name)
    for name in ("width", "height"):
        _kind(item[name], int, name)
        if item[name] < 1:
            raise Damaged(f"{name} {item[name]} is below 1")
    _position(item, "unit")
    if item["alt"] is not None and not _is_number(item["alt"]):
        raise Damaged("alt of the wrong kind")
    if item["time"] is not None:
        _kind(item["time"], str, "time")
    _kind(item["prediction"], dict, "prediction")
    _kind(item["findings"], list, "findings")
    annotated = item["annotated"]
    if annotated is not None and not (isinstance(annotated, str) and _ANNOTATED_NAME.fullmatch(annotated)):
        raise Damaged(f"annotated is not a file in {ANNOTATED}/")
    return UnitRecord(**{**item, "findings": [_finding(f) for f in item["findings"]]})


def _note(item: dict[str, Any], cls: type[BadRecord] | type[NoteRecord]) -> BadRecord | NoteRecord:
    _keys(item, cls, cls.__name__[:-6].lower())
    for name in ("input", "reason", "key"):
        _kind(item[name], str, name)
    return cls(**item)


def parse_line(text: str) -> dict[str, Any]:
    """A journal line as a JSON object with a `type`; Damaged otherwise."""
    try:
        item = json.loads(text, parse_float=_finite, parse_constant=_constant)
    except RecursionError:
        raise Damaged("nested too deeply") from None
    except Damaged:
        raise
    except ValueError:
        raise Damaged("not JSON") from None
    if not isinstance(item, dict):
        raise Damaged(f"a JSON {type(item).__name__}, not a record")
    if item.get("type") not in ("settings", "unit", "bad", "note", "done"):
        raise Damaged(f"type {str(item.get('type'))[:20]!r} is not a record's")
    return item


def _settings_difference(old: dict[str, Any], new: dict[str, Any]) -> str | None:
    """What differs between two settings lines, in words, or None."""
    if old.get("journal") != JOURNAL_VERSION:
        return "was written by another version of edge-runtime"
    if old.get("model_sha1") != new.get("model_sha1"):
        return (f"was written by another model (SHA-1 {str(old.get('model_sha1'))[:12]}, "
                f"now {str(new.get('model_sha1'))[:12]})")
    changed = [f"{key} {old.get(key)}, now {new.get(key)}" for key in sorted(set(old) | set(new))
               if key not in (*DISPLAY_ONLY, "type", "journal") and old.get(key) != new.get(key)]
    return f"was written with other settings ({'; '.join(changed)})" if changed else None


# -- the journal ----------------------------------------------------------------------------


@dataclass
class Journal:
    path: Path
    units: list[UnitRecord]
    bad: list[BadRecord]
    done_inputs: set[str]
    settings: dict[str, Any]
    notes: list[NoteRecord] = field(default_factory=list)
    _counts: dict[str, int] = field(default_factory=dict)  # records written per input
    _file: TextIO | None = None

    @classmethod
    def open(cls, out_dir: Path, resume: bool, settings: dict[str, Any]) -> Journal:
        """Start a journal (an earlier one is replaced unless `resume`); ConfigError in one
        line when `resume` meets a journal of another model or other settings."""
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / ANNOTATED).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out_dir}: {exc.strerror or exc}") from exc
        path = out_dir / JOURNAL
        journal = cls(path, [], [], set(), settings)
        if resume and path.is_file():
            try:
                journal._load()
            except OSError as exc:
                raise ConfigError(f"--resume: {path}: {exc.strerror or exc}") from exc
        # Written afresh, with only what finished: the partial frames of a cut-off video go.
        try:
            journal._file = path.open("w", encoding="utf-8")
        except OSError as exc:
            raise ConfigError(f"--out {out_dir}: {path.name}: {exc.strerror or exc}") from exc
        journal._file.write(dumps({"type": "settings", "journal": JOURNAL_VERSION, **settings}) + "\n")
        by_input: dict[str, list[UnitRecord | BadRecord | NoteRecord]] = {key: [] for key in journal.done_inputs}
        records: list[UnitRecord | BadRecord | NoteRecord] = [*journal.units, *journal.bad, *journal.notes]
        for record in records:
            if (key := record.input if isinstance(record, UnitRecord) else record.key) in by_input:
                by_input[key].append(record)
        for key in sorted(by_input):
            for record in by_input[key]:
                journal._write(record)
            journal._file.write(dumps({"type": "done", "input": key, "records": len(by_input[key])}) + "\n")
        journal._file.flush()
        return journal

    def _load(self) -> None:
        pending: dict[str, list[UnitRecord | BadRecord | NoteRecord]] = {}
        damaged: list[str] = []  # "line 5: not JSON"
        lost: list[str] = []  # inputs done whose records did not all come back
        header: dict[str, Any] | None = None
        with self.path.open("rb") as handle:
            for number, raw in enumerate(handle, start=1):
                try:
                    item = parse_line(raw.decode("utf-8"))
                    kind = item.pop("type")
                    if kind == "settings":
                        if header is None:
                            header = item
                        continue
                    if kind == "done":
                        if set(item) != {"input", "records"} or not isinstance(item["input"], str) or \
                                not isinstance(item["records"], int) or isinstance(item["records"], bool):
                            raise Damaged("a done record without its input and count")
                        self._done(item["input"], item["records"], pending, lost)
                        continue
                    record = _unit(item) if kind == "unit" else _note(item, BadRecord if kind == "bad" else NoteRecord)
                    key = record.input if isinstance(record, UnitRecord) else record.key
                    pending.setdefault(key, []).append(record)
                except (Damaged, UnicodeDecodeError) as exc:
                    if not raw.endswith(b"\n"):
                        continue  # the last line, cut short when the run stopped
                    why = "not UTF-8 text" if isinstance(exc, UnicodeDecodeError) else str(exc)
                    damaged.append(f"line {number}: {why}")
        # Whatever is still pending belongs to an input that did not finish: it is run again.
        if header is None and not (damaged or lost or pending or self.done_inputs):
            return  # empty, or cut short in its first line: nothing to resume
        if header is None:
            raise ConfigError(f"--resume: {self.path} has no settings line (damaged, or written by an older "
                              "version); run without --resume to start again")
        if difference := _settings_difference(header, self.settings):
            raise ConfigError(f"--resume: {self.path} {difference}; run without --resume to start again")
        if damaged or lost:
            words = []
            if damaged:
                first = "first, " if len(damaged) > 1 else ""
                words.append(f"{len(damaged)} damaged lines skipped ({first}{damaged[0]})")
            if lost:
                words.append(f"{len(lost)} inputs with records lost are run again")
            self.notes.append(NoteRecord(JOURNAL, "; ".join(words), ""))

    def _done(self, key: str, count: int, pending: dict[str, list[UnitRecord | BadRecord | NoteRecord]],
              lost: list[str]) -> None:
        records = pending.pop(key, [])
        if key in self.done_inputs:
            return  # said twice: the first one holds
        if len(records) != count:  # a record damaged or gone: the input is run again
            lost.append(key)
            return
        self.done_inputs.add(key)
        for record in records:
            if isinstance(record, UnitRecord):
                self.units.append(record)
            elif isinstance(record, BadRecord):
                self.bad.append(record)
            else:
                self.notes.append(record)

    def _write(self, record: UnitRecord | BadRecord | NoteRecord) -> None:
        assert self._file is not None
        kind = {UnitRecord: "unit", BadRecord: "bad", NoteRecord: "note"}[type(record)]
        self._file.write(dumps({"type": kind, **asdict(record)}) + "\n")

    def _add(self, key: str, record: UnitRecord | BadRecord | NoteRecord) -> None:
        self._counts[key] = self._counts.get(key, 0) + 1
        self._write(record)

    def add_unit(self, unit: UnitRecord) -> None:
        self.units.append(unit)
        self._add(unit.input, unit)

    def add_bad(self, bad: BadRecord) -> None:
        self.bad.append(bad)
        self._add(bad.key, bad)

    def add_note(self, note: NoteRecord, journaled: bool = True) -> None:
        """A dropped value; `journaled=False` for one this run finds again (its --telemetry file)."""
        self.notes.append(note)
        if journaled:
            self._add(note.key, note)

    def finish(self, key: str) -> None:
        assert self._file is not None
        self._file.write(dumps({"type": "done", "input": key, "records": self._counts.get(key, 0)}) + "\n")
        self._file.flush()
        self.done_inputs.add(key)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
