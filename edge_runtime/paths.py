"""Where the package's own files are: the built-in demo export and its sample photographs."""

from __future__ import annotations

from pathlib import Path

DEMO_MODEL = Path(__file__).resolve().parent / "demo"
DEMO_SAMPLES = DEMO_MODEL / "samples"
