"""Rules: per-frame results in, event starts and ends out. No I/O, no clocks: frame times only.

    engine = RuleEngine(settings.events.rules)
    for change in engine.feed(result):      # Change("start" | "end", OpenEvent)
        ...
    engine.close_all()                      # ends every open event at its last frame

For each (rule, camera, tag), a tag that matches (probability >= min_probability, box centre
in the zone when there is one) in `min_frames` consecutive frames of that camera starts an
event, dated from the first of those frames. A frame without a match resets the count, so
a noisy tag that flickers in and out never starts one. An event ends when its tag has been
absent for `end_after_s` (frame time); its end is the last frame that matched.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from ..types import BoundingBox, FrameResult, Prediction
from .config import Point, RuleConfig
from .store import EventRecord, new_id

Key = tuple[str, str, str]  # (rule, camera, tag)


def inside(point: tuple[float, float], polygon: list[Point]) -> bool:
    """Ray casting: whether `point` lies inside `polygon` (normalised coordinates)."""
    x, y = point
    hit = False
    j = len(polygon) - 1
    for i, (xi, yi) in enumerate(polygon):
        xj, yj = polygon[j]
        if (yi > y) != (yj > y) and x < (xj - xi) * (y - yi) / (yj - yi) + xi:
            hit = not hit
        j = i
    return hit


def centre(box: BoundingBox) -> tuple[float, float]:
    return box.left + box.width / 2, box.top + box.height / 2


@dataclass
class OpenEvent:
    """An event in progress (or just ended), with the frame that holds its peak."""

    id: str
    rule: str
    camera: str
    tag: str
    start: float
    last_at: float
    frames: int
    peak: float
    peak_at: float
    best: FrameResult  # the frame of the peak: the snapshot is drawn from it
    box: BoundingBox | None
    end: float | None = None

    def record(self, device: str = "") -> EventRecord:
        return EventRecord(id=self.id, rule=self.rule, camera=self.camera, tag=self.tag, start=self.start,
                           end=self.end, last_at=self.last_at, peak=self.peak, peak_at=self.peak_at,
                           frames=self.frames, box=self.box.to_json() if self.box else None, device=device)

    def add(self, result: FrameResult, match: Prediction) -> None:
        at = result.frame.captured_at
        self.frames += 1
        self.last_at = max(self.last_at, at)
        if match.probability > self.peak:
            self.peak, self.peak_at, self.best, self.box = match.probability, at, result, match.bounding_box


@dataclass(frozen=True)
class Change:
    kind: Literal["start", "end"]
    event: OpenEvent


@dataclass
class _Track:
    streak: int = 0
    candidate: OpenEvent | None = None  # counting towards min_frames
    open: OpenEvent | None = None


@dataclass
class Rule:
    config: RuleConfig
    tags: frozenset[str] = field(init=False)

    def __post_init__(self) -> None:
        self.tags = frozenset(self.config.tags)

    def applies_to(self, camera: str) -> bool:
        return not self.config.cameras or camera in self.config.cameras

    def matches(self, result: FrameResult) -> dict[str, Prediction]:
        """The best matching prediction of each tag in this frame."""
        cfg = self.config
        best: dict[str, Prediction] = {}
        for p in result.prediction.predictions:  # highest probability first, as every result is
            if p.probability < cfg.min_probability:
                break  # the rest are lower: a 1000-tag classifier's tail is never even built
            if self.tags and p.tag_name not in self.tags:
                continue
            if cfg.zone is not None and (p.bounding_box is None or not inside(centre(p.bounding_box), cfg.zone)):
                continue
            if p.tag_name not in best or p.probability > best[p.tag_name].probability:
                best[p.tag_name] = p
        return best


class RuleEngine:
    def __init__(self, rules: list[RuleConfig]) -> None:
        self.rules = [Rule(r) for r in rules]
        self._tracks: dict[Key, _Track] = {}

    def feed(self, result: FrameResult) -> list[Change]:
        changes: list[Change] = []
        camera, at = result.camera_id, result.frame.captured_at
        for rule in self.rules:
            if not rule.applies_to(camera):
                continue
            name = rule.config.name
            matches = rule.matches(result)
            for tag, match in matches.items():
                track = self._tracks.setdefault((name, camera, tag), _Track())
                if track.open is not None:
                    track.open.add(result, match)
                    continue
                track.streak += 1
                if track.candidate is None:
                    track.candidate = OpenEvent(id="", rule=name, camera=camera, tag=tag, start=at, last_at=at,
                                                frames=1, peak=match.probability, peak_at=at, best=result,
                                                box=match.bounding_box)
                else:
                    track.candidate.add(result, match)
                if track.streak >= rule.config.min_frames:
                    track.candidate.id = new_id(track.candidate.start)
                    track.open, track.candidate, track.streak = track.candidate, None, 0
                    changes.append(Change("start", track.open))
            for key in [k for k in self._tracks if k[0] == name and k[1] == camera and k[2] not in matches]:
                track = self._tracks[key]
                track.streak, track.candidate = 0, None
                if track.open is not None and at - track.open.last_at >= rule.config.end_after_s:
                    changes.append(self._end(key))
                elif track.open is None:
                    del self._tracks[key]
        return changes

    def _end(self, key: Key) -> Change:
        track = self._tracks.pop(key)
        assert track.open is not None
        track.open.end = track.open.last_at
        return Change("end", track.open)

    def open_events(self, camera: str | None = None) -> list[OpenEvent]:
        return [t.open for k, t in self._tracks.items() if t.open is not None and camera in (None, k[1])]

    def close_idle(self, camera: str, idle_s: float) -> list[Change]:
        """End the camera's open events whose rule's end_after_s has passed without any frame
        (the camera stopped delivering)."""
        end_after = {r.config.name: r.config.end_after_s for r in self.rules}
        keys = [k for k, t in self._tracks.items()
                if t.open is not None and k[1] == camera and idle_s >= end_after[k[0]]]
        return [self._end(k) for k in keys]

    def close_all(self, camera: str | None = None) -> list[Change]:
        """End every open event (of one camera): the camera stopped, or the process is stopping."""
        keys = [k for k, t in self._tracks.items() if t.open is not None and camera in (None, k[1])]
        return [self._end(k) for k in keys]
