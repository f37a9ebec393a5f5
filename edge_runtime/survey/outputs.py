"""The run's files in DIR: findings.geojson, findings.csv and predictions.json.

GeoJSON holds a Point per finding ([lon, lat]) and, so that covered ground shows, a
Point per image or frame with no finding (its `tagName` is null).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from .records import UnitRecord

CSV_COLUMNS = ("image", "tagName", "probability", "lat", "lon", "position", "time", "tile",
               "left", "top", "width", "height")


def finding_rows(units: list[UnitRecord]) -> list[dict[str, Any]]:
    """Every finding as a flat row, highest probability first."""
    rows: list[dict[str, Any]] = []
    for unit in units:
        for f in unit.findings:
            rows.append({"image": unit.name, "tagName": f.tagName, "probability": round(f.probability, 6),
                         "lat": round(f.lat, 8), "lon": round(f.lon, 8), "position": f.position,
                         "time": unit.time, "tile": f.tile, "boundingBox": f.boundingBox})
    rows.sort(key=lambda r: (-r["probability"], r["image"]))
    return rows


def geojson(units: list[UnitRecord]) -> dict[str, Any]:
    features = []
    for row in finding_rows(units):
        props = {k: v for k, v in row.items() if k not in ("lat", "lon")}
        features.append({"type": "Feature", "geometry": {"type": "Point", "coordinates": [row["lon"], row["lat"]]},
                         "properties": props})
    for unit in units:
        if not unit.findings:
            features.append({
                "type": "Feature",
                "geometry": {"type": "Point", "coordinates": [round(unit.lon, 8), round(unit.lat, 8)]},
                "properties": {"tagName": None, "probability": None, "image": unit.name, "boundingBox": None,
                               "time": unit.time, "position": "image", "tile": None},
            })
    return {"type": "FeatureCollection", "features": features}


def write_outputs(out_dir: Path, units: list[UnitRecord]) -> None:
    # allow_nan=False: every number was checked where it entered (checks.py); one that slips
    # through stops the run instead of writing a file that is not JSON.
    (out_dir / "findings.geojson").write_text(json.dumps(geojson(units), indent=1, allow_nan=False))
    with (out_dir / "findings.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(CSV_COLUMNS)
        for row in finding_rows(units):
            box = row["boundingBox"]
            writer.writerow([row["image"], row["tagName"], row["probability"], row["lat"], row["lon"],
                             row["position"], row["time"] or "", row["tile"],
                             box["left"], box["top"], box["width"], box["height"]])
    predictions = {unit.name: unit.prediction for unit in units}
    (out_dir / "predictions.json").write_text(json.dumps(predictions, indent=1, allow_nan=False))
