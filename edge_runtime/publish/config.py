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
    public_key: Path | None = Field(None, description="a PEM elliptic-curve public key (edge-export keygen): when "
                                    "set, every update pulled, dropped in the watched folder or PUT must carry a "
                                    "valid signature by its private key (docs/publish.md)")
