"""The run's journal in DIR, one JSON line per image or frame, so a stopped run resumes.

    journal = Journal.open(out_dir, resume=True)
    journal.done_inputs            # inputs finished by an earlier run: skipped
    journal.add_unit(unit); journal.finish(input_key)

An input counts as done only once its `done` line is written: a video cut off halfway
is done again from its start, and its partial frames are dropped.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TextIO

from ..errors import ConfigError

JOURNAL = "survey.jsonl"
ANNOTATED = "annotated"  # the annotated copies of photos with findings


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


@dataclass
class Journal:
    path: Path
    units: list[UnitRecord]
    bad: list[BadRecord]
    done_inputs: set[str]
    settings: dict[str, Any]
    _file: TextIO | None = None

    @classmethod
    def open(cls, out_dir: Path, resume: bool, settings: dict[str, Any]) -> Journal:
        """Start a journal (an earlier one is replaced unless `resume`)."""
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            (out_dir / ANNOTATED).mkdir(exist_ok=True)
        except OSError as exc:
            raise ConfigError(f"--out {out_dir}: {exc.strerror or exc}") from exc
        path = out_dir / JOURNAL
        journal = cls(path, [], [], set(), settings)
        if resume and path.is_file():
            journal._load()
        # Written afresh, with only what finished: the partial frames of a cut-off video go.
        journal._file = path.open("w", encoding="utf-8")
        journal._file.write(json.dumps({"type": "settings", **settings}) + "\n")
        for unit in journal.units:
            journal._write("unit", unit)
        for bad in journal.bad:
            journal._write("bad", bad)
        for key in sorted(journal.done_inputs):
            journal._file.write(json.dumps({"type": "done", "input": key}) + "\n")
        journal._file.flush()
        return journal

    def _load(self) -> None:
        pending_units: dict[str, list[UnitRecord]] = {}
        pending_bad: dict[str, list[BadRecord]] = {}
        for line in self.path.read_text(encoding="utf-8").splitlines():
            try:
                item = json.loads(line)
            except json.JSONDecodeError:
                continue  # a line cut short when the run stopped
            kind = item.pop("type", None)
            if kind == "unit":
                item["findings"] = [FindingRecord(**f) for f in item.get("findings", [])]
                pending_units.setdefault(item["input"], []).append(UnitRecord(**item))
            elif kind == "bad":
                pending_bad.setdefault(item["key"], []).append(BadRecord(**item))
            elif kind == "done":
                key = item["input"]
                self.done_inputs.add(key)
                self.units += pending_units.pop(key, [])
                self.bad += pending_bad.pop(key, [])
        # Whatever is still pending belongs to an input that did not finish: it is run again.

    def _write(self, kind: str, record: Any) -> None:
        assert self._file is not None
        self._file.write(json.dumps({"type": kind, **(asdict(record) if record is not None else {})}) + "\n")

    def add_unit(self, unit: UnitRecord) -> None:
        self.units.append(unit)
        self._write("unit", unit)

    def add_bad(self, bad: BadRecord) -> None:
        self.bad.append(bad)
        self._write("bad", bad)

    def finish(self, key: str) -> None:
        assert self._file is not None
        self._file.write(json.dumps({"type": "done", "input": key}) + "\n")
        self._file.flush()
        self.done_inputs.add(key)

    def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
