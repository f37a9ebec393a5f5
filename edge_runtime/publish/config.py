"""The model store's settings (the `models:` section)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from pydantic import Field

from ..paths import state_dir
from ..settings_base import Strict


def default_models_dir(env: Mapping[str, str] | None = None) -> Path:
    """models/ in the service's state folder under systemd (beside the events store), else ./models."""
    state = state_dir(env)
    return state / "models" if state is not None else Path("models")


class ModelsConfig(Strict):
    path: Path = Field(default_factory=default_models_dir, description="the model store: published models by "
                       "name, each with its versions (edge_runtime/publish/store.py)")
    keep: int = Field(3, ge=2, le=100, description="versions kept on disk per name; the active and the previous "
                      "one are never removed")
    incoming: Path | None = Field(None, description="a watched folder: an export zip dropped there (with its "
                                  ".zip.sig) is published under the name in its bundle.json, else its file name "
                                  "(edge_runtime/publish/incoming.py)")
    incoming_poll_s: float = Field(2.0, gt=0, le=3600, description="how often models.incoming is scanned; a zip "
                                   "is taken once its size and time stayed the same this long")
