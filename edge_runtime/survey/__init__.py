"""`edge-runtime survey`: tiled detection on drone photos and videos, geotagged, with a report.

    tiling.py    pure: where the tiles go, and the merge of boxes across them
    tiled.py     a Predictor run over tiles (one batch per image where the model allows)
    checks.py    the bounds every position, height, angle and time is checked against
    geo.py       EXIF GPS and DJI XMP, and the projection of a pixel to the ground
    telemetry.py DJI SRT, GPX and CSV tracks, interpolated per video frame
    inputs.py    the files to read, and video frames sampled every N seconds
    records.py   the journal in the output folder that makes --resume work
    outputs.py   findings.geojson, findings.csv, predictions.json
    report.py    the offline report.html (template: report.html)
    run.py       the orchestration: decoding on worker threads overlaps inference

Needs the `survey` extra (Pillow reads EXIF, which OpenCV does not expose; tqdm draws
the progress bar).
"""

from __future__ import annotations

import importlib

from ..errors import ConfigError


def require() -> None:
    """ConfigError in one line when the `survey` extra is not installed."""
    missing = []
    for name, module in (("pillow", "PIL.Image"), ("tqdm", "tqdm")):
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(name)
    if missing:
        raise ConfigError(f"survey needs {' and '.join(missing)}: pip install 'edge-runtime[survey]'")
