"""report.html: one offline file (data, thumbnails and code inline; no network reference).

The template (report.html beside this module) draws the map in SVG from the JSON placed
in it; thumbnails are the annotated copies, shrunk and inlined as data: URIs.
"""

from __future__ import annotations

import base64
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import cv2

from .records import BadRecord, NoteRecord, UnitRecord

TEMPLATE = Path(__file__).with_name("report.html")
PLACEHOLDER = "/*SURVEY_DATA*/null"
THUMB_WIDTH = 480


def thumbnail(path: Path) -> str | None:
    """A data: URI of a small JPEG copy of `path`, or None when it cannot be read."""
    image = cv2.imread(str(path))
    if image is None:
        return None
    h, w = image.shape[:2]
    if w > THUMB_WIDTH:
        image = cv2.resize(image, (THUMB_WIDTH, max(1, round(h * THUMB_WIDTH / w))), interpolation=cv2.INTER_AREA)
    ok, data = cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 70])
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode() if ok else None


def report_data(out_dir: Path, units: list[UnitRecord], bad: list[BadRecord],
                settings: dict[str, Any], notes: list[NoteRecord] | None = None) -> dict[str, Any]:
    images = []
    for unit in units:
        images.append({
            "name": unit.name, "lat": unit.lat, "lon": unit.lon, "time": unit.time,
            "thumb": thumbnail(out_dir / unit.annotated) if unit.annotated else None,
            "findings": [asdict(f) for f in unit.findings],
        })
    return {"settings": settings, "images": images, "bad": [asdict(b) for b in bad],
            "notes": [{"input": n.input, "reason": n.reason} for n in notes or []]}


def render(data: dict[str, Any]) -> str:
    # "</" inside a script element would end it early; JSON allows the escaped form.
    # allow_nan=False: a NaN would make the page's JSON.parse fail and the report blank.
    payload = json.dumps(data, allow_nan=False).replace("</", "<\\/")
    return TEMPLATE.read_text(encoding="utf-8").replace(PLACEHOLDER, payload)


def write_report(out_dir: Path, units: list[UnitRecord], bad: list[BadRecord], settings: dict[str, Any],
                 notes: list[NoteRecord] | None = None) -> Path:
    path = out_dir / "report.html"
    path.write_text(render(report_data(out_dir, units, bad, settings, notes)), encoding="utf-8")
    return path
