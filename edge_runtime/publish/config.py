"""The model store's settings (the `models:` section)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AfterValidator, Field, field_validator

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

URL_SCHEMES = ("http", "https")


def _store_name(value: str) -> str:
    if not NAME.fullmatch(value):
        raise ValueError("use 1 to 64 letters, digits, '_', '-' or '.', starting with a letter or digit")
    return value


StoreName = Annotated[str, AfterValidator(_store_name)]  # a published name or project id (store.NAME)


class SourceConfig(Strict):
    """One URL the device polls for the newest model (edge_runtime/publish/pull.py)."""

    url: str = Field(description="http(s) URL of a small JSON description of the newest model: name, version, "
                     "sha256, size, url, and optionally signatureUrl and project")
    name: StoreName | None = Field(None, description="publish under this name, whatever the description says")
    project: StoreName | None = Field(None, description="the project id the model answers for, whatever the "
                                "description says")
    interval_s: float = Field(300, ge=10, le=7 * 86400, description="seconds between polls (each one up to 10 per "
                              "cent sooner or later at random, so a fleet does not poll at once)")
    timeout_s: float = Field(30, gt=0, le=3600, description="the deadline of each request, connecting and the "
                             "whole answer; a download cut by it resumes where it stopped")
    headers_file: Path | None = Field(None, description="a file of 'Header: value' lines sent with every request "
                                      "of this source (an Authorization header, say); a secret, never logged")

    @field_validator("url")
    @classmethod
    def _http_only(cls, url: str) -> str:
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() not in URL_SCHEMES or not rest.split("/", 1)[0]:
            raise ValueError("must be an http:// or https:// URL with a host")
        return url



class RetrainConfig(Strict):
    """Candidates trained on the device (`edge-runtime retrain`, the Train page; publish/retrain.py)."""

    timeout_s: float = Field(3600.0, gt=0, le=7 * 86400, description="the deadline of one training and its "
                             "comparison together; the child is killed after it")
    max_mb: int = Field(2048, ge=1, le=1 << 20, description="the disk budget of one candidate: its copy of the "
                        "dataset, and each file its training writes; this much must be free on the store's disk "
                        "to start")
    max_output_kb: int = Field(1024, ge=16, le=1 << 20, description="what the training may write on stdout and "
                               "stderr together; more, and it is stopped")
    nice: int = Field(10, ge=0, le=19, description="niceness added to the training's process (the cameras come "
                      "first); its disk I/O is in the idle class where ionice is installed")
    held_out: float = Field(0.2, gt=0, lt=1, description="the newest share of the labels kept out of training "
                            "to compare the candidate and the active version on")
    keep: int = Field(10, ge=1, le=1000, description="records of finished candidates kept (promoted, discarded, "
                      "failed); their files are removed as they finish")


class ModelsConfig(Strict):
    path: Path = Field(default_factory=default_models_dir, description="the model store: published models by "
                       "name, each with its versions (edge_runtime/publish/store.py)")
    keep: int = Field(3, ge=2, le=100, description="versions kept on disk per name; the active and the previous "
                      "one are never removed")
    max_mb: int | None = Field(4096, ge=1, description="the store's disk budget: older versions beyond the active and "
                               "the previous one are removed, oldest first, to stay under it; null: keep only")
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
    retrain: RetrainConfig = Field(default_factory=RetrainConfig, description="training candidates on the "
                                   "device")
    options: dict[str, ModelOptions] = Field(default_factory=dict, description="thresholds and limits per published "
                                             "name (model.* for the others)")

    @field_validator("options")
    @classmethod
    def _names(cls, options: dict[str, ModelOptions]) -> dict[str, ModelOptions]:
        for name in options:
            if not NAME.fullmatch(name):
                raise ValueError(f"{name!r} is not a published name")
        return options
    sources: list[SourceConfig] = Field(default_factory=list, description="URLs polled for new models; each "
                                        "download is verified (size, SHA-256) before it is published")
    max_download_mb: int = Field(512, ge=1, le=65536, description="the largest model a source or the module twin "
                                 "may download, in MB")
    iot_edge: bool = Field(False, description="take model updates from the Azure IoT Edge module twin's desired "
                           "property edgeRuntimeModels (needs the iotedge extra)")
    public_key: Path | None = Field(None, description="a PEM elliptic-curve public key (edge-export keygen): when "
                                    "set, every update pulled, dropped in the watched folder or PUT must carry a "
                                    "valid signature by its private key (docs/publish.md)")
    incoming: Path | None = Field(None, description="a watched folder: an export zip dropped there (with its "
                                  ".zip.sig) is published under the name in its bundle.json, else its file name "
                                  "(edge_runtime/publish/incoming.py)")
    incoming_poll_s: float = Field(2.0, gt=0, le=3600, description="how often models.incoming is scanned; a zip "
                                   "is taken once its size and time stayed the same this long")


def store_bytes(models: ModelsConfig) -> int | None:
    return models.max_mb << 20 if models.max_mb is not None else None
