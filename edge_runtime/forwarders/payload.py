"""What a forwarder sends: the outbox item's JSON plus its type, and optionally the thumbnail.

    {"type": "event-end", "id": "01J...", "rule": "kiosk", "camera": "door", "tag": "cola", ...,
     "thumbnailJpeg": "<base64>"}

The fields are documented by docs/event-payload.schema.json, and those of model changes
(type "model-change", versioned by their `schemaVersion`) by docs/model-change.schema.json.
Receivers deduplicate on (`id`, `type`): an event's start and end share the id.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .protocols import Item, Outbox

EVENT_KINDS = ("event-start", "event-end")  # the kinds that have a thumbnail
MODEL_CHANGE = "model-change"  # the events store's model_changes.KIND


def build(item: Item, thumbnail: Path | None = None) -> dict[str, Any]:
    body = dict(item.payload)
    body["type"] = item.kind
    body.setdefault("id", item.event_id)
    if thumbnail is not None:
        with contextlib.suppress(OSError):  # removed by retention since: the event goes without it
            body["thumbnailJpeg"] = base64.b64encode(thumbnail.read_bytes()).decode("ascii")
    return body


def captured(item: Item) -> float:
    """When a result's frame was captured (seconds since the epoch); when it was queued if unknown."""
    text = item.payload.get("captured")
    if isinstance(text, str):
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    return item.created


def encode(body: dict[str, Any]) -> bytes:
    return json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode()


def idempotency_key(item: Item) -> str:
    return f"{item.event_id}:{item.kind}"


def thumbnail_path(outbox: Outbox, item: Item) -> Path | None:
    """The event's thumbnail on disk, if the store has one; results and model changes have none."""
    if item.kind not in EVENT_KINDS:
        return None
    return outbox.thumbnail_path(item.event_id)
