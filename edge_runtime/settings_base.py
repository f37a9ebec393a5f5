"""The base of every settings model: unknown keys fail loudly, values never change; and the
one prefix of the runtime's environment variables."""

from __future__ import annotations

from collections.abc import Iterable

from pydantic import BaseModel, ConfigDict

ENV_PREFIX = "EDGE_RUNTIME_"  # EDGE_RUNTIME_<SECTION>__<KEY>, read by config.load_settings


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def require_unique(keys: Iterable[str], what: str, hint: str = "") -> None:
    """ValueError naming the repeated keys, e.g. "camera ids must be unique: door"."""
    keys = list(keys)
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"{what} must be unique{hint}: {', '.join(duplicates)}")
