"""Samplers: which frames to keep for labelling, so the next model learns from this camera.

    samples:
      samplers:
        - type: uncertain          # the model was unsure: top probability in [low, high]
          low: 0.3
          high: 0.7
        - type: tags               # a class of interest, e.g. a rare one
          tags: [cola]
          per_day: 200
        - type: random             # a fraction of everything, for an unbiased set
          fraction: 0.001
        - type: disagreement       # the top tag changed since the camera's previous frame
          min_probability: 0.5

Each sampler has its own rate limits per minute, hour and day, counted over the frames it
kept. All share the event store's disk budget: the store refuses a sample rather than push
events out. The decisions here are pure and cheap (they run on the publisher thread); the
samples sink (sinks/samples.py) encodes and stores on a thread of its own.
"""

from __future__ import annotations

import random
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Annotated, Literal

from pydantic import Field, model_validator

from ..settings_base import Strict, require_unique
from ..types import FrameResult, Prediction

NAME = r"^$|^[A-Za-z0-9_.-]{1,64}$"


class _SamplerConfig(Strict):
    name: str = Field("", pattern=NAME, description="stored with each sample; default: the type")
    cameras: list[str] = Field(default_factory=list, description="only these cameras; empty: all")
    per_minute: int | None = Field(10, ge=0, description="keep at most this many a minute (None: no limit)")
    per_hour: int | None = Field(100, ge=0)
    per_day: int | None = Field(1000, ge=0)

    @property
    def key(self) -> str:
        return self.name or str(getattr(self, "type", "sampler"))


class UncertainConfig(_SamplerConfig):
    type: Literal["uncertain"]
    low: float = Field(0.3, ge=0, le=1, description="keep frames whose top probability is at least this ...")
    high: float = Field(0.7, ge=0, le=1, description="... and at most this")

    @model_validator(mode="after")
    def _ordered(self) -> UncertainConfig:
        if self.low > self.high:
            raise ValueError("low must not be above high")
        return self


class TagsConfig(_SamplerConfig):
    type: Literal["tags"]
    tags: list[str] = Field(min_length=1, description="keep frames that show any of these")
    min_probability: float = Field(0.5, ge=0, le=1)


class RandomConfig(_SamplerConfig):
    type: Literal["random"]
    fraction: float = Field(gt=0, le=1, description="keep this fraction of frames, at random")


class DisagreementConfig(_SamplerConfig):
    type: Literal["disagreement"]
    min_probability: float = Field(0.0, ge=0, le=1,
                                   description="a top tag below this counts as no tag")


SamplerConfig = Annotated[UncertainConfig | TagsConfig | RandomConfig | DisagreementConfig,
                          Field(discriminator="type")]


class SamplesConfig(Strict):
    samplers: list[SamplerConfig] = Field(default_factory=list, description="none: no samples are kept")
    jpeg_quality: int = Field(95, ge=50, le=100, description="samples are stored at full resolution")
    queue: int = Field(8, ge=1, le=1024, description="frames waiting to be encoded; more are dropped and counted")

    @model_validator(mode="after")
    def _unique(self) -> SamplesConfig:
        require_unique((s.key for s in self.samplers), "sampler names", " (set `name`)")
        return self


# --- rate limits --------------------------------------------------------------------------------

class RateLimit:
    """At most N in any minute, hour and day (sliding windows); `allow` counts what it allows.

        limit = RateLimit(per_minute=2, per_hour=None, per_day=10, clock=time.monotonic)
        if limit.allow(): keep(frame)
    """

    def __init__(self, per_minute: int | None, per_hour: int | None, per_day: int | None,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.clock = clock
        self._windows = [(span, n, deque[float]()) for span, n in ((60.0, per_minute), (3600.0, per_hour),
                                                                   (86400.0, per_day)) if n is not None]

    def allow(self) -> bool:
        now = self.clock()
        for span, n, times in self._windows:
            while times and times[0] <= now - span:
                times.popleft()
            if len(times) >= n:
                return False
        for _, _, times in self._windows:
            times.append(now)
        return True


# --- the decisions ------------------------------------------------------------------------------

Decide = Callable[[FrameResult], bool]


def top(result: FrameResult) -> Prediction | None:
    predictions = result.prediction.predictions  # highest probability first
    return predictions[0] if predictions else None


def uncertain(cfg: UncertainConfig) -> Decide:
    def decide(result: FrameResult) -> bool:
        best = top(result)
        return cfg.low <= (best.probability if best else 0.0) <= cfg.high
    return decide


def tags(cfg: TagsConfig) -> Decide:
    wanted = frozenset(cfg.tags)
    def decide(result: FrameResult) -> bool:
        for p in result.prediction.predictions:  # highest first: stop below the minimum
            if p.probability < cfg.min_probability:
                return False
            if p.tag_name in wanted:
                return True
        return False
    return decide


def sample_randomly(cfg: RandomConfig, rng: Callable[[], float] = random.random) -> Decide:
    return lambda _: rng() < cfg.fraction


def disagreement(cfg: DisagreementConfig) -> Decide:
    previous: dict[str, str | None] = {}  # camera -> its previous frame's top tag

    def decide(result: FrameResult) -> bool:
        best = top(result)
        tag = best.tag_name if best and best.probability >= cfg.min_probability else None
        camera = result.camera_id
        changed = camera in previous and previous[camera] != tag
        previous[camera] = tag
        return changed
    return decide


@dataclass
class Sampler:
    name: str
    decide: Decide
    limit: RateLimit
    cameras: frozenset[str] = frozenset()
    wanted: int = 0  # frames the decision picked
    limited: int = 0  # of those, refused by the rate limits
    kept: int = field(default=0)

    def offer(self, result: FrameResult) -> bool:
        """Whether to keep this frame; counts it against the rate limits when it says yes."""
        if self.cameras and result.camera_id not in self.cameras:
            return False
        if not self.decide(result):  # always asked, so disagreement sees every frame
            return False
        self.wanted += 1
        if not self.limit.allow():
            self.limited += 1
            return False
        self.kept += 1
        return True


def build(cfg: SamplerConfig, clock: Callable[[], float] = time.monotonic,
          rng: Callable[[], float] = random.random) -> Sampler:
    decide: Decide
    if isinstance(cfg, UncertainConfig):
        decide = uncertain(cfg)
    elif isinstance(cfg, TagsConfig):
        decide = tags(cfg)
    elif isinstance(cfg, RandomConfig):
        decide = sample_randomly(cfg, rng)
    else:
        decide = disagreement(cfg)
    return Sampler(cfg.key, decide, RateLimit(cfg.per_minute, cfg.per_hour, cfg.per_day, clock),
                   frozenset(cfg.cameras))
