"""Check that an export is complete and loads: the last step before a bundle is declared good."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge_runtime.model.predictor import Predictor


@dataclass(frozen=True)
class Verified:
    path: Path
    variant: str
    tags: int
    sha1_checked: bool
    providers: tuple[str, ...]


def verify_export(path: Path) -> Verified:
    """Open the export with the runtime's own loader (SHA-1, labels, metadata) and run it once.

    Raises the runtime's EdgeRuntimeError subclasses on any problem.
    """
    predictor = Predictor.load(path, warm_up=True)
    return Verified(
        path=path,
        variant=predictor.spec.variant.value,
        tags=len(predictor.spec.labels or ()),
        sha1_checked=bool(predictor.bundle.manifest.get("ModelFileSHA1")),
        providers=tuple(predictor.model.providers),
    )
