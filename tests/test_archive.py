"""safe_extract's second line of defence: the bytes actually written are counted."""

from __future__ import annotations

import io
import zipfile

import pytest

from edge_runtime.errors import UnsafeArchiveError
from edge_runtime.model.archive import safe_extract


def test_bytes_beyond_the_declared_sizes_are_counted_and_refused(tmp_path, monkeypatch):
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\0" * 1000)
        zf.writestr("labels.txt", b"a\nb\n")
    # CPython's reader stops at the declared size; a reader (or a zip) that does not must
    # still be stopped, so the member's stream here yields far more than its header says.
    real_open = zipfile.ZipFile.open

    def lying_open(self, name, *args, **kwargs):  # type: ignore[no-untyped-def]
        member = name.filename if isinstance(name, zipfile.ZipInfo) else name
        if member == "model.onnx":
            return io.BytesIO(b"\0" * 5_000_000)
        return real_open(self, name, *args, **kwargs)

    monkeypatch.setattr(zipfile.ZipFile, "open", lying_open)
    with pytest.raises(UnsafeArchiveError, match="unpacks to more than 1000000 bytes"):
        safe_extract(path, tmp_path / "out", max_total_bytes=1_000_000)
    written = tmp_path / "out" / "model.onnx"
    assert not written.exists() or written.stat().st_size <= 1_000_000  # stopped at the limit, not after


def test_an_honest_zip_within_the_limit_is_extracted(tmp_path):
    path = tmp_path / "export.zip"
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("model.onnx", b"\1" * 1000)
    safe_extract(path, tmp_path / "out", max_total_bytes=1000)
    assert (tmp_path / "out" / "model.onnx").read_bytes() == b"\1" * 1000
