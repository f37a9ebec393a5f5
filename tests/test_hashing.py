"""The SHA-1 helper that the runtime checks manifests with and the exporter records in bundle.json."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from edge_runtime.model.hashing import CHUNK, TooLarge, file_sha1
from exporter.package import write_bundle
from tests import models


def test_file_sha1_reads_in_chunks_and_matches_hashlib(tmp_path):
    data = np.random.default_rng(5).integers(0, 256, 2 * CHUNK + 123, dtype=np.uint8).tobytes()
    path = tmp_path / "blob"
    path.write_bytes(data)
    assert file_sha1(path) == hashlib.sha1(data).hexdigest()
    (tmp_path / "empty").write_bytes(b"")
    assert file_sha1(tmp_path / "empty") == hashlib.sha1(b"").hexdigest()


def test_bundle_hashes_are_what_the_runtime_checks(tmp_path):
    model = models.color_classifier()
    folder = models.write_export(tmp_path / "export", model, models.COLOR_TAGS)
    bundle, _ = write_bundle(tmp_path / "out", "colors", folder, {})
    files = json.loads((bundle / "bundle.json").read_text())["files"]
    assert files["model.onnx"] == hashlib.sha1(model).hexdigest()
    assert files == {name: file_sha1(bundle / name) for name in files}


def test_a_cap_stops_the_hash_once_the_file_is_longer(tmp_path):
    path = tmp_path / "model.onnx"
    path.write_bytes(b"x" * (CHUNK + 10))
    assert file_sha1(path, max_bytes=CHUNK + 10) == hashlib.sha1(path.read_bytes()).hexdigest()
    with pytest.raises(TooLarge, match="larger than"):
        file_sha1(path, max_bytes=CHUNK + 9)
    with pytest.raises(TooLarge):  # an endless device stops at the cap
        file_sha1(Path("/dev/zero"), max_bytes=3 * CHUNK)
