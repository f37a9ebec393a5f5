"""Settings of events: the rules, the store and its budget, clips.

    events:
      device: kiosk-3
      rules:
        - name: kiosk
          tags: [cola, water]
          min_probability: 0.8
          min_frames: 5
          end_after_s: 2
      store:
        path: /var/lib/edge-runtime
        max_mb: 512
      clip:
        enabled: true
        pre_s: 3
        post_s: 3
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..paths import state_dir
from ..settings_base import Strict, require_unique

Point = tuple[float, float]


def default_data_dir(env: Mapping[str, str] | None = None) -> Path:
    """The service's state folder under systemd (paths.state_dir), ./data otherwise."""
    return state_dir(env) or Path("data")


class RuleConfig(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="named in each event")
    cameras: list[str] = Field(default_factory=list, description="camera ids; empty: all")
    tags: list[str] = Field(default_factory=list, description="tag names; empty: any")
    min_probability: float = Field(0.5, ge=0, le=1)
    min_frames: int = Field(3, ge=1, le=10000, description="consecutive matching frames before the event starts")
    end_after_s: float = Field(2.0, gt=0, le=86400, description="the tag absent this long ends the event")
    zone: list[Point] | None = Field(None, description="detection: polygon in normalised coordinates that the "
                                     "box centre must fall in")

    @field_validator("zone")
    @classmethod
    def _polygon(cls, zone: list[Point] | None) -> list[Point] | None:
        if zone is None:
            return None
        if len(zone) < 3:
            raise ValueError("a zone needs at least 3 points")
        if any(not (0 <= x <= 1 and 0 <= y <= 1) for x, y in zone):
            raise ValueError("zone points are normalised: each coordinate in [0, 1]")
        return zone


class StoreConfig(Strict):
    path: Path = Field(default_factory=default_data_dir, description="data folder: events.db and media/")
    max_mb: float = Field(1024, gt=0, description="records and media together stay under this")
    max_age_days: float | None = Field(None, gt=0, description="delete events older than this")
    min_free_mb: float = Field(64, ge=0, description="keep this much of the disk free")
    queue: int = Field(64, ge=1, le=10000, description="results waiting for the recorder; more are dropped")


class ClipConfig(Strict):
    enabled: bool = Field(False, description="write a short MP4 per event")
    codec: Literal["mp4v", "vp09"] = Field("mp4v", description="mp4v: cheap to encode, plays in VLC and "
                                           "desktop players, not in browsers; vp09: plays in browsers, but "
                                           "costs about 50 times the CPU")
    pre_s: float = Field(3.0, ge=0, le=60, description="seconds before the event starts")
    post_s: float = Field(3.0, ge=0, le=60, description="seconds after it ends")
    max_s: float = Field(60.0, gt=0, le=600, description="longest clip")
    fps: float = Field(10.0, gt=0, le=60, description="frames kept per second")
    width: int = Field(640, ge=64, le=4096, description="frames are shrunk to this width")


class EventsConfig(Strict):
    device: str = Field(default_factory=socket.gethostname, description="device name in each event")
    rules: list[RuleConfig] = Field(default_factory=list, description="no rules: no events are recorded")
    store: StoreConfig = StoreConfig()
    clip: ClipConfig = ClipConfig()
    snapshot_quality: int = Field(85, ge=10, le=100)
    thumbnail_width: int = Field(320, ge=32, le=1920)
    keep_frames: bool = Field(False, description="also keep each event's best frame without drawings, "
                              "for `edge-runtime events export --format dataset`")

    @field_validator("rules")
    @classmethod
    def _unique_names(cls, rules: list[RuleConfig]) -> list[RuleConfig]:
        require_unique((r.name for r in rules), "rule names")
        return rules
