"""A model store with one real classifier trained by `edge-export train`, and labelled frames
in a real event store, where a candidate's dataset comes from (export_dataset): what the
retrain tests and benchmark share. `labelled_pair` is a folder pair for `--dataset DIR`."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path

import cv2
import httpx
import numpy as np

from edge_runtime.config import load_settings
from edge_runtime.events.records import Budget
from edge_runtime.events.store import EventStore
from edge_runtime.publish.store import ModelStore
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.datasets import noise_dataset

TOKEN = "retrain-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NEW_TAGS = ("red", "green", "blue")  # blue: a tag the active version does not know
CHANNEL = {"red": 2, "green": 1, "blue": 0}  # BGR: the channel a tag's noise frames have at full
T0 = 1_790_000_000.0
RNG = np.random.default_rng(23)


def base_bundle(root: Path, per_tag: int = 6) -> Path:
    """v1: red and green, trained by the real local trainer in a child (its images in ROOT/base)."""
    noise_dataset(root / "base", per_tag)
    subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(root / "base"), "--project", "shelf",
                    "--out", str(root / "bundles"), "--no-progress"], check=True, capture_output=True, timeout=300)
    return root / "bundles" / "shelf" / "v1"


def labelled_pair(root: Path, train: int = 8, held_out: int = 3, tags: tuple[str, ...] = NEW_TAGS) -> Path:
    noise_dataset(root / "train", train, tags)
    noise_dataset(root / "held_out", held_out, tags)
    return root


def store_with(bundle: Path, root: Path, base: Path | None = None) -> Path:
    """A store with `bundle` published as shelf v1, and `base` as its base dataset
    (STORE/shelf/dataset/, merged into every candidate's training set)."""
    ModelStore.open(root).publish(bundle, "shelf")
    if base is not None:
        shutil.copytree(base, root / "shelf" / "dataset")
    return root


def noise_jpeg(tag: str, size: tuple[int, int] = (32, 24)) -> bytes:
    """A frame of `tag`: noise with the tag's colour channel at full."""
    width, height = size
    image = RNG.integers(0, 256, (height, width, 3), dtype=np.uint8)
    image[..., CHANNEL[tag]] = 255
    return cv2.imencode(".jpg", image, [cv2.IMWRITE_JPEG_QUALITY, 95])[1].tobytes()


def keep_frames(events: EventStore, count: int, tags: Sequence[str] = NEW_TAGS, camera: str = "cam",
                start: float = T0) -> list[tuple[str, str]]:
    """(sample id, tag) of `count` frames kept as samples, the tags taking turns."""
    kept = []
    for i in range(count):
        tag = tags[i % len(tags)]
        sample_id = events.add_sample("manual", camera, start + i, noise_jpeg(tag), {"predictions": []})
        assert sample_id is not None, "the event store refused a sample"
        kept.append((sample_id, tag))
    return kept


def label_in_store(path: Path, count: int = 33, tags: Sequence[str] = NEW_TAGS, model: str = "shelf",
                   start: float = T0) -> list[tuple[str, str]]:
    """Frames kept and labelled through the event store's own API at PATH (made if need be),
    saved in turn so the newest labels are of every tag: (sample id, tag) of each."""
    events = EventStore.open(path, Budget(min_free_bytes=0))
    try:
        kept = keep_frames(events, count, tags, start=start)
        for n, (sample_id, tag) in enumerate(kept):
            events.save_label(sample_id, model, "classification", [tag], now=start + n)
        return kept
    finally:
        events.close()


def label_through_routes(url: str, events: EventStore, count: int = 33, tags: Sequence[str] = NEW_TAGS,
                         model: str = "shelf") -> list[tuple[str, str]]:
    """Frames kept in a running server's store, each labelled by PUT /api/label/items/{id}/labels/{model}."""
    kept = keep_frames(events, count, tags)
    with httpx.Client(base_url=url, headers=BEARER, timeout=30) as http:
        for sample_id, tag in kept:
            r = http.put(f"/api/label/items/{sample_id}/labels/{model}", json={"revision": 0, "tags": [tag]})
            assert r.status_code == 200, r.text
    return kept


def app_over(store: Path, **models: object):  # type: ignore[no-untyped-def]
    """The real app over the model store; its event store is STORE/../events."""
    settings = load_settings(env={}, overrides={
        "models": {"path": str(store), "probation_s": 60, **models},
        "events": {"store": {"path": str(store.parent / "events"), "min_free_mb": 0}}})
    svc = build_services(settings, env={"EDGE_RUNTIME_TOKEN": TOKEN})
    return create_app(svc), svc


def candidate(url: str, job_id: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{url}/api/models/shelf/candidates/{job_id}", headers=BEARER, timeout=10)
    assert r.status_code == 200, r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body
