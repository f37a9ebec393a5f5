"""A model store with one real classifier trained by `edge-export train`, and the labelled
folder pair a candidate is trained from: what the retrain tests and benchmark share."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import httpx

from edge_runtime.config import load_settings
from edge_runtime.publish.store import ModelStore
from edge_runtime.serve import build_services
from edge_runtime.server import create_app
from tests.datasets import noise_dataset

TOKEN = "retrain-token-0123456789"
BEARER = {"Authorization": f"Bearer {TOKEN}"}
NEW_TAGS = ("red", "green", "blue")  # blue: a tag the active version does not know


def base_bundle(root: Path, per_tag: int = 6) -> Path:
    """v1: red and green, trained by the real local trainer in a child."""
    noise_dataset(root / "base", per_tag)
    subprocess.run([sys.executable, "-m", "exporter.cli", "train", str(root / "base"), "--project", "shelf",
                    "--out", str(root / "bundles"), "--no-progress"], check=True, capture_output=True, timeout=300)
    return root / "bundles" / "shelf" / "v1"


def labelled_pair(root: Path, train: int = 8, held_out: int = 3, tags: tuple[str, ...] = NEW_TAGS) -> Path:
    noise_dataset(root / "train", train, tags)
    noise_dataset(root / "held_out", held_out, tags)
    return root


def store_with(bundle: Path, root: Path, labelled: Path | None = None) -> Path:
    """A store with `bundle` published as shelf v1, and the labelled pair where the server's
    candidates read it (STORE/shelf/labelled)."""
    ModelStore.open(root).publish(bundle, "shelf")
    if labelled is not None:
        shutil.copytree(labelled, root / "shelf" / "labelled")
    return root


def app_over(store: Path, **models: object):  # type: ignore[no-untyped-def]
    settings = load_settings(env={}, overrides={
        "models": {"path": str(store), "probation_s": 60, **models},
        "events": {"store": {"path": str(store.parent / "events")}}})
    svc = build_services(settings, env={"EDGE_RUNTIME_TOKEN": TOKEN})
    return create_app(svc), svc


def candidate(url: str, job_id: str) -> dict:  # type: ignore[type-arg]
    r = httpx.get(f"{url}/api/models/shelf/candidates/{job_id}", headers=BEARER, timeout=10)
    assert r.status_code == 200, r.text
    body: dict = r.json()  # type: ignore[type-arg]
    return body
