"""Bundles are readable by every user, and an unreadable one is a one-line error.

The systemd unit runs edge-runtime as its own (dynamic) user, so a bundle trained by
someone else must be world-readable. As root, the "other user" is simulated by chowning
the files away and dropping root's file-access override with setpriv.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from exporter.package import write_bundle
from tests import models

NOBODY = 65534


def as_another_user(cmd: list[str]) -> list[str]:
    if os.geteuid() != 0:
        return cmd
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("as root, setpriv is needed to drop the file-access override")
    return [setpriv, "--bounding-set=-dac_override,-dac_read_search", *cmd]


def give_away(path: Path) -> None:
    """Owned by another user where we can (root); otherwise the mode bits alone decide."""
    if os.geteuid() == 0:
        for current, _, files in os.walk(path):
            os.chown(current, NOBODY, NOBODY)
            for f in files:
                os.chown(os.path.join(current, f), NOBODY, NOBODY)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture()
def bundle(tmp_path) -> Path:
    folder = models.write_export(tmp_path / "export", models.color_classifier(), models.COLOR_TAGS)
    old = os.umask(0o077)  # the strictest usual umask: nothing for group and others
    try:
        target, _ = write_bundle(tmp_path / "out" / "bundles", "colors", folder, {})
    finally:
        os.umask(old)
    return target


@pytest.fixture()
def image(tmp_path) -> Path:
    path = tmp_path / "red.png"
    cv2.imwrite(str(path), np.full((32, 32, 3), (0, 0, 255), np.uint8))
    path.chmod(0o644)
    return path


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(as_another_user([sys.executable, "-m", *args]), capture_output=True, text=True,
                          timeout=120)


def test_a_bundle_is_world_readable_whatever_the_umask(bundle, tmp_path):
    assert mode(bundle) == 0o755
    files = {p.name: mode(p) for p in bundle.iterdir()}
    assert {"model.onnx", "labels.txt", "cvexport.manifest", "bundle.json"} <= set(files)
    assert set(files.values()) == {0o644}
    assert mode(bundle.parent) == 0o755 and mode(tmp_path / "out" / "bundles") == 0o755  # created here
    assert mode(tmp_path / "out") == 0o755


def test_another_user_can_serve_a_bundle_trained_by_someone_else(bundle, image):
    give_away(bundle.parent.parent)
    proc = run("edge_runtime.cli", "predict", str(bundle), str(image), "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"tagName": "red"' in proc.stdout


@pytest.mark.parametrize("cli", ["edge_runtime.cli", "exporter.cli"])
@pytest.mark.parametrize("locked", ["folder", "model"])
def test_an_unreadable_bundle_is_a_one_line_error(bundle, image, cli, locked):
    give_away(bundle.parent.parent)
    if locked == "folder":
        bundle.chmod(0o700)  # what mkdtemp used to leave
    else:
        (bundle / "model.onnx").chmod(0o600)
    args = ["predict", str(bundle), str(image)] if cli == "edge_runtime.cli" else ["verify", str(bundle)]
    proc = run(cli, *args)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert "permission denied" in proc.stderr.lower() and str(bundle) in proc.stderr
