"""The model store's settings (the `models:` section)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator

from ..paths import state_dir
from ..settings_base import Strict


def default_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """models/ in the service's state folder under systemd (beside the events store), else ./models."""
    state = state_dir(env)
    return state / "models" if state is not None else Path("models")


NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")  # a published name (store.py checks the same)


class ModelOptions(Strict):
    """What one published model's results report, over model.*."""

    threshold: float | None = Field(None, ge=0, le=1, description="lowest probability reported")
    top_k: int | None = Field(None, ge=1, le=100_000, description="at most this many predictions per image")
    max_detections: int | None = Field(None, ge=1, le=1000, description="detection only: at most this many boxes")


class ModelsConfig(Strict):
    path: Path = Field(default_factory=default_models_dir, description="the model store: published models by "
                       "name, each with its versions (edge_runtime/publish/store.py)")
    keep: int = Field(3, ge=2, le=100, description="versions kept on disk per name; the active and the previous "
                      "one are never removed")
    swap: Literal["beside", "unload-first"] = Field("beside", description="beside: a new version is loaded and "
                                                    "verified while the old one serves; unload-first: the old one is "
                                                    "unloaded first (a board that cannot hold two), requests wait")
    probation_s: float = Field(300.0, ge=0, le=86400, description="a new version that fails runs or gives outputs "
                               "that are not finite this soon after its swap is rolled back by itself")
    eval_margin: float = Field(0.02, ge=0, le=1, description="with a labelled folder (NAME/eval/ in the store, or "
                               "publish --eval), a new version's top-1 accuracy may be this much below the active's")
    max_upload_mb: int = Field(512, ge=1, le=8192, description="PUT /api/models: the largest export accepted")
    upload_timeout_s: float = Field(1800.0, gt=0, le=86400, description="PUT /api/models: the whole upload must "
                                    "arrive within this (a slow link takes minutes)")
    options: dict[str, ModelOptions] = Field(default_factory=dict, description="thresholds and limits per published "
                                             "name (model.* for the others)")

    @field_validator("options")
    @classmethod
    def _names(cls, options: dict[str, ModelOptions]) -> dict[str, ModelOptions]:
        for name in options:
            if not NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a published name")
        return options
