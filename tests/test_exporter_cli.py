"""`edge-export` at its boundary: version, what a dataset is, one-line errors."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from edge_runtime import __version__


def edge_export(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "exporter.cli", *args], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    return proc.stderr.strip()


def test_version():
    proc = edge_export("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"edge-export {__version__}"


def test_check_on_a_file_says_what_a_dataset_is(tmp_path):
    image = tmp_path / "photo.jpg"
    cv2.imwrite(str(image), np.zeros((8, 8, 3), np.uint8))
    error = one_line_error(edge_export("check", str(image)))
    assert "photo.jpg is a file, not a dataset" in error and "one sub-folder of images per tag" in error
    assert "utf-8" not in error.lower()


def test_a_label_file_that_is_not_text_says_what_a_dataset_is(tmp_path):
    (tmp_path / "labels.csv").write_bytes(b"\xff\xd8\xff\xe0" + bytes(range(256)))
    error = one_line_error(edge_export("check", str(tmp_path / "labels.csv")))
    assert "labels.csv: not UTF-8 text" in error and "a dataset is a folder" in error


def test_a_missing_or_empty_folder_says_what_a_dataset_is(tmp_path):
    assert "a dataset is a folder" in one_line_error(edge_export("check", str(tmp_path / "nope")))
    assert "no tag folders or label file found" in one_line_error(edge_export("check", str(tmp_path)))
